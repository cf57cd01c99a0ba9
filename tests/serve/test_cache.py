import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from app.models import ModelVersion
from app.serving.cache import ModelCache
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
