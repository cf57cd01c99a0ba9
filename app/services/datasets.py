"""Images of a project: upload (files and zips of label folders), listing, relabelling.

An upload computes first and writes once. Every file of a request is read, expanded (a zip
member by member) and normalised under one budget for the whole request, and only the
normalised JPEGs are kept. Then the new files go to storage and their rows are inserted in
one short transaction. A row that another request inserted meanwhile makes a duplicate, not
an error, and the files of rows that are not committed are deleted again.
"""

import io
import logging
import lzma
import struct
import uuid
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import IO, Any

from sqlalchemy import event, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, SessionTransaction

from app.config import Settings
from app.ml import near_duplicates
from app.ml.images import ImageRejected, NormalisedImage, PixelBudget, normalise_image
from app.models import Image, Label, Project, User
from app.services.errors import InvalidInputError, NotFoundError
from app.services.projects import clean_name, find_label
from app.storage import Storage

log = logging.getLogger(__name__)
IMAGE_STATUSES = ("active", "excluded")
PROVENANCE = ("image_url", "page_url", "title", "provider", "query", "licence")
SORTS = {
    "newest": Image.id.desc(),
    "oldest": Image.id.asc(),
}
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
INSERT = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}
NEW_FILES = "kodiak.new_files"  # session.info: (storage, key) written for uncommitted rows


@dataclass
class Upload:
    filename: str
    data: bytes | IO[bytes]  # or a seekable file: a zip in it is read member by member
    label: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    ref: Any = None  # the caller's key for this upload, echoed in its result entry
    prepared: NormalisedImage | ImageRejected | None = None  # set by prepare_upload(s)
    status: str | None = None  # an import keeps the exported status and source
    source: str | None = None


