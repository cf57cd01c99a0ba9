"""Adding images to a project: uploads (files and zips of label folders), imports, downloads.

An upload computes first and writes once. Every file of a request is read, expanded (a zip
member by member) and normalised under one budget for the whole request, and only the
normalised JPEGs are kept. Then the new files go to storage and their rows are inserted in
one short transaction. A row that another request inserted meanwhile makes a duplicate, not
an error, and the files of rows that are not committed are deleted again.
"""

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from sqlalchemy import event, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, SessionTransaction

from app.ml import near_duplicates
from app.ml.images import ImageRejected, NormalisedImage, normalise_image
from app.models import Image, Label, Project
from app.services.archives import (
    Limits,
    RequestBudget,
    is_zip,
    open_zip,
    read_file,
    read_member,
    zip_files,
)
from app.services.errors import InvalidInputError
from app.services.projects import clean_name
from app.storage import Storage

log = logging.getLogger(__name__)
PROVENANCE = ("image_url", "page_url", "title", "provider", "query", "licence")
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
                upload, lambda upload=upload: read_file(upload.data, budget=budget),
                budget=budget))
    return ready


def _expand_zip(upload: Upload, *, budget: RequestBudget, result: AddResult) -> list[Upload]:
    """The images of a zip, normalised; a member's label is its parent folder's name."""
    archive = open_zip(upload.data, filename=upload.filename, budget=budget,
                       rejected=result.rejected)
    if archive is None:
        return []
    with archive:
        return [
            prepared_upload(
                Upload(filename=f"{upload.filename}:{info.filename}", data=b"",
                       label=path.parent.name or upload.label),
                lambda info=info: read_member(archive, info, budget=budget), budget=budget)
            for info, path in zip_files(archive, filename=upload.filename, budget=budget,
                                        rejected=result.rejected)
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
    new: dict[str, tuple[Upload, str | None]] = {}  # content hash -> (upload, label name)
    waiting: list[tuple[Upload, str]] = []  # (upload, hash) whose image is new in this call
    for upload in ready:
        image = upload.prepared
        if isinstance(image, ImageRejected):
            result.rejected.append(_entry(upload, reason=str(image)))
            continue
        try:
            label_name = _label_name(upload.label, labels)  # None: the image goes to the inbox
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


def _label_name(given: str | None, labels: dict[str, Label]) -> str | None:
    """The label an upload names (an existing one, whatever its case, or a new clean name),
    or None when it names none: the inbox."""
    if not given or not given.strip():
        return None
    label = labels.get(given.strip().lower())
    return label.name if label else clean_name(given, what="label name")


@dataclass
class _Ids:
    inserted: dict[str, int]  # content hash -> id of the rows this call inserted
    all: dict[str, int]  # ... and of those another transaction inserted first


def _insert_images(*, session: Session, storage: Storage, project: Project,
                   new: dict[str, tuple[Upload, str | None]], labels: dict[str, Label],
                   source: str) -> _Ids:
    """Write the new images' files, then insert their rows (a conflict on the content hash:
    inserted by another transaction since the lookup, its file is deleted again)."""
    keys = {content_hash: f"images/{project.id}/{uuid.uuid4().hex}.jpg" for content_hash in new}
    for content_hash, (upload, _) in new.items():
        _delete_unless_committed(session, storage, keys[content_hash])
        storage.put(keys[content_hash], upload.prepared.data)
    near = _near_duplicate_index(session=session, project=project)
    label_ids = _label_ids(session=session, project=project, labels=labels,
                           names={name for _, name in new.values() if name})
    rows = []
    for content_hash in sorted(new):  # one order for every transaction: no deadlocks
        upload, label_name = new[content_hash]
        image = upload.prepared
        rows.append({
            "project_id": project.id,
            "label_id": label_ids[label_name.lower()] if label_name else None,
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


def _provenance(values: dict[str, Any]) -> dict[str, Any]:
    widths = {"provider": 50, "query": 500, "licence": 100}
    return {key: str(values[key])[: widths.get(key, 4000)] for key in PROVENANCE
            if values.get(key)}


