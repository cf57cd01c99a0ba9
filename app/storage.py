"""Blob storage behind keys; the database stores keys, never paths or URLs.

Two backends with one contract (`Storage`): a local folder, and any S3-compatible store
(AWS S3, MinIO, ...). `open_storage` picks one from `STORAGE_URL`.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlparse

if TYPE_CHECKING:
    from app.config import Settings

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")
CHUNK_BYTES = 1 << 20


class StorageError(Exception):
    """A key that is malformed or missing."""


@cache
def store_failures() -> tuple[type[Exception], ...]:
    """What a backend raises when the store itself fails: a full or broken disk (OSError),
    an S3 store that is unreachable or refuses (botocore's errors)."""
    from botocore.exceptions import BotoCoreError, ClientError

    return (OSError, BotoCoreError, ClientError)


class Reader(Protocol):
    """What `Storage.open` returns: read it in chunks, then close it."""

    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


class Storage(Protocol):
    """Bytes under keys (`a/b.jpg`: letters, digits, `._-`, no `..`); a write is atomic."""

    def put(self, key: str, data: bytes) -> None:
        """Write `data` under `key`."""

    def put_stream(self, key: str, stream: Reader) -> None:
        """Write what `stream` reads, up to its end, under `key`."""

    def put_file(self, key: str, source: Path) -> None:
        """Copy a local file under `key`."""

    def read(self, key: str) -> bytes:
        """The bytes under `key` (StorageError when missing)."""

    def open(self, key: str) -> Reader:
        """A stream of the bytes under `key` (StorageError when missing)."""

    def size(self, key: str) -> int:
        """The length of the bytes under `key` (StorageError when missing)."""

    def exists(self, key: str) -> bool: ...

    def age_s(self, key: str) -> float:
        """Seconds since `key` was last written."""

    def delete(self, key: str) -> None:
        """Remove `key` (nothing happens when it is missing)."""

    def delete_prefix(self, prefix: str) -> None:
        """Remove every key under `prefix/`."""

    def list_keys(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        """Every key under `prefix/` (all keys for ""), sorted, with its size."""

    def local_dir(self, prefix: str) -> Path:
        """A local folder holding the keys under `prefix/` as files (for ONNX Runtime)."""


def check_key(key: str) -> str:
    """`key` when it is well-formed (keys never escape a root or a bucket prefix)."""
    if not _KEY.match(key) or ".." in key.split("/"):
        raise StorageError(f"invalid storage key: {key!r}")
    return key


class LocalStorage:
    """Files under one root folder; writes are atomic (temp file, then rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """The local file behind `key` (keys never escape the root)."""
        return self.root / check_key(key)

    def put(self, key: str, data: bytes) -> None:
        """Write `data` under `key` atomically."""
        with _AtomicFile(self.path(key)) as handle:
            handle.write(data)

    def put_stream(self, key: str, stream: Reader) -> None:
        """Write what `stream` reads under `key` atomically, a chunk at a time."""
        with _AtomicFile(self.path(key)) as handle:
            while chunk := stream.read(CHUNK_BYTES):
                handle.write(chunk)

    def put_file(self, key: str, source: Path) -> None:
        """Copy a local file under `key` atomically."""
        with open(source, "rb") as stream:
            self.put_stream(key, stream)

    def read(self, key: str) -> bytes:
        """The bytes under `key`."""
        try:
            return self.path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise StorageError(f"no such key: {key}") from exc

    def open(self, key: str) -> Reader:
        try:
            return open(self.path(key), "rb")  # the caller closes it
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise StorageError(f"no such key: {key}") from exc

    def size(self, key: str) -> int:
        path = self.path(key)
        if not path.is_file():
            raise StorageError(f"no such key: {key}")
        return path.stat().st_size

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def age_s(self, key: str) -> float:
        """Seconds since `key` was last written."""
        path = self.path(key)
        if not path.is_file():
            raise StorageError(f"no such key: {key}")
        return time.time() - path.stat().st_mtime

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        """Remove every key under `prefix/`."""
        shutil.rmtree(self.path(prefix), ignore_errors=True)

    def list_keys(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        """Every key under `prefix/`, sorted, with its size (temp files are not keys)."""
        top = self.path(prefix) if prefix else self.root
        found = []
        for folder, _, files in os.walk(top):
            for name in files:
                key = (Path(folder) / name).relative_to(self.root).as_posix()
                if _KEY.match(key):
                    found.append((key, (Path(folder) / name).stat().st_size))
        yield from sorted(found)

    def local_dir(self, prefix: str) -> Path:
        """A local folder holding the keys under `prefix/` (here: the folder itself)."""
        return self.path(prefix)


class _AtomicFile:
    """Write a temp file beside `target`, rename it over `target` on success."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __enter__(self):
        self.target.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(dir=self.target.parent, prefix=".tmp-")
        self.handle = os.fdopen(fd, "wb")
        return self.handle

    def __exit__(self, exc_type, exc, tb) -> None:
        self.handle.close()
        if exc_type is None:
            os.replace(self.tmp, self.target)
        else:
            Path(self.tmp).unlink(missing_ok=True)


class S3Storage:
    """Objects in an S3-compatible bucket under a key prefix; a PUT is atomic per key.

    `local_dir` mirrors a prefix into `cache_dir`; a file already there with the object's
    size and time is kept (model versions are immutable, so each downloads once).
    """

    def __init__(self, *, bucket: str, prefix: str, client, cache_dir: Path) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client
        self.cache_dir = cache_dir.resolve()

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._name(key), Body=data)

    def put_stream(self, key: str, stream: Reader) -> None:
        """Upload what `stream` reads (multipart above 8 MiB; completed, it is one object)."""
        self.client.upload_fileobj(stream, self.bucket, self._name(key))

    def put_file(self, key: str, source: Path) -> None:
        with open(source, "rb") as stream:
            self.put_stream(key, stream)

    def read(self, key: str) -> bytes:
        body = self.open(key)
        try:
            return body.read()
        finally:
            body.close()

    def open(self, key: str) -> Reader:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._name(key))["Body"]
        except self.client.exceptions.NoSuchKey as exc:
            raise StorageError(f"no such key: {key}") from exc

    def size(self, key: str) -> int:
        head = self._head(key)
        if head is None:
            raise StorageError(f"no such key: {key}")
        return head["ContentLength"]

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def age_s(self, key: str) -> float:
        head = self._head(key)
        if head is None:
            raise StorageError(f"no such key: {key}")
        return (datetime.now(UTC) - head["LastModified"]).total_seconds()

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._name(key))
        self._cached(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        """Remove every key under `prefix/` (and its local mirror)."""
        check_key(prefix)
        names = [self._name(key) for key, _ in self.list_keys(prefix)]
        for start in range(0, len(names), 1000):  # the most one request may delete
            batch = [{"Key": name} for name in names[start:start + 1000]]
            self.client.delete_objects(Bucket=self.bucket,
                                       Delete={"Objects": batch, "Quiet": True})
        shutil.rmtree(self._cached(prefix), ignore_errors=True)

    def list_keys(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        for key, size, _ in self._objects(prefix):
            yield key, size

    def local_dir(self, prefix: str) -> Path:
        """A local copy of the keys under `prefix/`, downloaded into the cache when changed."""
        check_key(prefix)
        for key, size, modified_ns in self._objects(prefix):
            target = self._cached(key)
            if target.is_file() and (target.stat().st_size, target.stat().st_mtime_ns) == (
                    size, modified_ns):
                continue
            body = self.open(key)
            try:
                with _AtomicFile(target) as handle:
                    while chunk := body.read(CHUNK_BYTES):
                        handle.write(chunk)
            finally:
                body.close()
            os.utime(target, ns=(modified_ns, modified_ns))
        return self._cached(prefix)

    def _objects(self, prefix: str) -> Iterator[tuple[str, int, int]]:
        """Key, size and modification time (ns) of every object under `prefix/`."""
        base = f"{self.prefix}/" if self.prefix else ""
        under = f"{base}{check_key(prefix)}/" if prefix else base
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=under)
        for page in pages:  # S3 lists in UTF-8 binary order: sorted, for our keys
            for item in page.get("Contents", []):
                key = item["Key"].removeprefix(base)
                if _KEY.match(key):
                    modified = item["LastModified"] - datetime.fromtimestamp(0, UTC)
                    yield key, item["Size"], modified // timedelta(microseconds=1) * 1000

    def _name(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _cached(self, key: str) -> Path:
        return self.cache_dir / check_key(key)

    def _head(self, key: str) -> dict | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._name(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise


@cache
def _boto3_session():
    import boto3

    return boto3.session.Session()  # loads the service models once per process


_client_lock = threading.Lock()


def s3_client(settings: Settings):
    """A boto3 S3 client from the settings (credentials, if unset, from boto3's own chain)."""
    from botocore.config import Config

    secret = settings.aws_secret_access_key
    config = Config(
        # S3-compatible stores behind one host name (MinIO, moto) want path-style URLs.
        s3={"addressing_style": "path" if settings.s3_endpoint_url else "auto"},
        # Checksums only where S3 requires them: some compatible stores reject the rest.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"max_attempts": 5, "mode": "standard"},
    )
    with _client_lock:  # a boto3 session makes one client at a time
        return _boto3_session().client(
            "s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.s3_region,
            aws_access_key_id=settings.aws_access_key_id,
            aws_secret_access_key=secret.get_secret_value() if secret else None, config=config,
        )


def open_storage(url: str, settings: Settings | None = None) -> Storage:
    """The storage backend for `url`: `file:///abs/path` or `s3://bucket/prefix`.

    S3 takes its endpoint, region, credentials and cache folder from `settings`.
    """
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalStorage(Path(parsed.path))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"STORAGE_URL {url!r} names no bucket; use s3://bucket/prefix")
        if settings is None:
            raise ValueError("S3 storage needs the settings: open_storage(url, settings)")
        prefix = parsed.path.strip("/")
        if prefix:
            check_key(prefix)
        return S3Storage(
            bucket=parsed.netloc, prefix=prefix, client=s3_client(settings),
            cache_dir=settings.home / "cache" / "s3" / parsed.netloc / (prefix or "_"),
        )
    raise ValueError(
        f"unsupported STORAGE_URL scheme {parsed.scheme!r}; use file:///path or s3://bucket/prefix"
    )


def copy_all(source: Storage, target: Storage) -> tuple[int, int]:
    """Stream every key of `source` into `target`, but for keys already there with the same
    size; (copied, skipped)."""
    present = dict(target.list_keys())
    copied = skipped = 0
    for key, size in source.list_keys():
        if present.get(key) == size:
            skipped += 1
            continue
        reader = source.open(key)
        try:
            target.put_stream(key, reader)
        finally:
            reader.close()
        copied += 1
    return copied, skipped
