import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from app.ml.images import decode_rgb
from app.serving.batcher import MicroBatcher


@pytest.fixture(scope="module")
def classifier(bear_model):
    from app.ml.predict import Classifier

    return Classifier.load(bear_model[0], threads=1)


@pytest.fixture(scope="module")
def inputs(classifier, data_dir):
    paths = sorted((data_dir / "bears" / "grizzly").glob("*.jpg"))[:12]
    return [classifier.prepare([decode_rgb(p.read_bytes(), draft_size=256)]) for p in paths]


def run(coroutine):
    # a thread of its own: Playwright's sync API may own this thread's event loop
    with ThreadPoolExecutor(1) as runner:
        return runner.submit(asyncio.run, coroutine).result()


class SlowForward:
    """The classifier with a forward pass that takes at least `seconds`, recording its rows."""

    def __init__(self, classifier, seconds: float) -> None:
        self.classifier, self.seconds, self.rows = classifier, seconds, []

    def forward(self, batch):
        self.rows.append(len(batch))
        time.sleep(self.seconds)
        return self.classifier.forward(batch)


def test_requests_that_arrive_during_a_pass_share_the_next_and_none_waits(classifier,
                                                                          inputs):
    expected = classifier.forward(np.concatenate(inputs))
    slow = SlowForward(classifier, 0.2)

    async def scenario():
        with ThreadPoolExecutor(1) as executor:
            batcher = MicroBatcher(executor=executor, max_batch=8)
            first = asyncio.create_task(batcher.submit(slow, inputs[0]))
            await asyncio.sleep(0.05)  # the first pass is running: the others queue
            rest = [asyncio.create_task(batcher.submit(slow, x)) for x in inputs[1:]]
            results = [await first] + [await task for task in rest]
            assert batcher.idle()
            await batcher.submit(slow, inputs[0])  # idle again: a pass of its own
            return results, batcher.forward_passes

    results, passes = run(scenario())
    assert slow.rows == [1, 8, 3, 1]  # at once, then the queue in batches of at most 8
    assert passes == 4
    assert np.abs(np.concatenate(results) - expected).max() < 1e-5


def test_a_failing_pass_fails_its_requests_and_the_next_pass_runs(classifier, inputs):
    class Failing:
        def forward(self, batch):
            raise RuntimeError("broken graph")

    async def scenario():
        with ThreadPoolExecutor(1) as executor:
            batcher = MicroBatcher(executor=executor, max_batch=8)
            failed = await asyncio.gather(batcher.submit(Failing(), inputs[0]),
                                          return_exceptions=True)
            return failed, await batcher.submit(classifier, inputs[1])

    [failed], answer = run(scenario())
    assert isinstance(failed, RuntimeError) and "broken graph" in str(failed)
    assert np.abs(answer - classifier.forward(inputs[1])).max() < 1e-5
