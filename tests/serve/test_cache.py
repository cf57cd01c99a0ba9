import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
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


def test_an_entry_answers_only_for_the_row_it_was_loaded_from(bear_model, tmp_path):
    cache, [first] = cache_with_versions(bear_model, tmp_path, 1, size=4)
    first.created_at = datetime(2026, 1, 1, tzinfo=UTC)
    loaded = cache.get(first)
    same_row = ModelVersion(id=1, project_id=1, storage_prefix=first.storage_prefix,
                            created_at=first.created_at)
    assert cache.get(same_row) is loaded and cache.loads == 1
    # Another row under the same id (a restored or rebuilt database): loaded anew, and the
    # entry of the row it replaced is dropped.
    for path in Path(bear_model[0]).iterdir():
        cache.storage.put_file(f"models/9/1/{path.name}", path)
    moved = ModelVersion(id=1, project_id=9, storage_prefix="models/9/1",
                         created_at=first.created_at)
    recreated = ModelVersion(id=1, project_id=1, storage_prefix=first.storage_prefix,
                             created_at=datetime(2026, 2, 1, tzinfo=UTC))
    for other in (moved, recreated):
        assert cache.get(other) is not loaded
    assert cache.loads == 3 and cache.cached_ids() == [1]
