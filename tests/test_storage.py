"""Storage: one contract for the local folder and an S3 server (moto on loopback); keys stay
inside their root or prefix, writes are atomic."""

import io
import os

import pytest

from app.config import Settings
from app.storage import LocalStorage, S3Storage, StorageError, copy_all, open_storage
from tests.conftest import s3_settings

BACKENDS = ["local", "s3"]
BAD_KEYS = ["../x", "a/../../x", "/etc/passwd", "a//b", ".hidden", "", "a/", "a b", "é"]


def open_backend(kind: str, tmp_path, s3_store, name: str = "store"):
    home = tmp_path / name
    if kind == "local":
        return open_storage(f"file://{home}/storage")
    settings = Settings(home=home, **s3_settings(s3_store.endpoint))
    return open_storage(f"{s3_store.url}/{name}", settings)


@pytest.fixture(params=BACKENDS)
def storage(request, tmp_path):
    s3_store = request.getfixturevalue("s3_store") if request.param == "s3" else None
    return open_backend(request.param, tmp_path, s3_store)


class OneWay(io.RawIOBase):
    """A stream that cannot seek, like an HTTP body."""

    def __init__(self, data: bytes) -> None:
        self.source = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        chunk = self.source.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def test_put_read_delete(storage):
    storage.put("images/1/a.jpg", b"one")
    storage.put("images/1/a.jpg", b"two")
    assert storage.read("images/1/a.jpg") == b"two"
    assert storage.exists("images/1/a.jpg") and storage.size("images/1/a.jpg") == 3
    assert list(storage.list_keys()) == [("images/1/a.jpg", 3)]  # no temp left
    storage.delete("images/1/a.jpg")
    storage.delete("images/1/a.jpg")  # deleting twice is fine
    assert not storage.exists("images/1/a.jpg")
    with pytest.raises(StorageError):
        storage.read("images/1/a.jpg")


def test_delete_prefix_stops_at_the_folder(storage):
    for key in ("images/1/a.jpg", "images/1/b/c.jpg", "images/10/a.jpg", "images/2.jpg"):
        storage.put(key, key.encode())
    storage.delete_prefix("images/1")
    assert [key for key, _ in storage.list_keys()] == ["images/10/a.jpg", "images/2.jpg"]
    storage.delete_prefix("images/1")  # nothing left to delete


def test_list_keys_sorted_with_sizes(storage):
    storage.put("models/2/model.json", b"{}")
    storage.put("models/1/model.onnx", b"x" * 10)
    storage.put("images/1/a.jpg", b"")
    assert list(storage.list_keys()) == [
        ("images/1/a.jpg", 0), ("models/1/model.onnx", 10), ("models/2/model.json", 2)]
    assert list(storage.list_keys("models/1")) == [("models/1/model.onnx", 10)]
    assert list(storage.list_keys("models/3")) == []


def test_age_of_a_key(storage):
    storage.put("k.bin", b"x")
    assert -1 < storage.age_s("k.bin") < 60


def test_missing_keys(storage):
    for call in (storage.read, storage.open, storage.size, storage.age_s):
        with pytest.raises(StorageError, match="no such key"):
            call("nothing/here.jpg")
    assert not storage.exists("nothing/here.jpg")


@pytest.mark.parametrize("key", BAD_KEYS)
def test_invalid_keys(storage, key):
    for call in (storage.read, storage.open, storage.size, storage.age_s, storage.exists,
                 storage.delete, storage.delete_prefix, storage.local_dir):
        with pytest.raises(StorageError, match="invalid storage key"):
            call(key)
    with pytest.raises(StorageError, match="invalid storage key"):
        storage.put(key, b"x")
    assert list(storage.list_keys()) == []


@pytest.mark.parametrize("key", ["../x", "a/../../x", "/etc/passwd", "a//b", ".hidden", ""])
def test_keys_cannot_escape_the_root(tmp_path, key):
    with pytest.raises(StorageError):
        LocalStorage(tmp_path).path(key)


def test_open_streams_in_chunks(storage):
    data = os.urandom(3 * 2**20 + 7)
    storage.put("big/blob.bin", data)
    reader = storage.open("big/blob.bin")
    try:
        chunks = iter(lambda: reader.read(2**20), b"")
        parts = list(chunks)
    finally:
        reader.close()
    assert len(parts) >= 4 and max(map(len, parts)) <= 2**20
    assert b"".join(parts) == data
    assert storage.size("big/blob.bin") == len(data)


def test_put_stream_from_a_stream_that_cannot_seek(storage):
    data = os.urandom(9 * 2**20)  # above S3's multipart threshold (8 MiB)
    storage.put_stream("big/stream.bin", OneWay(data))
    assert storage.read("big/stream.bin") == data
    assert list(storage.list_keys("big")) == [("big/stream.bin", len(data))]


