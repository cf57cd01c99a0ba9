"""Dataset pages: uploads and imports, the image grid, review queue, duplicates, failures."""

import math
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from app.services import curation, datasets, exports
from app.services.errors import InvalidInputError
from app.web.deps import SessionDep, SettingsDep, StorageDep
from app.web.pages.common import (
    PageProjectDep,
    SignedInDep,
    csrf_form,
    page_router,
    project_context,
    redirect,
    render,
)

router = page_router()
GRID_PAGE = 200
REVIEW_PAGE = 60
UploadFormDep = Annotated[FormData, Depends(csrf_form(max_files=10_000))]
ImportFormDep = Annotated[FormData, Depends(csrf_form(max_files=1))]


def summary(result: datasets.AddResult) -> str:
    notice = (f"added {len(result.added)}, duplicates {len(result.duplicates)}, "
              f"rejected {len(result.rejected)}")
    if result.rejected:
        notice += ": " + "; ".join(f"{r['filename']}: {r['reason']}" for r in result.rejected[:5])
    return notice


@router.post("/projects/{project_id}/upload", response_class=HTMLResponse)
async def project_upload(form: UploadFormDep, project: PageProjectDep, session: SessionDep,
                         storage: StorageDep, settings: SettingsDep):
    label = str(form.get("label") or "") or None
    uploads = [datasets.Upload(filename=f.filename or "upload", data=await f.read(), label=label)
               for f in form.getlist("files") if isinstance(f, UploadFile) and f.filename]
    limits = datasets.Limits.from_settings(settings)

    def work():
        result = datasets.add_images(session=session, storage=storage, project=project,
                                     uploads=uploads, limits=limits)
        session.commit()
        return result

    result = await run_in_threadpool(work)
    return redirect(f"/projects/{project.id}", notice=summary(result)[:1500])


@router.post("/projects/{project_id}/import", response_class=HTMLResponse)
async def project_import(form: ImportFormDep, project: PageProjectDep, session: SessionDep,
                         storage: StorageDep, settings: SettingsDep):
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        raise InvalidInputError("choose a dataset zip to import")
    data, name = await upload.read(), upload.filename
    limits = datasets.Limits.from_settings(settings)

    def work():
        result = exports.import_dataset(session=session, storage=storage, project=project,
                                        data=data, filename=name, limits=limits)
        session.commit()
        return result

    result = await run_in_threadpool(work)
    return redirect(f"/projects/{project.id}", notice="import: " + summary(result)[:1500])


@router.get("/projects/{project_id}/images", response_class=HTMLResponse)
def image_grid(request: Request, project: PageProjectDep, session: SessionDep,
               user_session: SignedInDep, label: str = "", status: str = "active",
               page: int = 1, per: int = GRID_PAGE):
    per, page = max(12, min(per, 2000)), max(1, page)
    images, total = datasets.list_images(
        session=session, project=project, label=label or None, status=status or None,
        limit=per, offset=(page - 1) * per)
    return render(request, "images.html", **project_context(
        session, user_session, project, "images", images=images, total=total, page=page,
        pages=max(1, math.ceil(total / per)), per=per, label=label, status=status,
        thumb_size=curation.thumbnail_size(160)))


@router.get("/projects/{project_id}/review", response_class=HTMLResponse)
def review_page(request: Request, project: PageProjectDep, session: SessionDep,
                user_session: SignedInDep, page: int = 1):
    page = max(1, page)
    model, items, total = curation.review_queue(session=session, project=project,
                                                limit=REVIEW_PAGE,
                                                offset=(page - 1) * REVIEW_PAGE)
    return render(request, "review.html", **project_context(
        session, user_session, project, "review", model=model, items=items, total=total,
        page=page, pages=max(1, math.ceil(total / REVIEW_PAGE))))


@router.get("/projects/{project_id}/duplicates", response_class=HTMLResponse)
def duplicates_page(request: Request, project: PageProjectDep, session: SessionDep,
                    user_session: SignedInDep):
    return render(request, "duplicates.html", **project_context(
        session, user_session, project, "duplicates",
        groups=datasets.duplicate_groups(session=session, project=project)))


@router.get("/projects/{project_id}/failed", response_class=HTMLResponse)
def failed_page(request: Request, project: PageProjectDep, session: SessionDep,
                user_session: SignedInDep):
    return render(request, "failed.html", **project_context(
        session, user_session, project, "failed",
        rows=curation.failed_verifications(session=session, project=project)))
