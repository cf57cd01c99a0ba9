"""Curation API: bulk relabel/exclude with undo, review queue, thumbnails, export and import."""

from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from app.schemas import BulkIn, UploadDismissIn
from app.services import catalog, curation, datasets, exports, label_assist, upload_history
from app.web.deps import ProjectDep, SessionDep, SettingsDep, StorageDep, UserDep
from app.web.files import file_response
from app.web.limits import UPLOAD_BODY

router = APIRouter(prefix="/api/v1")


@router.post("/projects/{project_id}/images/bulk")
def bulk_update(body: BulkIn, project: ProjectDep, session: SessionDep):
    result = curation.bulk_update(session=session, project=project, image_ids=body.image_ids,
                                  label=body.label, status=body.status, reviewed=body.reviewed,
                                  inbox=body.inbox)
    session.commit()
    return result


@router.get("/projects/{project_id}/review")
def review(project: ProjectDep, session: SessionDep, limit: int = 60, offset: int = 0,
           reviewed: bool = False):
    """Images by out-of-sample loss: those not reviewed yet, or (`reviewed=true`) those a
    person already reviewed."""
    model, items, total = curation.review_queue(
        session=session, project=project, limit=max(1, min(limit, 500)), offset=max(0, offset),
        reviewed=reviewed)
    return {
        "model_id": model.id if model else None, "total": total,
        "items": [{"image_id": i.image.id, "label": i.current_label,
                   "given_label": i.prediction.given_label,
                   "predicted_label": i.prediction.predicted_label,
                   "confidence": i.prediction.confidence, "loss": i.prediction.loss,
                   "reviewed_at": (i.image.reviewed_at.isoformat() if i.image.reviewed_at
                                   else None),
                   "thumb_url": f"/api/v1/images/{i.image.id}/thumb?size=240"} for i in items],
    }


@router.get("/projects/{project_id}/failed")
def failed(project: ProjectDep, session: SessionDep):
    """Search results rejected or not downloaded (`source` "search"), then files uploads and
    imports rejected (`source` "upload" or "import": `filename`, `upload_id`, no URLs)."""
    searches = [{**row, "source": "search"}
                for row in curation.failed_verifications(session=session, project=project)]
    return searches + [
        {"id": None, "status": "rejected", "image_url": None, "page_url": None, "title": None,
         "provider": None, "query": None, "job_id": None, **row}
        for row in upload_history.rejected_uploads(session=session, project=project)]


@router.get("/projects/{project_id}/uploads")
def list_uploads(project: ProjectDep, session: SessionDep, dismissed: bool = False,
                 limit: int = 100, offset: int = 0):
    """The project's upload history, newest first: uploads not dismissed yet (`dismissed`:
    every one), each with its counts and every rejected file with its reason."""
    limit, offset = max(1, min(limit, 1000)), max(0, min(offset, 2**62))
    return {"uploads": [upload_history.upload_out(record) for record in
                        upload_history.list_uploads(session=session, project=project,
                                                    dismissed=dismissed, limit=limit,
                                                    offset=offset)]}


@router.post("/projects/{project_id}/uploads/dismiss")
def dismiss_uploads(body: UploadDismissIn, project: ProjectDep, session: SessionDep):
    """Hide uploads from the project page's history (the Failed page keeps their rejections)."""
    dismissed = upload_history.dismiss_uploads(session=session, project=project,
                                               upload_ids=body.upload_ids)
    session.commit()
    return {"dismissed": dismissed}


@router.get("/images/{image_id}/thumb")
def image_thumb(image_id: int, session: SessionDep, user: UserDep, storage: StorageDep,
                size: int = 240):
    image = catalog.get_owned_image(session=session, owner=user, image_id=image_id)
    key = curation.thumbnail(storage=storage, image=image, size=size)
    return file_response(storage, key, media_type="image/jpeg",
                         headers={"Cache-Control": "private, max-age=604800, immutable"})


@router.get("/projects/{project_id}/export")
def export(project: ProjectDep, session: SessionDep, storage: StorageDep,
           include_excluded: bool = True):
    handle = exports.export_dataset(session=session, storage=storage, project=project,
                                    include_excluded=include_excluded)

    def chunks():
        with handle:
            while block := handle.read(2**20):
                yield block

    name = exports.folder_name(project.name).replace('"', "").replace(" ", "-") or "dataset"
    ascii_name = name.encode("ascii", "ignore").decode() or "dataset"
    return StreamingResponse(chunks(), media_type="application/zip", headers={
        "Content-Disposition": f"attachment; filename=\"{ascii_name}.zip\"; "
                               f"filename*=UTF-8''{quote(name)}.zip"})


@router.post("/projects/{project_id}/imports", status_code=201, openapi_extra=UPLOAD_BODY)
async def import_zip(request: Request, project: ProjectDep, session: SessionDep,
                     storage: StorageDep, settings: SettingsDep):
    """A dataset zip as multipart `file` (read after the caller and project are checked)."""
    async with request.form(max_files=1, max_fields=10) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise HTTPException(422, "send the dataset zip as `file`")
        result = await run_in_threadpool(
            lambda: upload_history.import_dataset(
                session=session, storage=storage, project=project, data=upload.file,
                filename=upload.filename or "dataset.zip",
                limits=datasets.Limits.from_settings(settings)))
    await run_in_threadpool(lambda: label_assist.organize_after_upload(
        session=session, settings=settings, project_id=project.id, added=result.added))
    return result.as_dict()
