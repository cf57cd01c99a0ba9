"""Reading what a request uploads under one budget: files, zips member by member.

A request's files and zip members share one `RequestBudget`: how many files, how many bytes
they expand to (read a block at a time, headers not trusted), each member's compression
ratio, and the pixels decoded. Whatever does not fit, or cannot be read safely (encrypted,
nested, damaged, oddly compressed), is refused with a reason a person can act on.
"""

import io
import lzma
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO

from app.config import Settings
from app.ml.images import ImageRejected, PixelBudget

BLOCK = 2**16  # zip members are read this much at a time
RATIO_FLOOR = 2**20  # a member that expands to at most this is not held to the ratio
READABLE_COMPRESSION = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2,
                        zipfile.ZIP_LZMA)
ARCHIVE_SUFFIXES = (".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".zst",
                    ".cbz", ".jar")
ARCHIVE_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08", b"\x1f\x8b", b"BZh",
                 b"\xfd7zXZ\x00", b"7z\xbc\xaf\x27\x1c", b"Rar!\x1a\x07", b"(\xb5/\xfd")
DAMAGED_ZIP = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError, ValueError,
               NotImplementedError, RuntimeError, struct.error)
END_RECORD_SEARCH = 22 + 65535  # a zip's end record, and the comment after it at most
DIRECTORY_SLACK = 1000  # entries of a zip's directory beyond twice the files it may hold


@dataclass(frozen=True)
class Limits:
    max_pixels: int  # per image, from its header
    max_zip_members: int  # files of one request, zip members included
    max_zip_bytes: int  # bytes of one request, every file and zip member as expanded
    pixels_per_request: int | None = None  # decoded by one add_images call (None: no bound)
    max_zip_ratio: int = 100  # expanded bytes per compressed byte of a zip member
    max_file_bytes: int = 50 * 2**20  # one image file (an uploaded file, a zip member)

    @classmethod
    def from_settings(cls, settings: Settings) -> "Limits":
        return cls(max_pixels=settings.max_image_pixels,
                   max_zip_members=settings.max_zip_members,
                   max_zip_bytes=settings.max_zip_total_mb * 2**20,
                   pixels_per_request=settings.upload_pixels_per_request,
                   max_zip_ratio=settings.max_zip_ratio,
                   max_file_bytes=settings.max_image_mb * 2**20)


def _mb(size: int) -> str:
    return f"{size / 2**20:.3g}"


