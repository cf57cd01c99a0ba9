"""The JSON API v1: routes parse, call one service, shape the answer."""


from fastapi import APIRouter, HTTPException, Request, Response
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from app.models import Image, Project, User
from app.schemas import (
    ApiKeyIn,
    ImagePatch,
    LabelIn,
    LabelPatch,
    ProjectIn,
    ProjectPatch,
    SessionIn,
    UserIn,
)
from app.services import auth, catalog, datasets, label_assist, projects, upload_history
from app.web.deps import (
    SESSION_COOKIE,
    AdminDep,
    ProjectDep,
    SessionDep,
    SettingsDep,
    StorageDep,
    UserDep,
)
from app.web.files import file_response
from app.web.limits import UPLOAD_BODY
from app.web.security import SignInGuardDep, client_ip, refuse_other_sites, throttled

router = APIRouter(prefix="/api/v1")


def user_out(user: User) -> dict:
    return {"id": user.id, "email": user.email, "is_admin": user.is_admin}


def project_out(session, project: Project) -> dict:
    return {
        "id": project.id,
        "name": project.name,
        "created_at": project.created_at.isoformat(),
        "labels": [label_out(label) for label in project.labels],
        "image_counts": projects.image_counts(session=session, project=project),
    }


def label_out(label) -> dict:
    return {"id": label.id, "name": label.name, "query": label.query}


def image_out(image: Image) -> dict:
    return {
        "id": image.id,
        "project_id": image.project_id,
        "label": image.label.name if image.label else None,
        "status": image.status,
        "width": image.width,
        "height": image.height,
        "content_hash": image.content_hash,
        "phash": image.phash,
        "source": image.source,
        "original_filename": image.original_filename,
        "original_format": image.original_format,
        "image_url": image.image_url,
        "page_url": image.page_url,
        "title": image.title,
        "provider": image.provider,
        "query": image.query,
        "licence": image.licence,
        "created_at": image.created_at.isoformat(),
        "reviewed_at": image.reviewed_at.isoformat() if image.reviewed_at else None,
        "file_url": f"/api/v1/images/{image.id}/file",
    }


@router.get("/health")
def health(session: SessionDep) -> dict:
    session.execute(text("SELECT 1"))
    return {"status": "ok", "database": "ok"}


@router.post("/session")
async def login(body: SessionIn, request: Request, response: Response, session: SessionDep,
                settings: SettingsDep, guard: SignInGuardDep):
    refuse_other_sites(request)
    try:
        user = await guard.authenticate(session=session, email=body.email,
                                        password=body.password, ip=client_ip(request))
    except auth.SignInThrottled as exc:
        raise throttled(exc) from exc
    except auth.AuthError as exc:
        raise HTTPException(401, str(exc)) from exc
    token, csrf = await run_in_threadpool(_start_session, session, user, settings.session_days)
    response.set_cookie(
        SESSION_COOKIE, token, httponly=True, samesite="lax", secure=settings.cookie_secure,
        max_age=settings.session_days * 86400,
    )
    return {"user": user_out(user), "csrf_token": csrf}


def _start_session(session, user: User, days: int) -> tuple[str, str]:
    token, csrf = auth.start_session(session=session, user=user, days=days)
    session.commit()
    return token, csrf


@router.delete("/session", status_code=204)
def logout(request: Request, response: Response, session: SessionDep, user: UserDep):
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        auth.end_session(session=session, token=token)
        session.commit()
    response.delete_cookie(SESSION_COOKIE)


@router.post("/users", status_code=201)
def create_user(body: UserIn, session: SessionDep, admin: AdminDep):
    user = auth.create_user(
        session=session, email=body.email, password=body.password, is_admin=body.is_admin
    )
    session.commit()
    return user_out(user)


@router.post("/api-keys", status_code=201)
def create_api_key(session: SessionDep, user: UserDep, body: ApiKeyIn | None = None):
    key = auth.create_api_key(session=session, user=user, name=body.name if body else "")
    session.commit()
    return {"key": key, "note": "shown once: store it now"}


# --- projects, labels, images ---------------------------------------------------------------


@router.post("/projects", status_code=201)
def create_project(body: ProjectIn, session: SessionDep, user: UserDep):
    project = projects.create_project(
        session=session, owner=user, name=body.name, labels=body.labels
    )
    session.commit()
    return project_out(session, project)


@router.get("/projects")
def list_projects(session: SessionDep, user: UserDep):
    return [project_out(session, p) for p in projects.list_projects(session=session, owner=user)]


@router.get("/projects/{project_id}")
def get_project(project: ProjectDep, session: SessionDep):
    return project_out(session, project)


