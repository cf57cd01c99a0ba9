"""Images of a project: upload (files and zips of label folders), listing, relabelling."""

import io
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.config import Settings
from app.ml import near_duplicates
from app.ml.images import ImageRejected, NormalisedImage, normalise_image
from app.models import Image, Label, Project, User
from app.services.errors import InvalidInputError, NotFoundError
from app.services.projects import add_label, clean_name, find_label
from app.storage import Storage

IMAGE_STATUSES = ("active", "excluded")
PROVENANCE = ("image_url", "page_url", "title", "provider", "query", "licence")
SORTS = {
    "newest": Image.id.desc(),
    "oldest": Image.id.asc(),
}


@dataclass
class Upload:
    filename: str
    data: bytes
    label: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    ref: Any = None  # the caller's key for this upload, echoed in its result entry
    prepared: NormalisedImage | ImageRejected | None = None  # set by prepare_upload


@dataclass
class AddResult:
    added: list[dict] = field(default_factory=list)
    duplicates: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"added": self.added, "duplicates": self.duplicates, "rejected": self.rejected}


@dataclass(frozen=True)
class Limits:
    max_pixels: int
    max_zip_members: int
    max_zip_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> "Limits":
        return cls(max_pixels=settings.max_image_pixels,
                   max_zip_members=settings.max_zip_members,
                   max_zip_bytes=settings.max_zip_total_mb * 2**20)


def is_zip(data: bytes) -> bool:
    return data[:4] == b"PK\x03\x04"


def expand_zip(upload: Upload, *, limits: Limits, result: AddResult) -> list[Upload]:
    """The images inside a zip; a member's label is its parent folder's name."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(upload.data))
    except zipfile.BadZipFile:
        result.rejected.append({"filename": upload.filename, "reason": "not a readable zip file"})
        return []
    members = [m for m in archive.infolist() if not m.is_dir()]
    if len(members) > limits.max_zip_members:
        result.rejected.append(
            {
                "filename": upload.filename,
                "reason": f"zip has {len(members)} files (limit {limits.max_zip_members})",
            }
        )
        return []
    if sum(m.file_size for m in members) > limits.max_zip_bytes:
        result.rejected.append(
            {"filename": upload.filename, "reason": "zip expands beyond the size limit"}
        )
        return []
    uploads = []
    for member in members:
        name = f"{upload.filename}:{member.filename}"
        path = PurePosixPath(member.filename.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts:
            result.rejected.append({"filename": name, "reason": "unsafe path in zip"})
            continue
        if any(part.startswith(".") or part == "__MACOSX" for part in path.parts):
            continue
        label = path.parent.name or upload.label
        with archive.open(member) as handle:
            data = handle.read(member.file_size + 1)
        uploads.append(Upload(filename=name, data=data, label=label))
    return uploads


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


def add_images(
    *,
    session: Session,
    storage: Storage,
    project: Project,
    uploads: list[Upload],
    limits: Limits,
    source: str = "upload",
) -> AddResult:
    """Verify, normalise and store images; exact duplicates are reported, not stored twice."""
    result = AddResult()
    expanded: list[Upload] = []
    for upload in uploads:
        if upload.prepared is None and is_zip(upload.data):
            expanded.extend(expand_zip(upload, limits=limits, result=result))
        else:
            expanded.append(upload)
    labels = {label.name.lower(): label for label in project.labels}
    seen: dict[str, int | Image] = _stored_hashes(session=session, project=project,
                                                  uploads=expanded)
    near = _near_duplicate_index(session=session, project=project) if expanded else None
    unnumbered: list[tuple[dict, Image]] = []  # entries whose image is not flushed yet
    for upload in expanded:
        if not upload.label:
            result.rejected.append(
                _entry(upload, reason="no label: give `label`, or upload a zip of label folders")
            )
            continue
        try:
            label = labels.get(upload.label.strip().lower()) or _new_label(
                session=session, project=project, name=upload.label, labels=labels
            )
            image = _normalised(upload, limits=limits)
        except (ImageRejected, InvalidInputError) as exc:
            result.rejected.append(_entry(upload, reason=str(exc)))
            continue
        existing = seen.get(image.content_hash)
        if existing is None and upload.prepared is None:  # prepared ones were looked up
            existing = session.scalar(select(Image.id).where(
                Image.project_id == project.id, Image.content_hash == image.content_hash
            ))
        if existing:
            entry = _entry(upload, image_id=existing)
            result.duplicates.append(entry)
            if isinstance(existing, Image):  # added earlier in this call: id after the flush
                unnumbered.append((entry, existing))
            continue
        key = f"images/{project.id}/{uuid.uuid4().hex}.jpg"
        storage.put(key, image.data)
        row = Image(
            project_id=project.id,
            label_id=label.id,
            storage_key=key,
            content_hash=image.content_hash,
            phash=image.phash,
            width=image.width,
            height=image.height,
            original_format=image.format,
            original_filename=upload.filename[-500:],
            source=source,
            **_provenance(upload.provenance),
        )
        session.add(row)
        seen[image.content_hash] = row
        _join_near_duplicates(session=session, near=near, row=row)
        entry = _entry(upload, image_id=None, label=label.name)
        result.added.append(entry)
        unnumbered.append((entry, row))
    session.flush()  # one INSERT for the new rows; their ids fill the entries
    for entry, row in unnumbered:
        entry["image_id"] = row.id
    return result


def _normalised(upload: Upload, *, limits: Limits) -> NormalisedImage:
    if isinstance(upload.prepared, ImageRejected):
        raise upload.prepared
    return upload.prepared or normalise_image(upload.data, max_pixels=limits.max_pixels)


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
    id: int | None  # None until the new row is flushed
    group: str | None
    row: Image | None = None  # the new row, for those added in this call


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


def _join_near_duplicates(*, session: Session, near: _NearDuplicateIndex, row: Image) -> None:
    """Put a new image in one group with the images within near_duplicates.DISTANCE of it.

    A group is a connected component, as training's split sees it: an image near two
    groups joins them under the older one. A group is named after its first image (`g<id>`).
    """
    value = near_duplicates.parse(row.phash)
    if value is None:
        return
    neighbours = near.index.near(value)
    if neighbours:
        loose = [p for p in neighbours if near.images[p].group is None]
        joined = {near.images[p].group for p in neighbours} - {None}
        first = near.images[min(loose + [near.members[name][0] for name in joined])]
        if first.group is None and first.id is None:  # added in this call: flush for its id
            session.flush()
            first.id = first.row.id
        group = first.group or f"g{first.id}"
        members = near.members.setdefault(group, [])
        for old in joined - {group}:  # the image bridges groups: they become one
            session.execute(update(Image).where(Image.project_id == row.project_id,
                                                Image.duplicate_group == old)
                            .values(duplicate_group=group))
            members += near.members.pop(old)
        for position in loose:
            image = near.images[position]
            (image.row or session.get(Image, image.id)).duplicate_group = group
            members.append(position)
        members.sort()
        for position in members:
            near.images[position].group = group
        row.duplicate_group = group
    near.add(value, _Hashed(id=None, group=row.duplicate_group, row=row))


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


def _new_label(*, session: Session, project: Project, name: str, labels: dict) -> Label:
    label = add_label(session=session, project=project, name=clean_name(name, what="label name"))
    labels[label.name.lower()] = label
    return label


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
