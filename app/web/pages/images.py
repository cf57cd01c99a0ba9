"""Dataset pages: uploads and imports, the image grid, review queue, duplicates, failures."""

import math
from typing import Annotated

from fastapi import Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from app.services import catalog, curation, datasets, label_assist, upload_history
from app.services.errors import InvalidInputError
from app.web.deps import SessionDep, SettingsDep, StorageDep
from app.web.limits import UPLOAD_BODY
from app.web.pages.common import (
    CsrfFormDep,
    PageProjectDep,
    SignedInDep,
    checked_form,
    error_page,
    page_router,
    project_context,
    redirect,
    render,
)
from app.web.security import from_another_site

router = page_router()
GRID_PAGE = 200
REVIEW_PAGE = 60
FAILED_PAGE = 500  # rejected upload files listed at most


def summary(result: datasets.AddResult) -> str:
    notice = (f"added {len(result.added)}, duplicates {len(result.duplicates)}, "
              f"rejected {len(result.rejected)}")
    if result.rejected:
        notice += " (each with its reason under “Uploads” below)"
    return notice


@router.post("/projects/{project_id}/upload", response_class=HTMLResponse,
             openapi_extra=UPLOAD_BODY)
async def project_upload(request: Request, project: PageProjectDep, user_session: SignedInDep,
                         session: SessionDep, storage: StorageDep, settings: SettingsDep):
    """The upload form without its script (which sends to the API). The user, the project
    and the form's origin are checked before the body is read; its csrf_token after."""
    if from_another_site(request):
        return error_page(request, 403, "Refused", "the form was sent from another site")
    form = await checked_form(request, user_session, max_files=settings.max_zip_members)
    try:
        label = str(form.get("label") or "") or None
        uploads = [datasets.Upload(filename=f.filename or "upload", data=f.file, label=label)
                   for f in form.getlist("files") if isinstance(f, UploadFile) and f.filename]
        upload_id = upload_history.record_id(form.get("upload_id"))
        result, _ = await run_in_threadpool(
            lambda: upload_history.upload_images(
                session=session, storage=storage, project=project, uploads=uploads,
                limits=datasets.Limits.from_settings(settings), upload_id=upload_id))
    finally:
        await form.close()
    await run_in_threadpool(lambda: label_assist.organize_after_upload(
        session=session, settings=settings, project_id=project.id, added=result.added))
    return redirect(f"/projects/{project.id}", notice=summary(result)[:1500])


@router.post("/projects/{project_id}/uploads/dismiss")
def uploads_dismiss(form: CsrfFormDep, project: PageProjectDep, session: SessionDep,
                    upload_id: Annotated[list[int], Form()] = (),
                    every: Annotated[bool, Form()] = False):
    """Dismiss uploads from the project page's history (a form per upload, or `every` one)."""
    upload_history.dismiss_uploads(session=session, project=project,
                                   upload_ids=None if every else list(upload_id))
    session.commit()
    return RedirectResponse(f"/projects/{project.id}#uploads", status_code=303)


@router.post("/projects/{project_id}/import", response_class=HTMLResponse,
             openapi_extra=UPLOAD_BODY)
async def project_import(request: Request, project: PageProjectDep, user_session: SignedInDep,
                         session: SessionDep, storage: StorageDep, settings: SettingsDep):
    """A dataset zip from the import form (checked as the upload form is)."""
    if from_another_site(request):
        return error_page(request, 403, "Refused", "the form was sent from another site")
    form = await checked_form(request, user_session, max_files=1)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise InvalidInputError("choose a dataset zip to import")
        result = await run_in_threadpool(
            lambda: upload_history.import_dataset(
                session=session, storage=storage, project=project, data=upload.file,
                filename=upload.filename, limits=datasets.Limits.from_settings(settings)))
    finally:
        await form.close()
    return redirect(f"/projects/{project.id}", notice="import: " + summary(result)[:1500])


@router.get("/projects/{project_id}/images", response_class=HTMLResponse)
def image_grid(request: Request, project: PageProjectDep, session: SessionDep,
               user_session: SignedInDep, label: str = "", status: str = "active",
               page: int = 1, per: int = GRID_PAGE):
    per, page = max(12, min(per, 2000)), max(1, page)
    images, total = catalog.list_images(
        session=session, project=project, label=label or None, status=status or None,
        limit=per, offset=(page - 1) * per)
    return render(request, "images.html", **project_context(
        session, user_session, project, "images", images=images, total=total, page=page,
        pages=max(1, math.ceil(total / per)), per=per, label=label, status=status,
        thumb_size=curation.thumbnail_size(160)))


@router.get("/projects/{project_id}/review", response_class=HTMLResponse)
def review_page(request: Request, project: PageProjectDep, session: SessionDep,
                user_session: SignedInDep, page: int = 1, reviewed: bool = False):
    """The images to review, or (`reviewed`) those a person already kept or fixed here."""
    page = max(1, page)
    model, items, total = curation.review_queue(session=session, project=project,
                                                limit=REVIEW_PAGE,
                                                offset=(page - 1) * REVIEW_PAGE,
                                                reviewed=reviewed)
    _, _, others = curation.review_queue(session=session, project=project, model=model,
                                         limit=0, reviewed=not reviewed)
    return render(request, "review.html", **project_context(
        session, user_session, project, "review", model=model, items=items, total=total,
        page=page, pages=max(1, math.ceil(total / REVIEW_PAGE)), reviewed=reviewed,
        others=others))


@router.get("/projects/{project_id}/duplicates", response_class=HTMLResponse)
def duplicates_page(request: Request, project: PageProjectDep, session: SessionDep,
                    user_session: SignedInDep):
    return render(request, "duplicates.html", **project_context(
        session, user_session, project, "duplicates",
        groups=catalog.duplicate_groups(session=session, project=project)))


@router.get("/projects/{project_id}/failed", response_class=HTMLResponse)
def failed_page(request: Request, project: PageProjectDep, session: SessionDep,
                user_session: SignedInDep):
    return render(request, "failed.html", **project_context(
        session, user_session, project, "failed",
        rows=curation.failed_verifications(session=session, project=project),
        uploads=upload_history.rejected_uploads(session=session, project=project,
                                                limit=FAILED_PAGE), limit=FAILED_PAGE))


@router.get("/projects/{project_id}/images/{image_id}", response_class=HTMLResponse)
def image_page(request: Request, project: PageProjectDep, image_id: int, session: SessionDep,
               user_session: SignedInDep):
    """One image at full size, where it came from (provenance, licence) and its history."""
    image = catalog.get_image(session=session, project=project, image_id=image_id)
    return render(request, "image.html", **project_context(
        session, user_session, project, "images", image=image,
        history=catalog.image_history(session=session, image=image),
        result=catalog.image_search_result(session=session, image=image)))