@router.patch("/projects/{project_id}")
def rename_project(body: ProjectPatch, project: ProjectDep, session: SessionDep):
    projects.rename_project(session=session, project=project, name=body.name)
    session.commit()
    return project_out(session, project)


@router.delete("/projects/{project_id}", status_code=204)
def delete_project(project: ProjectDep, session: SessionDep, storage: StorageDep):
    projects.delete_project(session=session, storage=storage, project=project)


@router.post("/projects/{project_id}/labels", status_code=201)
def add_label(body: LabelIn, project: ProjectDep, session: SessionDep):
    label = projects.add_label(session=session, project=project, name=body.name, query=body.query)
    session.commit()
    return label_out(label)


@router.patch("/projects/{project_id}/labels/{label_id}")
def update_label(label_id: int, body: LabelPatch, project: ProjectDep, session: SessionDep):
    label = projects.get_label(project=project, label_id=label_id)
    projects.update_label(session=session, project=project, label=label, name=body.name,
                          query=body.query)
    session.commit()
    return label_out(label)


@router.delete("/projects/{project_id}/labels/{label_id}")
def delete_label(label_id: int, project: ProjectDep, session: SessionDep) -> dict:
    """Delete a label; its images stay in the project, unlabelled (`unlabelled`: how many),
    left out of training until relabelled."""
    label = projects.get_label(project=project, label_id=label_id)
    unlabelled = projects.delete_label(session=session, project=project, label=label)
    session.commit()
    return {"unlabelled": unlabelled}


@router.post("/projects/{project_id}/images", status_code=201, openapi_extra=UPLOAD_BODY)
async def upload_images(
    request: Request, project: ProjectDep, session: SessionDep,
    storage: StorageDep, settings: SettingsDep,
):
    """Images, or zips of label folders, as multipart `files` (`label`: for loose images;
    without it they go to the inbox, as do the files at a zip's root).

    The outcome is kept in the project's upload history; `upload_id` in the answer names its
    record, and a later request that sends it (a form field) adds to the same record.

    The caller, CSRF and the project are checked before the body is read: the form is read
    here, not declared as File parameters (FastAPI parses those before the dependencies).
    """
    async with request.form(max_files=settings.max_zip_members, max_fields=100) as form:
        files = [f for f in form.getlist("files") + form.getlist("file")
                 if isinstance(f, UploadFile)]
        if not files:
            raise HTTPException(422, "send one or more images (or zips of label folders) "
                                     "as `files`")
        label = form.get("label")
        label = label if isinstance(label, str) and label.strip() else None
        uploads = [datasets.Upload(filename=f.filename or "upload", data=f.file, label=label)
                   for f in files]
        upload_id = upload_history.record_id(form.get("upload_id"))
        result, record = await run_in_threadpool(
            lambda: upload_history.upload_images(
                session=session, storage=storage, project=project, uploads=uploads,
                limits=datasets.Limits.from_settings(settings), upload_id=upload_id))
    await run_in_threadpool(lambda: label_assist.organize_after_upload(
        session=session, settings=settings, project_id=project.id, added=result.added))
    return {**result.as_dict(), "upload_id": record.id}


@router.get("/projects/{project_id}/images")
def list_images(
    project: ProjectDep, session: SessionDep, label: str | None = None,
    status: str | None = None, sort: str = "oldest", limit: int = 100, offset: int = 0,
):
    limit, offset = max(1, min(limit, 1000)), max(0, offset)
    images, total = catalog.list_images(
        session=session, project=project, label=label, status=status, sort=sort,
        limit=limit, offset=offset,
    )
    return {"total": total, "limit": limit, "offset": offset,
            "images": [image_out(image) for image in images]}


def _owned_image(session, user: User, image_id: int) -> tuple[Image, Project]:
    image = catalog.get_owned_image(session=session, owner=user, image_id=image_id)
    return image, session.get(Project, image.project_id)


@router.patch("/images/{image_id}")
def update_image(image_id: int, body: ImagePatch, session: SessionDep, user: UserDep):
    image, project = _owned_image(session, user, image_id)
    catalog.update_image(
        session=session, project=project, image=image, label=body.label, status=body.status,
        reviewed=body.reviewed,
    )
    session.commit()
    return image_out(image)


@router.get("/images/{image_id}/file")
def image_file(image_id: int, session: SessionDep, user: UserDep, storage: StorageDep):
    image, _ = _owned_image(session, user, image_id)
    return file_response(storage, image.storage_key, media_type="image/jpeg",
                         headers={"Cache-Control": "private, max-age=86400"})


# --- jobs -----------------------------------------------------------------------------------