@dataclass
class AddResult:
    added: list[dict] = field(default_factory=list)
    duplicates: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"added": self.added, "duplicates": self.duplicates, "rejected": self.rejected}


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
             result: AddResult) -> zipfile.ZipFile | None:
    """The zip, or None and one rejection when it is not a readable zip, or when its
    directory alone is too large for the request (checked before zipfile parses it)."""
    file = io.BytesIO(data) if isinstance(data, bytes | bytearray) else data
    directory = _zip_directory(file)
    most = 2 * budget.files_left + DIRECTORY_SLACK  # folders and __MACOSX files are listed too
    if directory is not None and (directory[0] > most or directory[1] > most * 1024):
        result.rejected.append({"filename": filename, "reason": (
            f"zip lists {directory[0]} entries in {_mb(directory[1])} MB; one request may "
            f"hold {budget.limits.max_zip_members} files")})
        return None
    try:
        return zipfile.ZipFile(file)
    except DAMAGED_ZIP:
        result.rejected.append({"filename": filename, "reason": "not a readable zip file"})
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
              result: AddResult, skip: Callable[[zipfile.ZipInfo], bool] = lambda info: False,
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
            result.rejected.append({"filename": f"{filename}:{info.filename}",
                                    "reason": "unsafe path in zip"})
            continue
        if any(part.startswith(".") or part == "__MACOSX" for part in path.parts):
            continue
        files.append((info, path))
    limits = budget.limits
    if len(files) > budget.files_left:
        result.rejected.append({"filename": filename, "reason": (
            f"zip has {len(files)} files; one request may hold {limits.max_zip_members} "
            f"({budget.files_left} left)")})
        return []
    declared = sum(info.file_size for info, _ in files)
    if declared > budget.bytes_left:
        result.rejected.append({"filename": filename, "reason": (
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


def _read_file(data: bytes | IO[bytes], *, budget: RequestBudget) -> bytes:
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


def prepared_upload(upload: Upload, read: Callable[[], bytes], *,
                    budget: RequestBudget) -> Upload:
    """The upload with its normalised image (or the reason it has none), its raw bytes
    dropped."""
    try:
        upload.prepared = normalise_image(read(), max_pixels=budget.limits.max_pixels,
                                          budget=budget.pixels)
    except ImageRejected as exc:
        upload.prepared = exc
    upload.data = b""
    return upload


def prepare_uploads(*, uploads: list[Upload], limits: Limits, result: AddResult
                    ) -> list[Upload]:
    """Every file of one request read, zips expanded, images normalised, one file at a time
    under one RequestBudget; whole zips that cannot be read are rejected into `result`."""
    budget = RequestBudget(limits)
    ready: list[Upload] = []
    for upload in uploads:
        if upload.prepared is not None:
            ready.append(upload)
        elif is_zip(upload.data):
            ready += _expand_zip(upload, budget=budget, result=result)
        else:
            ready.append(prepared_upload(
                upload, lambda upload=upload: _read_file(upload.data, budget=budget),
                budget=budget))
    return ready


def _expand_zip(upload: Upload, *, budget: RequestBudget, result: AddResult) -> list[Upload]:
    """The images of a zip, normalised; a member's label is its parent folder's name."""
    archive = open_zip(upload.data, filename=upload.filename, budget=budget, result=result)
    if archive is None:
        return []
    with archive:
        return [
            prepared_upload(
                Upload(filename=f"{upload.filename}:{info.filename}", data=b"",
                       label=path.parent.name or upload.label),
                lambda info=info: read_member(archive, info, budget=budget), budget=budget)
            for info, path in zip_files(archive, filename=upload.filename, budget=budget,
                                        result=result)
        ]


def prepare_upload(*, upload: Upload, limits: Limits) -> Upload:
    """Verify and normalise an upload ahead of add_images (thread-safe: CPU work only).

    Callers that receive images one by one (downloads) run this in a thread pool as each
    arrives, so decoding overlaps the network and add_images only stores. A zip is left
    for add_images to expand. The raw bytes are dropped once the image is normalised.
    """
    if upload.prepared is not None or is_zip(upload.data):
        return upload
    try:
        upload.prepared = normalise_image(upload.data, max_pixels=limits.max_pixels)
    except ImageRejected as exc:
        upload.prepared = exc
    upload.data = b""
    return upload


def upload_images(*, session: Session, storage: Storage, project: Project,
                  uploads: list[Upload], limits: Limits) -> AddResult:
    """add_images for one web request, committed: no transaction stays open while the files
    are decoded, and the answer comes after the commit."""
    session.commit()  # only reads so far (the caller, the project): end them first
    result = add_images(session=session, storage=storage, project=project, uploads=uploads,
                        limits=limits)
    session.commit()
    return result


def add_images(
    *,
    session: Session,
    storage: Storage,
    project: Project,
    uploads: list[Upload],
    limits: Limits,
    source: str = "upload",
) -> AddResult:
    """Verify, normalise and store images; exact duplicates are reported, not stored twice.

    Everything is computed before the first write (prepare_uploads). Then the new images'
    files are written and their rows inserted, in hash order; a row another transaction
    inserted since the lookup makes a duplicate. The caller commits: when its transaction
    ends without a commit, the files written here are deleted again.
    """
    result = AddResult()
    ready = prepare_uploads(uploads=uploads, limits=limits, result=result)
    labels = {label.name.lower(): label for label in project.labels}
    stored = _stored_hashes(session=session, project=project, uploads=ready)
    new: dict[str, tuple[Upload, str]] = {}  # content hash -> (upload, label name)
    waiting: list[tuple[Upload, str]] = []  # (upload, hash) whose image is new in this call
    for upload in ready:
        image = upload.prepared
        if isinstance(image, ImageRejected):
            result.rejected.append(_entry(upload, reason=str(image)))
            continue
        if not upload.label:
            result.rejected.append(
                _entry(upload, reason="no label: give `label`, or upload a zip of label folders")
            )
            continue
        try:
            label = labels.get(upload.label.strip().lower())
            label_name = label.name if label else clean_name(upload.label, what="label name")
        except InvalidInputError as exc:
            result.rejected.append(_entry(upload, reason=str(exc)))
            continue
        if image.content_hash in stored:
            result.duplicates.append(_entry(upload, image_id=stored[image.content_hash]))
            continue
        new.setdefault(image.content_hash, (upload, label_name))
        waiting.append((upload, image.content_hash))
    if not new:
        return result
    ids = _insert_images(session=session, storage=storage, project=project, new=new,
                         labels=labels, source=source)
    for upload, content_hash in waiting:
        first, label_name = new[content_hash]
        if upload is first and content_hash in ids.inserted:
            result.added.append(_entry(upload, image_id=ids.inserted[content_hash],
                                       label=label_name))
        else:  # a copy of one earlier in this call, or inserted by another meanwhile
            result.duplicates.append(_entry(upload, image_id=ids.all[content_hash]))
    return result


@dataclass
class _Ids:
    inserted: dict[str, int]  # content hash -> id of the rows this call inserted
    all: dict[str, int]  # ... and of those another transaction inserted first


def _insert_images(*, session: Session, storage: Storage, project: Project,
                   new: dict[str, tuple[Upload, str]], labels: dict[str, Label],
                   source: str) -> _Ids:
    """Write the new images' files, then insert their rows (a conflict on the content hash:
    inserted by another transaction since the lookup, its file is deleted again)."""
    keys = {content_hash: f"images/{project.id}/{uuid.uuid4().hex}.jpg" for content_hash in new}
    for content_hash, (upload, _) in new.items():
        _delete_unless_committed(session, storage, keys[content_hash])
        storage.put(keys[content_hash], upload.prepared.data)
    near = _near_duplicate_index(session=session, project=project)
    label_ids = _label_ids(session=session, project=project, labels=labels,
                           names={name for _, name in new.values()})
    rows = []
    for content_hash in sorted(new):  # one order for every transaction: no deadlocks
        upload, label_name = new[content_hash]
        image = upload.prepared
        rows.append({
            "project_id": project.id, "label_id": label_ids[label_name.lower()],
            "storage_key": keys[content_hash], "content_hash": content_hash,
            "phash": image.phash, "width": image.width, "height": image.height,
            "original_format": image.format, "original_filename": upload.filename[-500:],
            "source": upload.source or source, "status": upload.status or "active",
            **{key: None for key in PROVENANCE}, **_provenance(upload.provenance),
        })
    inserted = {content_hash: id_ for id_, content_hash in _insert_new(
        session, Image, rows, unique=("project_id", "content_hash"), returning="content_hash")}
    for id_, content_hash in sorted((id_, h) for h, id_ in inserted.items()):
        _join_near_duplicates(session=session, near=near, project_id=project.id,
                              image_id=id_, phash=new[content_hash][0].prepared.phash)
    raced = sorted(set(new) - set(inserted))
    found = dict(session.execute(select(Image.content_hash, Image.id).where(
        Image.project_id == project.id, Image.content_hash.in_(raced))).all()) if raced else {}
    for content_hash in raced:
        _delete_now(session, storage, keys[content_hash])
    return _Ids(inserted=inserted, all={**found, **inserted})


def _insert_new(session: Session, model: type, rows: list[dict], *, unique: tuple[str, ...],
                returning: str) -> list[tuple[int, Any]]:
    """Insert the rows that conflict with no stored row on `unique` columns (SQLite and
    PostgreSQL); (id, returning column) of those inserted."""
    if not rows:
        return []
    insert = INSERT[session.get_bind().dialect.name]
    statement = (insert(model).on_conflict_do_nothing(index_elements=list(unique))
                 .returning(model.id, getattr(model, returning)))
    return [tuple(row) for row in session.execute(statement, rows)]


def _label_ids(*, session: Session, project: Project, labels: dict[str, Label],
               names: set[str]) -> dict[str, int]:
    """Lowercase label name -> id, the missing labels added (or found, when another request
    added one meanwhile)."""
    missing = sorted(name for name in names if name.lower() not in labels)
    _insert_new(session, Label, [{"project_id": project.id, "name": name, "query": name[:500]}
                                 for name in missing],
                unique=("project_id", "name"), returning="name")
    ids = {name.lower(): label.id for name, label in labels.items()}
    if missing:
        session.expire(project, ["labels"])
        ids |= {name.lower(): id_ for name, id_ in session.execute(
            select(Label.name, Label.id).where(Label.project_id == project.id,
                                               Label.name.in_(missing)))}
    return ids


def _delete_unless_committed(session: Session, storage: Storage, key: str) -> None:
    """Delete this new file again if the session's transaction ends without a commit."""
    if NEW_FILES not in session.info:
        session.info[NEW_FILES] = []
        event.listen(session, "after_commit", _keep_new_files)
        event.listen(session, "after_transaction_end", _delete_new_files)
    session.info[NEW_FILES].append((storage, key))


def _keep_new_files(session: Session) -> None:
    session.info[NEW_FILES].clear()


def _delete_new_files(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is not None:  # a savepoint: its outer transaction decides
        return
    files, session.info[NEW_FILES] = session.info[NEW_FILES], []
    for storage, key in files:
        _delete_file(storage, key)


def _delete_now(session: Session, storage: Storage, key: str) -> None:
    session.info[NEW_FILES].remove((storage, key))
    _delete_file(storage, key)


def _delete_file(storage: Storage, key: str) -> None:
    try:
        storage.delete(key)
    except Exception:  # the file stays an orphan; `kodiak check --repair` finds it
        log.exception("could not delete %s, written for a row that was not committed", key)


def _stored_hashes(*, session: Session, project: Project, uploads: list[Upload]) -> dict:
    """content hash -> image id of the project's stored images among the prepared uploads."""
    wanted = {u.prepared.content_hash for u in uploads
              if isinstance(u.prepared, NormalisedImage)}
    if not wanted:
        return {}
    rows = session.execute(select(Image.content_hash, Image.id).where(
        Image.project_id == project.id, Image.content_hash.in_(sorted(wanted))
    ))
    return {content_hash: image_id for content_hash, image_id in rows}


def _entry(upload: Upload, **values: Any) -> dict:
    entry = {"filename": upload.filename, **values}
    if upload.ref is not None:
        entry["ref"] = upload.ref
    return entry


@dataclass
class _Hashed:
    id: int
    group: str | None


@dataclass
class _NearDuplicateIndex:
    """The project's hashed images, in id order, for near-duplicate lookups during an upload."""
    index: near_duplicates.HashIndex = field(default_factory=near_duplicates.HashIndex)
    images: list[_Hashed] = field(default_factory=list)  # by position in the index
    members: dict[str, list[int]] = field(default_factory=dict)  # group -> positions

    def add(self, value: int, image: _Hashed) -> None:
        self.images.append(image)
        self.index.add(value)
        if image.group:
            self.members.setdefault(image.group, []).append(len(self.images) - 1)


def _near_duplicate_index(*, session: Session, project: Project) -> _NearDuplicateIndex:
    """The project's images' dHashes (parsed once) and groups, indexed."""
    rows = session.execute(
        select(Image.id, Image.phash, Image.duplicate_group)
        .where(Image.project_id == project.id, Image.phash != "")
        .order_by(Image.id)
    )
    near = _NearDuplicateIndex()
    for id_, phash, group in rows:
        near.add(near_duplicates.parse(phash), _Hashed(id=id_, group=group))
    return near


def _join_near_duplicates(*, session: Session, near: _NearDuplicateIndex, project_id: int,
                          image_id: int, phash: str) -> None:
    """Put a new image in one group with the images within near_duplicates.DISTANCE of it.

    A group is a connected component, as training's split sees it: an image near two
    groups joins them under the older one. A group is named after its first image (`g<id>`).
    """
    value = near_duplicates.parse(phash)
    if value is None:
        return
    group = None
    neighbours = near.index.near(value)
    if neighbours:
        loose = [p for p in neighbours if near.images[p].group is None]
        joined = {near.images[p].group for p in neighbours} - {None}
        first = near.images[min(loose + [near.members[name][0] for name in joined])]
        group = first.group or f"g{first.id}"
        members = near.members.setdefault(group, [])
        bridged = sorted(joined - {group})  # the image bridges groups: they become one
        if bridged:
            session.execute(update(Image).where(Image.project_id == project_id,
                                                Image.duplicate_group.in_(bridged))
                            .values(duplicate_group=group))
        for old in bridged:
            members += near.members.pop(old)
        changed = [near.images[p].id for p in loose] + [image_id]
        session.execute(update(Image).where(Image.id.in_(changed)).values(duplicate_group=group))
        members += loose
        members.sort()
        for position in members:
            near.images[position].group = group
    near.add(value, _Hashed(id=image_id, group=group))


def duplicate_groups(*, session: Session, project: Project, limit: int = 200
                     ) -> list[list[Image]]:
    """The project's near-duplicate groups (two or more images each), largest first."""
    size = func.count(Image.id)
    names = list(session.scalars(
        select(Image.duplicate_group)
        .where(Image.project_id == project.id, Image.duplicate_group.is_not(None))
        .group_by(Image.duplicate_group).having(size > 1)
        .order_by(size.desc(), func.min(Image.id)).limit(limit)
    ))
    by_group: dict[str, list[Image]] = {name: [] for name in names}
    for image in session.scalars(select(Image).where(
        Image.project_id == project.id, Image.duplicate_group.in_(names)
    ).order_by(Image.id)):
        by_group[image.duplicate_group].append(image)
    return list(by_group.values())


def _provenance(values: dict[str, Any]) -> dict[str, Any]:
    widths = {"provider": 50, "query": 500, "licence": 100}
    return {key: str(values[key])[: widths.get(key, 4000)] for key in PROVENANCE
            if values.get(key)}


def list_images(
    *,
    session: Session,
    project: Project,
    label: str | None = None,
    status: str | None = None,
    sort: str = "oldest",
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[Image], int]:
    """A page of the project's images and the total that match the filters."""
    if sort not in SORTS:
        raise InvalidInputError(f"sort must be one of {', '.join(SORTS)}")
    if status is not None and status not in IMAGE_STATUSES:
        raise InvalidInputError(f"status must be one of {', '.join(IMAGE_STATUSES)}")
    query = select(Image).where(Image.project_id == project.id)
    if label:
        query = query.where(Image.label_id == find_label(project=project, name=label).id)
    if status:
        query = query.where(Image.status == status)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(SORTS[sort]).limit(limit).offset(offset))
    return list(rows), total


def images_by_id(*, session: Session, project: Project, image_ids: list[int]) -> dict[int, Image]:
    """The project's images among these ids, by id (ids of deleted images are left out)."""
    if not image_ids:
        return {}
    query = select(Image).where(Image.project_id == project.id, Image.id.in_(image_ids))
    return {image.id: image for image in session.scalars(query)}


def get_owned_image(*, session: Session, owner: User, image_id: int) -> Image:
    """An image of one of the owner's projects, or NotFoundError."""
    image = session.scalar(
        select(Image).join(Project, Project.id == Image.project_id)
        .where(Image.id == image_id, Project.owner_id == owner.id)
    )
    if image is None:
        raise NotFoundError(f"image {image_id} not found")
    return image


def update_image(
    *, session: Session, project: Project, image: Image, label: str | None, status: str | None
) -> Image:
    """Relabel or exclude/restore an image."""
    if label is not None:
        image.label_id = find_label(project=project, name=label).id
    if status is not None:
        if status not in IMAGE_STATUSES:
            raise InvalidInputError(f"status must be one of {', '.join(IMAGE_STATUSES)}")
        image.status = status
    session.flush()
    return image
