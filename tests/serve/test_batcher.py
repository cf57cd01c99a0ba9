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


async def submit_all(classifier, inputs, *, decode_s: float) -> tuple[list, int]:
    """Submit every input as a request whose decoding took `decode_s` times its position."""
    with ThreadPoolExecutor(1) as executor:
        batcher = MicroBatcher(executor=executor, max_batch=8, max_wait_s=0.5)
        batcher.incoming = len(inputs)

        async def one(i, x):
            await asyncio.sleep(decode_s * i)
            batcher.incoming -= 1
            return await batcher.submit(classifier, x)

        results = await asyncio.gather(*(one(i, x) for i, x in enumerate(inputs)))
        return results, batcher.forward_passes


def test_concurrent_requests_share_forward_passes_and_a_lone_one_does_not_wait(
        classifier, inputs):
    expected = classifier.forward(np.concatenate(inputs))

    async def scenario():
        results, passes = await submit_all(classifier, inputs, decode_s=0)
        with ThreadPoolExecutor(1) as executor:
            batcher = MicroBatcher(executor=executor, max_batch=8, max_wait_s=0.5)
            started = time.perf_counter()
            await batcher.submit(classifier, inputs[0])  # nobody else incoming: no waiting
            lone = time.perf_counter() - started
        return results, passes, lone

    results, passes, lone = run(scenario())
    assert passes == 2  # 12 requests in batches of at most 8
    assert np.abs(np.concatenate(results) - expected).max() < 1e-5
    assert lone < 0.4  # well under max_wait_s


def test_a_batch_waits_for_requests_still_being_decoded(classifier, inputs):
    # Arriving 20 ms apart, each would run alone if the batch did not wait for the others.
    results, passes = run(submit_all(classifier, inputs, decode_s=0.02))
    assert passes == 2
    expected = classifier.forward(np.concatenate(inputs))
    assert np.abs(np.concatenate(results) - expected).max() < 1e-5
