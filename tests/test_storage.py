"""Local storage: keys stay inside the root, writes are atomic."""

import pytest

from app.storage import LocalStorage, StorageError, open_storage


def test_put_read_delete(tmp_path):
    storage = LocalStorage(tmp_path)
    storage.put("images/1/a.jpg", b"one")
    storage.put("images/1/a.jpg", b"two")
    assert storage.read("images/1/a.jpg") == b"two"
    assert [p.name for p in (tmp_path / "images" / "1").iterdir()] == ["a.jpg"]  # no temp left
    storage.delete_prefix("images/1")
    assert not storage.exists("images/1/a.jpg")
    with pytest.raises(StorageError):
        storage.read("images/1/a.jpg")


@pytest.mark.parametrize("key", ["../x", "a/../../x", "/etc/passwd", "a//b", ".hidden", ""])
def test_keys_cannot_escape_the_root(tmp_path, key):
    with pytest.raises(StorageError):
        LocalStorage(tmp_path).path(key)


def test_failed_write_keeps_the_old_file(tmp_path):
    storage = LocalStorage(tmp_path)
    storage.put("k.bin", b"old")
    with pytest.raises(FileNotFoundError):
        storage.put_file("k.bin", tmp_path / "missing")
    assert storage.read("k.bin") == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.bin"]


def test_only_file_urls(tmp_path):
    assert open_storage(f"file://{tmp_path}/s").root == (tmp_path / "s").resolve()
    with pytest.raises(ValueError, match="unsupported"):
        open_storage("s3://bucket")
