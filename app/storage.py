"""Blob storage behind keys; the database stores keys, never paths or URLs."""

import os
import re
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlparse

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")


class StorageError(Exception):
    """A key that is malformed or missing."""


class LocalStorage:
    """Files under one root folder; writes are atomic (temp file, then rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """The local file behind `key` (keys never escape the root)."""
        if not _KEY.match(key) or ".." in key.split("/"):
            raise StorageError(f"invalid storage key: {key!r}")
        return self.root / key

    def put(self, key: str, data: bytes) -> None:
        """Write `data` under `key` atomically."""
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_file(self, key: str, source: Path) -> None:
        """Copy a local file under `key` atomically."""
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        os.close(fd)
        try:
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def read(self, key: str) -> bytes:
        """The bytes under `key`."""
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError as exc:
            raise StorageError(f"no such key: {key}") from exc

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        """Remove every key under `prefix/`."""
        shutil.rmtree(self.path(prefix), ignore_errors=True)

    def local_dir(self, prefix: str) -> Path:
        """A local folder holding the keys under `prefix/` (here: the folder itself)."""
        return self.path(prefix)


def open_storage(url: str) -> LocalStorage:
    """The storage backend for `url` (`file:///abs/path`)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalStorage(Path(parsed.path))
    raise ValueError(f"unsupported STORAGE_URL scheme {parsed.scheme!r}; use file:///path")
