"""A deployment's logged photos (kept when its owner turns `log_images` on): listing them and
adding them to the deployment's project through the upload pipeline, to the inbox or with a
label."""

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import Deployment, PredictionLog, Project
from app.services import datasets
from app.services.archives import Limits
from app.services.errors import NotFoundError
from app.services.projects import clean_name
from app.storage import Storage, StorageError

SOURCE = "prediction log"  # Image.source of the photos added from here
LOW_CONFIDENCE = 0.7  # `only=low_confidence`: the top probability below this
MAX_ADD = 500  # logged photos one add call takes
BATCH = 50  # logged photos read and added together
Only = Literal["all", "unknown", "low_confidence"]


@dataclass
class LogPage:
    total: int
    items: list[PredictionLog]


def _logged(deployment: Deployment, only: Only):
    query = select(PredictionLog).where(PredictionLog.deployment_id == deployment.id,
                                        PredictionLog.image_key.is_not(None))
    if only == "unknown":
        query = query.where(PredictionLog.unknown.is_(True))
    elif only == "low_confidence":
        query = query.where(PredictionLog.confidence < LOW_CONFIDENCE)
    return query


def list_logged(*, session: Session, deployment: Deployment, only: Only = "all",
                limit: int = 60, offset: int = 0) -> LogPage:
    """The deployment's logged predictions that kept a photo, newest first."""
    query = _logged(deployment, only)
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    rows = session.scalars(query.order_by(PredictionLog.created_at.desc(), PredictionLog.id.desc())
                           .limit(limit).offset(offset))
    return LogPage(total=total or 0, items=list(rows))


def get_logged(*, session: Session, deployment: Deployment, log_id: int) -> PredictionLog:
    """One of the deployment's logged predictions that kept a photo, or NotFoundError."""
    row = session.scalar(_logged(deployment, "all").where(PredictionLog.id == log_id))
    if row is None:
        raise NotFoundError(f"no logged photo {log_id} in deployment {deployment.slug!r}")
    return row


def add_to_project(*, session: Session, storage: Storage, deployment: Deployment,
                   log_ids: list[int], label: str | None, limits: Limits
                   ) -> datasets.AddResult:
    """Copy logged photos into the deployment's project (the inbox when `label` is None) by
    datasets.upload_images: the same checks, hashes and duplicate detection; ids that are
    not this deployment's logged photos are rejected, as are photos no longer stored."""
    if label is not None:
        clean_name(label, what="label name")  # 422 before any photo is read
    wanted = list(dict.fromkeys(log_ids))
    rows = {row.id: row for row in session.scalars(
        _logged(deployment, "all").where(PredictionLog.id.in_(wanted)))}
    project = session.get(Project, deployment.project_id)
    result = datasets.AddResult()
    result.rejected += [_refused(log_id, "not a logged photo of this deployment")
                        for log_id in wanted if log_id not in rows]
    # (id, stored key, provenance title) read now: each batch's commit expires the rows
    found = [(log_id, rows[log_id].image_key, _title(deployment, rows[log_id]))
             for log_id in wanted if log_id in rows]
    for start in range(0, len(found), BATCH):  # a batch's photos in memory at a time
        uploads = []
        for log_id, key, title in found[start:start + BATCH]:
            try:
                data = storage.read(key)
            except StorageError:
                result.rejected.append(_refused(log_id, "the logged photo is no longer stored"))
                continue
            uploads.append(datasets.Upload(
                filename=f"prediction-{log_id}.jpg", data=data, label=label, ref=log_id,
                source=SOURCE, provenance={"provider": SOURCE, "title": title}))
        batch = datasets.upload_images(session=session, storage=storage, project=project,
                                       uploads=uploads, limits=limits)
        result.added += batch.added
        result.duplicates += batch.duplicates
        result.rejected += batch.rejected
    for entry in result.added + result.duplicates + result.rejected:
        entry["log_id"] = entry.pop("ref", entry.get("log_id"))
    return result


def _refused(log_id: int, reason: str) -> dict:
    return {"filename": f"prediction-{log_id}.jpg", "log_id": log_id, "reason": reason}


def _title(deployment: Deployment, row: PredictionLog) -> str:
    answer = "none of these" if row.unknown else row.label
    return (f"deployment {deployment.slug}, prediction {row.id} of "
            f"{row.created_at:%Y-%m-%d %H:%M} UTC: {answer} ({row.confidence:.2f})")