class RequestBudget:
    """What one upload or import may read in all, over every file and zip it holds: files,
    expanded bytes (zip members held to a compression ratio too) and decoded pixels."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.files_left = limits.max_zip_members
        self.bytes_left = limits.max_zip_bytes
        self.pixels = PixelBudget(limits.pixels_per_request) if limits.pixels_per_request else None

    def take_file(self) -> None:
        if self.files_left <= 0:
            raise ImageRejected(f"more than {self.limits.max_zip_members} files in one "
                                "request; send the rest in another")
        self.files_left -= 1

    def cap(self, packed: int | None = None) -> tuple[int, str]:
        """The most bytes the next file may expand to, and the reason when it does not fit
        (`packed`: a zip member's compressed size)."""
        limits = self.limits
        caps = [
            (limits.max_file_bytes, f"larger than {_mb(limits.max_file_bytes)} MB, the limit "
                                    "for one image file"),
            (self.bytes_left, f"the request's files expand to more than "
                              f"{_mb(limits.max_zip_bytes)} MB in all; send fewer at once"),
        ]
        if packed is not None:
            caps.append((max(limits.max_zip_ratio * packed, RATIO_FLOOR),
                         f"compressed more than {limits.max_zip_ratio}:1 (a zip bomb?)"))
        return min(caps)

    def spend(self, size: int) -> None:
        self.bytes_left = max(0, self.bytes_left - size)


def is_zip(data: bytes | IO[bytes]) -> bool:
    return _head(data, 4) in (b"PK\x03\x04", b"PK\x05\x06")


def _head(data: bytes | IO[bytes], size: int) -> bytes:
    if isinstance(data, bytes | bytearray):
        return bytes(data[:size])
    data.seek(0)
    head = data.read(size)
    data.seek(0)
    return head


def _is_archive(name: str, head: bytes) -> bool:
    return (name.lower().endswith(ARCHIVE_SUFFIXES) or head.startswith(ARCHIVE_MAGIC)
            or head[257:262] == b"ustar")


def open_zip(data: bytes | IO[bytes], *, filename: str, budget: RequestBudget,
             rejected: list[dict]) -> zipfile.ZipFile | None:
    """The zip, or None and one rejection when it is not a readable zip, or when its
    directory alone is too large for the request (checked before zipfile parses it)."""
    file = io.BytesIO(data) if isinstance(data, bytes | bytearray) else data
    directory = _zip_directory(file)
    most = 2 * budget.files_left + DIRECTORY_SLACK  # folders and __MACOSX files are listed too
    if directory is not None and (directory[0] > most or directory[1] > most * 1024):
        rejected.append({"filename": filename, "reason": (
            f"zip lists {directory[0]} entries in {_mb(directory[1])} MB; one request may "
            f"hold {budget.limits.max_zip_members} files")})
        return None
    try:
        return zipfile.ZipFile(file)
    except DAMAGED_ZIP:
        rejected.append({"filename": filename, "reason": "not a readable zip file"})
        return None


def _zip_directory(file: IO[bytes]) -> tuple[int, int] | None:
    """(entries, bytes) of a zip's central directory as its end record declares them; None
    when there is no end record (zipfile then refuses the zip)."""
    file.seek(0, io.SEEK_END)
    size = file.tell()
    file.seek(max(0, size - END_RECORD_SEARCH))
    tail = file.read()
    file.seek(0)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return None
    entries, directory_size = struct.unpack_from("<HI", tail, at + 10)
    if entries == 0xFFFF or directory_size == 0xFFFFFFFF:  # zip64: its own end record
        locator = tail[at - 20:at] if at >= 20 else b""
        if locator[:4] == b"PK\x06\x07":
            file.seek(struct.unpack_from("<Q", locator, 8)[0])
            record = file.read(56)
            file.seek(0)
            if record[:4] == b"PK\x06\x06":
                entries, directory_size = struct.unpack_from("<QQ", record, 32)
    return entries, directory_size


def zip_files(archive: zipfile.ZipFile, *, filename: str, budget: RequestBudget,
              rejected: list[dict], skip: Callable[[zipfile.ZipInfo], bool] = lambda info: False,
              ) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """The zip's files to read and their paths; none (and one rejection) when the zip alone
    holds more files or declares more bytes than the request has left. Unsafe paths are
    rejected; folders, hidden files and those `skip` names are passed over."""
    files = []
    for info in archive.infolist():
        if info.is_dir() or skip(info):
            continue
        path = PurePosixPath(info.filename.replace("\\", "/"))
        if not path.parts:
            continue
        if path.is_absolute() or ".." in path.parts or ":" in path.parts[0]:
            rejected.append({"filename": f"{filename}:{info.filename}",
                                    "reason": "unsafe path in zip"})
            continue
        if any(part.startswith(".") or part == "__MACOSX" for part in path.parts):
            continue
        files.append((info, path))
    limits = budget.limits
    if len(files) > budget.files_left:
        rejected.append({"filename": filename, "reason": (
            f"zip has {len(files)} files; one request may hold {limits.max_zip_members} "
            f"({budget.files_left} left)")})
        return []
    declared = sum(info.file_size for info, _ in files)
    if declared > budget.bytes_left:
        rejected.append({"filename": filename, "reason": (
            f"zip expands to {_mb(declared)} MB; one request may expand to "
            f"{_mb(limits.max_zip_bytes)} MB ({_mb(budget.bytes_left)} MB left)")})
        return []
    return files


def read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, *,
                budget: RequestBudget) -> bytes:
    """One zip member's bytes, read a block at a time and counted against the request's
    budget as they come (a header's sizes are not trusted); ImageRejected says why not."""
    budget.take_file()
    if info.flag_bits & 0x1:
        raise ImageRejected("encrypted in the zip (password-protected files are not opened)")
    if info.compress_type not in READABLE_COMPRESSION:
        raise ImageRejected(f"compressed with an unsupported method ({info.compress_type}); "
                            "zip it with deflate or no compression")
    if _is_archive(info.filename, b""):
        raise ImageRejected("an archive inside a zip is not opened; put its files in the zip")
    cap, too_large = budget.cap(packed=info.compress_size)
    if info.file_size > cap:
        raise ImageRejected(too_large)
    data = bytearray()
    try:
        with archive.open(info) as handle:
            while block := handle.read(BLOCK):
                if not data and _is_archive("", block):
                    raise ImageRejected("an archive inside a zip is not opened; put its files "
                                        "in the zip")
                data += block
                if len(data) > cap:
                    raise ImageRejected(too_large)
    except ImageRejected:
        raise
    except DAMAGED_ZIP as exc:
        reason = str(exc) if isinstance(exc, zipfile.BadZipFile) else type(exc).__name__
        raise ImageRejected(f"damaged in the zip ({reason[:200]})") from exc
    finally:
        budget.spend(len(data))
    return bytes(data)


def read_file(data: bytes | IO[bytes], *, budget: RequestBudget) -> bytes:
    """An uploaded file's bytes, counted against the request's budget."""
    budget.take_file()
    cap, too_large = budget.cap()
    if not isinstance(data, bytes | bytearray):
        data.seek(0)
        data = data.read(cap + 1)
    budget.spend(min(len(data), cap))
    if len(data) > cap:
        raise ImageRejected(too_large)
    return bytes(data)
