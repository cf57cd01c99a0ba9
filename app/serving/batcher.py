"""Micro-batching: concurrent requests for one model share one forward pass."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from app.ml.predict import Classifier


class MicroBatcher:
    """Concurrent requests for one model share one forward pass.

    A batch runs as soon as the inference thread is free. It waits (at most max_wait_s
    after its first item, up to max_batch items) only while other requests for the same
    model are still being decoded, so a lone request is never delayed.
    """

    def __init__(self, *, executor: ThreadPoolExecutor, max_batch: int, max_wait_s: float):
        self.executor = executor
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.incoming = 0
        self.forward_passes = 0
        self.items = 0
        self._queue: list[tuple[Classifier, np.ndarray, asyncio.Future]] = []
        self._arrived: asyncio.Event | None = None
        self._drain: asyncio.Task | None = None

    async def submit(self, classifier: Classifier, inputs: np.ndarray) -> np.ndarray:
        """Probabilities for `inputs` (N x C x H x W), computed in a shared batch."""
        future = asyncio.get_running_loop().create_future()
        self._queue.append((classifier, inputs, future))
        if self._arrived is None:
            self._arrived = asyncio.Event()
        self._arrived.set()
        if self._drain is None or self._drain.done():
            self._drain = asyncio.create_task(self._run())
        return await future

    def _queued_rows(self) -> int:
        return sum(len(inputs) for _, inputs, _ in self._queue)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            deadline = loop.time() + self.max_wait_s
            while self.incoming > 0 and self._queued_rows() < self.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    break
            taken, rows = [], 0
            while self._queue and (not taken or rows + len(self._queue[0][1]) <= self.max_batch):
                item = self._queue.pop(0)
                taken.append(item)
                rows += len(item[1])
            classifier = taken[0][0]
            batch = np.concatenate([inputs for _, inputs, _ in taken])
            try:
                probs = await loop.run_in_executor(self.executor, classifier.forward, batch)
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
                    future.set_result(probs[start:start + len(inputs)])
                start += len(inputs)
