"""Cleaning a dataset: bulk relabel/exclude with undo, review queue, duplicates, thumbnails."""

import io
from dataclasses import dataclass

from PIL import Image as PILImage
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import (
    Image,
    ImagePrediction,
    Label,
    ModelVersion,
    Project,
    SearchResult,
    utcnow,
)
from app.services.catalog import IMAGE_STATUSES, record_change
from app.services.errors import InvalidInputError, NotFoundError
from app.services.projects import find_label
from app.storage import Storage, StorageError

MAX_BULK = 5_000
THUMB_SIZES = (96, 160, 240, 320, 480)


def bulk_update(
    *,
    session: Session,
    project: Project,
    image_ids: list[int],
    label: str | None = None,
    status: str | None = None,
    reviewed: bool | None = None,
    inbox: bool = False,
) -> dict:
    """Relabel (or, `inbox`, take the label off: back to the inbox) and/or exclude many
    images, and/or mark them reviewed (the review queue leaves them out) or not; the answer
    says how to undo it.

    `undo` holds batches in the same shape as this call's input: replaying each through
    `bulk_update` puts every changed image back as it was.
    """
    if label is not None and inbox:
        raise InvalidInputError("give either a `label` or `inbox`, not both")
    if label is None and status is None and reviewed is None and not inbox:
        raise InvalidInputError("give a `label`, `inbox`, a `status` or `reviewed` to apply")
    if status is not None and status not in IMAGE_STATUSES:
        raise InvalidInputError(f"status must be one of {', '.join(IMAGE_STATUSES)}")
    if not image_ids:
        raise InvalidInputError("select at least one image")
    if len(image_ids) > MAX_BULK:
        raise InvalidInputError(f"at most {MAX_BULK} images at once")
    label_row = find_label(project=project, name=label) if label is not None else None
    wanted = set(image_ids)
    images = list(session.scalars(
        select(Image).where(Image.project_id == project.id, Image.id.in_(wanted))
    ))
    missing = wanted - {image.id for image in images}
    if missing:
        raise NotFoundError(f"images not in this project: {', '.join(map(str, sorted(missing)))}")
    names = {row.id: row.name for row in project.labels}
    before: dict[tuple[str | None, str, bool, bool], list[int]] = {}
    changed = []
    now = utcnow()
    for image in sorted(images, key=lambda i: i.id):
        new_label = None if inbox else label_row.id if label_row else image.label_id
        new_status = status or image.status
        was_reviewed = image.reviewed_at is not None
        new_reviewed = was_reviewed if reviewed is None else reviewed
        if (new_label, new_status, new_reviewed) == (image.label_id, image.status, was_reviewed):
            continue
        from_inbox = image.label_id is None and new_label is not None
        before.setdefault((names.get(image.label_id), image.status, was_reviewed, from_inbox),
                          []).append(image.id)
        if new_label != image.label_id:
            record_change(session=session, image=image, kind="label",
                          before=names.get(image.label_id), after=names.get(new_label))
        if new_status != image.status:
            record_change(session=session, image=image, kind="status", before=image.status,
                          after=new_status)
        image.label_id, image.status = new_label, new_status
        if new_reviewed != was_reviewed:
            image.reviewed_at = now if new_reviewed else None
        changed.append(image.id)
    session.flush()
    batches = [{"image_ids": ids, "label": old_label, "status": old_status,
                "reviewed": old_reviewed, **({"inbox": True} if from_inbox else {})}
               for (old_label, old_status, old_reviewed, from_inbox), ids in before.items()]
    return {"changed": changed, "undo": {"batches": batches}}


def latest_model(*, session: Session, project: Project) -> ModelVersion | None:
    """The project's newest finished model version."""
    query = (select(ModelVersion)
             .where(ModelVersion.project_id == project.id, ModelVersion.storage_prefix != "")
             .order_by(ModelVersion.id.desc()).limit(1))
    return session.scalar(query)


@dataclass
class ReviewItem:
    image: Image
    prediction: ImagePrediction

    @property
    def current_label(self) -> str | None:
        return self.image.label.name if self.image.label else None


def review_queue(
    *, session: Session, project: Project, model: ModelVersion | None = None,
    limit: int = 60, offset: int = 0, reviewed: bool = False,
) -> tuple[ModelVersion | None, list[ReviewItem], int]:
    """Active images ranked by the model's out-of-sample loss, most suspicious first: those
    not reviewed yet, or (`reviewed`) only those a person already reviewed."""
    model = model or latest_model(session=session, project=project)
    if model is None:
        return None, [], 0
    seen = Image.reviewed_at.is_not(None) if reviewed else Image.reviewed_at.is_(None)
    query = (select(ImagePrediction, Image)
             .join(Image, Image.id == ImagePrediction.image_id)
             .where(ImagePrediction.model_id == model.id, Image.status == "active",
                    Image.project_id == project.id, seen))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.execute(
        query.order_by(ImagePrediction.loss.desc(), Image.id).limit(limit).offset(offset)
    )
    return model, [ReviewItem(image=image, prediction=p) for p, image in rows], total


def failed_verifications(*, session: Session, project: Project, limit: int = 500) -> list[dict]:
    """Search results that were rejected or failed to download, with the reason and label."""
    query = (select(SearchResult, Label.name)
             .outerjoin(Label, Label.id == SearchResult.label_id)
             .where(SearchResult.project_id == project.id,
                    SearchResult.status.in_(("rejected", "failed")))
             .order_by(SearchResult.id.desc()).limit(limit))
    return [
        {"id": row.id, "label": name, "status": row.status, "reason": row.reason or "",
         "image_url": row.image_url, "page_url": row.page_url, "title": row.title,
         "provider": row.provider, "query": row.query, "job_id": row.job_id}
        for row, name in session.execute(query)
    ]


def sample_images(*, session: Session, project: Project, per_label: int = 6) -> dict[str, list]:
    """A few active images of each label, for the project page's sample strips."""
    samples = {}
    for label in project.labels:
        samples[label.name] = list(session.scalars(
            select(Image).where(Image.label_id == label.id, Image.status == "active")
            .order_by(Image.id.desc()).limit(per_label)
        ))
    return samples


def thumbnail_size(size: int) -> int:
    """The smallest offered thumbnail size at least `size` (so caches stay few)."""
    return next((s for s in THUMB_SIZES if s >= size), THUMB_SIZES[-1])


def thumbnail(*, storage: Storage, image: Image, size: int) -> str:
    """The storage key of a JPEG thumbnail (short side `size`), made once and cached."""
    size = thumbnail_size(size)
    key = f"thumbs/{image.storage_key}-{size}.jpg"
    if storage.exists(key):
        return key
    data = storage.read(image.storage_key)  # StorageError when the file is gone
    try:
        with PILImage.open(io.BytesIO(data)) as source:
            source.draft("RGB", (size, size))
            picture = source.convert("RGB")
    except (OSError, ValueError, PILImage.DecompressionBombError) as exc:
        raise StorageError(f"the stored image {image.storage_key} is damaged: {exc}") from exc
    scale = size / min(picture.size)
    if scale < 1:
        picture = picture.resize((max(1, round(picture.width * scale)),
                                  max(1, round(picture.height * scale))),
                                 PILImage.Resampling.BILINEAR, reducing_gap=2.0)
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=80, optimize=True)
    storage.put(key, out.getvalue())
    return key
