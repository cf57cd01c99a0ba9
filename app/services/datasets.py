"""Images of a project: upload (files and zips of label folders), listing, relabelling."""

import io
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.ml.images import ImageRejected, dhash_distance, normalise_image
from app.models import Image, Label, Project
from app.services.errors import InvalidInputError, NotFoundError
from app.services.projects import add_label, clean_name, find_label
from app.storage import LocalStorage

IMAGE_STATUSES = ("active", "excluded")
NEAR_DUPLICATE_DISTANCE = 5
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


def add_images(
    *,
    session: Session,
    storage: LocalStorage,
    project: Project,
    uploads: list[Upload],
    limits: Limits,
    source: str = "upload",
) -> AddResult:
    """Verify, normalise and store images; exact duplicates are reported, not stored twice."""
    result = AddResult()
    expanded: list[Upload] = []
    for upload in uploads:
        if is_zip(upload.data):
            expanded.extend(expand_zip(upload, limits=limits, result=result))
        else:
            expanded.append(upload)
    labels = {label.name.lower(): label for label in project.labels}
    seen: dict[str, int] = {}
    hashes = _phash_index(session=session, project=project) if expanded else []
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
            image = normalise_image(upload.data, max_pixels=limits.max_pixels)
        except (ImageRejected, InvalidInputError) as exc:
            result.rejected.append(_entry(upload, reason=str(exc)))
            continue
        existing = seen.get(image.content_hash) or session.scalar(
            select(Image.id).where(
                Image.project_id == project.id, Image.content_hash == image.content_hash
            )
        )
        if existing:
            result.duplicates.append(_entry(upload, image_id=existing))
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
            duplicate_group=_near_duplicate_group(session=session, hashes=hashes,
                                                  phash=image.phash),
            **_provenance(upload.provenance),
        )
        session.add(row)
        session.flush()
        seen[image.content_hash] = row.id
        hashes.append([row.id, row.phash, row.duplicate_group])
        result.added.append(_entry(upload, image_id=row.id, label=label.name))
    return result


def _entry(upload: Upload, **values: Any) -> dict:
    entry = {"filename": upload.filename, **values}
    if upload.ref is not None:
        entry["ref"] = upload.ref
    return entry


def _phash_index(*, session: Session, project: Project) -> list[list]:
    """[id, phash, duplicate_group] of the project's images, for near-duplicate lookups."""
    rows = session.execute(
        select(Image.id, Image.phash, Image.duplicate_group)
        .where(Image.project_id == project.id, Image.phash != "")
        .order_by(Image.id)
    )
    return [list(row) for row in rows]


def _near_duplicate_group(*, session: Session, hashes: list[list], phash: str) -> str | None:
    """The group of the nearest image within NEAR_DUPLICATE_DISTANCE (that image joins it).

    A group is named after its first image (`g<id>`), as training's split names them.
    """
    if not phash:
        return None
    best, best_distance = None, NEAR_DUPLICATE_DISTANCE + 1
    for entry in hashes:
        distance = dhash_distance(entry[1], phash)
        if distance < best_distance:
            best, best_distance = entry, distance
    if best is None:
        return None
    if best[2] is None:
        best[2] = f"g{best[0]}"
        session.get(Image, best[0]).duplicate_group = best[2]
    return best[2]


def duplicate_groups(*, session: Session, project: Project) -> list[list[Image]]:
    """The project's near-duplicate groups (two or more images each), largest first."""
    rows = session.scalars(
        select(Image)
        .where(Image.project_id == project.id, Image.duplicate_group.is_not(None))
        .order_by(Image.id)
    )
    groups: dict[str, list[Image]] = {}
    for image in rows:
        groups.setdefault(image.duplicate_group, []).append(image)
    found = [images for images in groups.values() if len(images) > 1]
    return sorted(found, key=lambda images: (-len(images), images[0].id))


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


def get_image(*, session: Session, project_ids: set[int] | None, image_id: int) -> Image:
    """An image, when it belongs to one of `project_ids`."""
    image = session.get(Image, image_id)
    if image is None or (project_ids is not None and image.project_id not in project_ids):
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
