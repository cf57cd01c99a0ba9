"""Upload history: every upload's outcome (added, duplicates, each rejected file and why),
shown on the project page until a person dismisses it and on the Failed page for good.

One Upload click may send several requests (the page sends files in batches): the first
answer carries the record's id, and the next requests name it (`upload_id`) to add to it.
"""

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.models import Project, UploadRecord, utcnow
from app.services import datasets, exports
from app.services.archives import Limits
from app.storage import Storage

SOURCES = ("upload", "import")


def upload_images(*, session: Session, storage: Storage, project: Project,
                  uploads: list[datasets.Upload], limits: Limits,
                  upload_id: int | None = None) -> tuple[datasets.AddResult, UploadRecord]:
    """datasets.upload_images, its outcome recorded in the project's upload history (added to
    the record `upload_id` when it is one of this project's, else a new one)."""
    result = datasets.upload_images(session=session, storage=storage, project=project,
                                    uploads=uploads, limits=limits)
    record = record_upload(session=session, project=project, result=result,
                           label=uploads[0].label if uploads else None, upload_id=upload_id)
    session.commit()
    return result, record


def import_dataset(*, session: Session, storage: Storage, project: Project, data, filename: str,
                   limits: Limits) -> datasets.AddResult:
    """exports.import_dataset, its outcome recorded in the upload history."""
    result = exports.import_dataset(session=session, storage=storage, project=project,
                                    data=data, filename=filename, limits=limits)
    record_upload(session=session, project=project, result=result, source="import")
    session.commit()
    return result


def record_id(value: object) -> int | None:
    """An `upload_id` form field as an id (None when it is none: a new record)."""
    text = value.strip() if isinstance(value, str) else ""
    return int(text) if text.isdigit() and len(text) < 19 else None


def record_upload(*, session: Session, project: Project, result: datasets.AddResult,
                  label: str | None = None, source: str = "upload",
                  upload_id: int | None = None) -> UploadRecord:
    """Add an upload's outcome to the history (the caller commits)."""
    record = session.get(UploadRecord, upload_id) if upload_id else None
    if record is None or record.project_id != project.id or record.source != source:
        record = UploadRecord(project_id=project.id, source=source, label=label, added=0,
                              duplicates=0, rejected=[])
        session.add(record)
    record.added += len(result.added)
    record.duplicates += len(result.duplicates)
    record.rejected = [*record.rejected, *({"filename": r["filename"], "reason": r["reason"]}
                                           for r in result.rejected)]
    if label != record.label:
        record.label = None  # several labels (folders, or each batch its own)
    record.updated_at = utcnow()
    session.flush()
    return record


def _uploads(project: Project, dismissed: bool):
    query = select(UploadRecord).where(UploadRecord.project_id == project.id)
    return query if dismissed else query.where(UploadRecord.dismissed_at.is_(None))


def list_uploads(*, session: Session, project: Project, dismissed: bool = False,
                 limit: int = 100, offset: int = 0) -> list[UploadRecord]:
    """The project's uploads, newest first: those still shown (or, `dismissed`, every one)."""
    return list(session.scalars(_uploads(project, dismissed).order_by(UploadRecord.id.desc())
                                .limit(limit).offset(offset)))


def count_uploads(*, session: Session, project: Project) -> int:
    """How many of the project's uploads are still shown."""
    return session.scalar(select(func.count()).select_from(
        _uploads(project, dismissed=False).subquery()))


def dismiss_uploads(*, session: Session, project: Project,
                    upload_ids: list[int] | None) -> int:
    """Hide these uploads (None: all of them) from the project page (the Failed page keeps
    their rejections); how many were still shown."""
    condition = [UploadRecord.project_id == project.id, UploadRecord.dismissed_at.is_(None)]
    if upload_ids is not None:
        upload_ids = [i for i in upload_ids if 0 < i < 2**63]  # beyond a database integer
        if not upload_ids:
            return 0
        condition.append(UploadRecord.id.in_(upload_ids))
    changed = session.execute(update(UploadRecord).where(*condition)
                              .values(dismissed_at=utcnow()))
    return changed.rowcount


def rejected_uploads(*, session: Session, project: Project, limit: int = 500) -> list[dict]:
    """Every file an upload or import rejected, newest upload first, with its reason (the
    newest `limit`)."""
    rows = []
    query = (select(UploadRecord).where(UploadRecord.project_id == project.id)
             .order_by(UploadRecord.id.desc()))
    for record in session.scalars(query):
        for rejected in record.rejected:
            rows.append({"upload_id": record.id, "source": record.source,
                         "label": record.label, "filename": rejected["filename"],
                         "reason": rejected["reason"],
                         "created_at": record.created_at.isoformat()})
            if len(rows) >= limit:
                return rows
    return rows


def upload_out(record: UploadRecord) -> dict:
    return {"id": record.id, "source": record.source, "label": record.label,
            "added": record.added, "duplicates": record.duplicates,
            "rejected": record.rejected, "created_at": record.created_at.isoformat(),
            "dismissed_at": record.dismissed_at.isoformat() if record.dismissed_at else None}