def test_failed_write_keeps_the_old_value(storage, tmp_path):
    storage.put("k.bin", b"old")
    with pytest.raises(FileNotFoundError):
        storage.put_file("k.bin", tmp_path / "missing")

    class Broken(io.RawIOBase):
        def readable(self):
            return True

        def readinto(self, buffer):
            raise OSError("connection reset")

    with pytest.raises(OSError, match="connection reset"):
        storage.put_stream("k.bin", Broken())
    assert storage.read("k.bin") == b"old"
    assert list(storage.list_keys()) == [("k.bin", 3)]


def test_failed_local_write_leaves_no_temp_file(tmp_path):
    storage = LocalStorage(tmp_path)
    storage.put("k.bin", b"old")
    with pytest.raises(FileNotFoundError):
        storage.put_file("k.bin", tmp_path / "missing")
    assert storage.read("k.bin") == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.bin"]


def test_put_file(storage, tmp_path):
    source = tmp_path / "weights.bin"
    source.write_bytes(b"w" * 1000)
    storage.put_file("models/1/weights.bin", source)
    assert storage.read("models/1/weights.bin") == b"w" * 1000


def test_local_dir_holds_the_prefix_as_files(storage):
    storage.put("models/1/model.onnx", b"onnx")
    storage.put("models/1/sub/model.json", b"{}")
    storage.put("models/10/model.onnx", b"other")
    folder = storage.local_dir("models/1")
    assert (folder / "model.onnx").read_bytes() == b"onnx"
    assert (folder / "sub" / "model.json").read_bytes() == b"{}"
    if isinstance(storage, S3Storage):  # only the prefix asked for comes down
        assert [p.name for p in folder.parent.iterdir()] == ["1"]
    assert storage.local_dir("models/1") == folder
    storage.put("models/1/model.onnx", b"newer onnx")  # a new version of a file comes down
    assert (storage.local_dir("models/1") / "model.onnx").read_bytes() == b"newer onnx"
    storage.delete_prefix("models/1")
    assert not (folder / "model.onnx").exists()


def test_s3_local_dir_downloads_once(s3_store, tmp_path):
    storage = open_backend("s3", tmp_path, s3_store)
    storage.put("models/1/model.onnx", b"onnx")
    folder = storage.local_dir("models/1")
    calls = []
    storage.client.meta.events.register("before-call.s3.GetObject",
                                        lambda **kwargs: calls.append(kwargs))
    assert storage.local_dir("models/1") == folder
    assert calls == []
    assert folder.is_relative_to(tmp_path / "store" / "cache" / "s3")


def test_s3_stores_under_its_prefix_only(s3_store, tmp_path):
    one = open_backend("s3", tmp_path, s3_store, name="one")
    two = open_backend("s3", tmp_path, s3_store, name="two")
    one.put("images/1/a.jpg", b"a")
    assert not two.exists("images/1/a.jpg") and list(two.list_keys()) == []
    names = [o["Key"] for o in one.client.list_objects_v2(Bucket=s3_store.bucket)["Contents"]]
    assert names == ["kodiak/one/images/1/a.jpg"]
    two.delete_prefix("images")
    assert one.read("images/1/a.jpg") == b"a"


def test_open_storage(tmp_path, s3_store):
    assert open_storage(f"file://{tmp_path}/s").root == (tmp_path / "s").resolve()
    settings = Settings(home=tmp_path, **s3_settings(s3_store.endpoint))
    s3 = open_storage(f"s3://{s3_store.bucket}/a/b/", settings)
    assert isinstance(s3, S3Storage) and (s3.bucket, s3.prefix) == (s3_store.bucket, "a/b")
    assert open_storage(f"s3://{s3_store.bucket}", settings).prefix == ""
    with pytest.raises(ValueError, match="no bucket"):
        open_storage("s3:///prefix", settings)
    with pytest.raises(StorageError):
        open_storage(f"s3://{s3_store.bucket}/../x", settings)
    with pytest.raises(ValueError, match="needs the settings"):
        open_storage(f"s3://{s3_store.bucket}")
    with pytest.raises(ValueError, match="unsupported"):
        open_storage("ftp://bucket")


@pytest.mark.parametrize(("source_kind", "target_kind"), [("local", "s3"), ("s3", "local")])
def test_copy_all(tmp_path, s3_store, source_kind, target_kind):
    source = open_backend(source_kind, tmp_path, s3_store, name="source")
    target = open_backend(target_kind, tmp_path, s3_store, name="target")
    source.put("images/1/a.jpg", b"a" * 5)
    source.put("models/1/model.onnx", b"m" * 9)
    target.put("images/1/a.jpg", b"b" * 5)  # same size: taken as already copied
    target.put("models/1/model.onnx", b"short")  # another size: copied again
    assert copy_all(source, target) == (1, 1)
    assert target.read("models/1/model.onnx") == b"m" * 9
    assert copy_all(source, target) == (0, 2)
