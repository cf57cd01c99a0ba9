"""Micro-batching: concurrent requests for one model share one trip to the inference thread."""

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from app.ml.predict import Classifier

T = TypeVar("T")


class MicroBatcher:
    """Concurrent requests for one model share one trip to the inference thread.

    A batch runs as soon as the inference thread is free, never waiting for more requests:
    what arrives while a pass runs (up to max_batch rows) goes in the next one. Waiting buys
    nothing on a CPU, where ONNX Runtime's time per image does not fall with the batch size
    (it rises past 2 rows here; `Classifier` runs larger batches in slices), and it leaves the
    inference thread idle while requests are queued.
    """

    def __init__(self, *, executor: ThreadPoolExecutor, max_batch: int):
        self.executor = executor
        self.max_batch = max_batch
        self.forward_passes = 0
        self.items = 0
        self._queue: list[tuple[Classifier, np.ndarray, asyncio.Future]] = []
        self._drain: asyncio.Task | None = None
        self._alone = 0  # passes of run_alone under way

    def idle(self) -> bool:
        """Nothing queued and no pass of this batcher running."""
        return not self._queue and not self._alone and (self._drain is None
                                                         or self._drain.done())

    async def run_alone(self, fn: Callable[[], T]) -> T:
        """`fn` (which decodes and runs a forward pass) on the inference thread, as a pass of
        its own: when the batcher is idle a request needs one trip to a thread, not two.
        Requests arriving meanwhile queue for the next pass as usual."""
        self._alone += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, fn)
        finally:
            self._alone -= 1
            self.forward_passes += 1

    async def submit(self, classifier: Classifier, inputs: np.ndarray) -> np.ndarray:
        """forward's rows for `inputs` (N x C x H x W), computed in a shared batch."""
        future = asyncio.get_running_loop().create_future()
        self._queue.append((classifier, inputs, future))
        if self._drain is None or self._drain.done():
            self._drain = asyncio.create_task(self._run())
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            taken, rows = [], 0
            while self._queue and (not taken or rows + len(self._queue[0][1]) <= self.max_batch):
                item = self._queue.pop(0)
                taken.append(item)
                rows += len(item[1])
            classifier = taken[0][0]
            batch = taken[0][1] if len(taken) == 1 else np.concatenate(
                [inputs for _, inputs, _ in taken])
            try:
                out = await loop.run_in_executor(self.executor, classifier.forward, batch)
            except Exception as exc:  # hand the failure to every waiting request
                for _, _, future in taken:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.forward_passes += 1
            self.items += len(batch)
            start = 0
            for _, inputs, future in taken:
                if not future.done():
                    future.set_result(out[start:start + len(inputs)])
                start += len(inputs)
