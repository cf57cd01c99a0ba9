import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from app.ml.images import decode_rgb
from app.models import Deployment, ModelVersion
from app.services.predictions import (
    MicroBatcher,
    ModelCache,
    shape_answer,
    unknown_threshold,
)
from app.storage import LocalStorage


def cache_with_versions(bear_model, tmp_path, n: int, **kwargs):
    storage = LocalStorage(tmp_path / "storage")
    versions = []
    for i in range(1, n + 1):
        for path in Path(bear_model[0]).iterdir():
            storage.put_file(f"models/1/{i}/{path.name}", path)
        versions.append(ModelVersion(id=i, project_id=1, storage_prefix=f"models/1/{i}"))
    return ModelCache(storage, threads=1, **kwargs), versions


def test_concurrent_first_requests_load_a_version_once(bear_model, tmp_path):
    cache, [version] = cache_with_versions(bear_model, tmp_path, 1, size=2)
    start = threading.Barrier(4)

    def get():
        start.wait()
        return cache.get(version)

    with ThreadPoolExecutor(4) as pool:
        loaded = list(pool.map(lambda _: get(), range(4)))
    assert cache.loads == 1 and all(c is loaded[0] for c in loaded)


def test_eviction_by_count_and_by_bytes(bear_model, tmp_path):
    cache, (a, b, c) = cache_with_versions(bear_model, tmp_path, 3, size=2)
    cache.get(a), cache.get(b), cache.get(a), cache.get(c)
    assert cache.cached_ids() == [1, 3]  # b was least recently used
    onnx_bytes = (Path(bear_model[0]) / "model.onnx").stat().st_size
    cache.max_bytes = int(onnx_bytes * 1.5)
    cache.get(b)
    assert cache.cached_ids() == [2]
    assert cache.loads == 4


def test_concurrent_requests_share_forward_passes_and_a_lone_one_does_not_wait(
        bear_model, data_dir):
    from app.ml.predict import Classifier

    classifier = Classifier.load(bear_model[0], threads=1)
    paths = sorted((data_dir / "bears" / "grizzly").glob("*.jpg"))[:12]
    inputs = [classifier.prepare([decode_rgb(p.read_bytes(), draft_size=256)]) for p in paths]
    expected = classifier.forward(np.concatenate(inputs))

    async def scenario():
        executor = ThreadPoolExecutor(1)
        batcher = MicroBatcher(executor=executor, max_batch=8, max_wait_s=0.5)
        batcher.incoming = len(inputs)

        async def one(x):
            await asyncio.sleep(0)
            batcher.incoming -= 1
            return await batcher.submit(classifier, x)

        results = await asyncio.gather(*(one(x) for x in inputs))
        passes = batcher.forward_passes
        started = time.perf_counter()
        await batcher.submit(classifier, inputs[0])  # nobody else incoming: no waiting
        lone = time.perf_counter() - started
        executor.shutdown()
        return results, passes, lone

    # a thread of its own: Playwright's sync API may own this thread's event loop
    with ThreadPoolExecutor(1) as runner:
        results, passes, lone = runner.submit(asyncio.run, scenario()).result()
    assert passes == 2  # 12 requests in batches of at most 8
    assert np.abs(np.concatenate(results) - expected).max() < 1e-5
    assert lone < 0.4  # well under max_wait_s


def test_answers_sort_cut_to_top_k_and_flag_unknown():
    row = np.array([0.2, 0.7, 0.1], dtype=np.float32)
    answer = shape_answer(labels=["a", "b", "c"], row=row, model_id=5, threshold=0.8,
                          top_k=None)
    assert list(answer["probabilities"]) == ["b", "a", "c"]
    assert answer["label"] == "b" and answer["unknown"] is True and answer["model_id"] == 5
    top = shape_answer(labels=["a", "b", "c"], row=row, model_id=5, threshold=None, top_k=2)
    assert list(top["probabilities"]) == ["b", "a"] and top["unknown"] is False


def test_deployment_threshold_overrides_the_calibrated_one():
    model = ModelVersion(metrics={"unknown_threshold": 0.6})
    assert unknown_threshold(deployment=Deployment(threshold=None), model=model) == 0.6
    assert unknown_threshold(deployment=Deployment(threshold=0.9), model=model) == 0.9
    assert unknown_threshold(deployment=Deployment(threshold=None),
                             model=ModelVersion(metrics={})) is None
