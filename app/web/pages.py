"""HTML pages: sign-in, projects, a project's dataset/training/models, and the demo page."""

import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from app.models import UserSession
from app.services import auth, datasets, deployments, jobs, projects, training
from app.services.errors import ConflictError, InvalidInputError, NotFoundError
from app.web.deps import SESSION_COOKIE, SessionDep, SettingsDep, StorageDep
from app.web.paths import TEMPLATES_DIR

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=TEMPLATES_DIR)


class SignInRequired(Exception):
    """The page needs a signed-in user."""


def page_session(request: Request, session: SessionDep) -> UserSession | None:
    token = request.cookies.get(SESSION_COOKIE)
    return auth.user_session_for_token(session=session, token=token) if token else None


PageSessionDep = Annotated[UserSession | None, Depends(page_session)]


def signed_in(user_session: PageSessionDep) -> UserSession:
    if user_session is None:
        raise SignInRequired
    return user_session


SignedInDep = Annotated[UserSession, Depends(signed_in)]


def check_csrf(user_session: UserSession, token: str) -> None:
    if not secrets.compare_digest(token, user_session.csrf_token):
        raise InvalidInputError("the form expired: reload the page and try again")


def render(request: Request, name: str, status: int = 200, **context) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context, status_code=status)


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


@router.get("/", response_class=HTMLResponse)
def home(user_session: PageSessionDep):
    return redirect("/projects" if user_session else "/login")


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request):
    return render(request, "login.html", error=None)


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, session: SessionDep, settings: SettingsDep,
          email: Annotated[str, Form()], password: Annotated[str, Form()]):
    try:
        user = auth.authenticate(session=session, email=email, password=password)
    except auth.AuthError as exc:
        return render(request, "login.html", status=401, error=str(exc), email=email)
    token, _ = auth.start_session(session=session, user=user, days=settings.session_days)
    session.commit()
    response = redirect("/projects")
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="lax",
                        secure=settings.cookie_secure, max_age=settings.session_days * 86400)
    return response


@router.post("/logout")
def logout(request: Request, session: SessionDep, user_session: SignedInDep,
           csrf_token: Annotated[str, Form()]):
    check_csrf(user_session, csrf_token)
    auth.end_session(session=session, token=request.cookies.get(SESSION_COOKIE, ""))
    session.commit()
    response = redirect("/login")
    response.delete_cookie(SESSION_COOKIE)
    return response


@router.get("/projects", response_class=HTMLResponse)
def project_list(request: Request, session: SessionDep, user_session: SignedInDep):
    owned = projects.list_projects(session=session, owner=user_session.user)
    rows = [(p, projects.image_counts(session=session, project=p)) for p in owned]
    return render(request, "projects.html", user=user_session.user,
                  csrf_token=user_session.csrf_token, rows=rows, error=None)


@router.post("/projects")
def project_create(session: SessionDep, user_session: SignedInDep,
                   name: Annotated[str, Form()], labels: Annotated[str, Form()] = "",
                   csrf_token: Annotated[str, Form()] = ""):
    check_csrf(user_session, csrf_token)
    names = [line.strip() for line in labels.replace(",", "\n").splitlines() if line.strip()]
    project = projects.create_project(session=session, owner=user_session.user, name=name,
                                      labels=names)
    session.commit()
    return redirect(f"/projects/{project.id}")


@router.get("/projects/{project_id}", response_class=HTMLResponse)
def project_page(request: Request, project_id: int, session: SessionDep,
                 user_session: SignedInDep, settings: SettingsDep, notice: str = ""):
    project = projects.get_project(session=session, owner=user_session.user,
                                   project_id=project_id)
    project_jobs = jobs.list_jobs(session=session, project=project, limit=10)
    for job in project_jobs:
        jobs.fail_if_stale(job=job, stale_seconds=settings.job_stale_seconds)
    session.commit()
    return render(
        request, "project.html", user=user_session.user, csrf_token=user_session.csrf_token,
        project=project, counts=projects.image_counts(session=session, project=project),
        jobs=project_jobs, models=deployments.list_models(session=session, project=project),
        deployments=deployments.list_deployments(session=session, project=project),
        notice=notice,
    )


@router.post("/projects/{project_id}/upload", response_class=HTMLResponse)
async def project_upload(request: Request, project_id: int, session: SessionDep,
                         user_session: SignedInDep, storage: StorageDep, settings: SettingsDep):
    form = await request.form(max_files=10_000)
    check_csrf(user_session, str(form.get("csrf_token", "")))
    project = projects.get_project(session=session, owner=user_session.user,
                                   project_id=project_id)
    label = str(form.get("label") or "") or None
    uploads = [datasets.Upload(filename=f.filename or "upload", data=await f.read(), label=label)
               for f in form.getlist("files") if isinstance(f, UploadFile) and f.filename]
    limits = datasets.Limits(max_pixels=settings.max_image_pixels,
                             max_zip_members=settings.max_zip_members,
                             max_zip_bytes=settings.max_zip_total_mb * 2**20)

    def work():
        result = datasets.add_images(session=session, storage=storage, project=project,
                                     uploads=uploads, limits=limits)
        session.commit()
        return result

    result = await run_in_threadpool(work)
    notice = (f"added {len(result.added)}, duplicates {len(result.duplicates)}, "
              f"rejected {len(result.rejected)}")
    if result.rejected:
        notice += ": " + "; ".join(f"{r['filename']}: {r['reason']}" for r in result.rejected[:5])
    return redirect(f"/projects/{project_id}?notice={notice[:1500]}")


@router.post("/projects/{project_id}/train")
def project_train(project_id: int, session: SessionDep, user_session: SignedInDep,
                  settings: SettingsDep, csrf_token: Annotated[str, Form()],
                  epochs: Annotated[int, Form()] = 1):
    check_csrf(user_session, csrf_token)
    project = projects.get_project(session=session, owner=user_session.user,
                                   project_id=project_id)
    try:
        training.start_training(session=session, settings=settings, project=project,
                                recipe={"epochs": max(0, min(epochs, 50))})
    except InvalidInputError as exc:
        return redirect(f"/projects/{project_id}?notice={exc}")
    return redirect(f"/projects/{project_id}?notice=training started")


@router.post("/projects/{project_id}/deploy")
def project_deploy(project_id: int, session: SessionDep, user_session: SignedInDep,
                   csrf_token: Annotated[str, Form()], model_id: Annotated[int, Form()],
                   slug: Annotated[str, Form()], public: Annotated[bool, Form()] = False):
    check_csrf(user_session, csrf_token)
    model = deployments.get_model(session=session, owner=user_session.user, model_id=model_id)
    try:
        deployments.create_deployment(session=session, model=model, slug=slug.strip().lower(),
                                      public=public)
    except ConflictError as exc:
        return redirect(f"/projects/{project_id}?notice={exc}")
    session.commit()
    return redirect(f"/projects/{project_id}?notice=deployed as {slug}")


@router.get("/demo/{slug}", response_class=HTMLResponse)
def demo_page(request: Request, slug: str, session: SessionDep,
              user_session: PageSessionDep):
    user = user_session.user if user_session else None
    try:
        deployment = deployments.get_deployment(session=session, slug=slug)
        if not deployments.can_predict(session=session, deployment=deployment, user=user):
            raise NotFoundError(slug)
    except NotFoundError:
        return render(request, "error.html", status=404,
                      message=f"There is no demo called “{slug}” (or it is private).")
    model = deployment.model
    return render(request, "demo.html", deployment=deployment, model=model,
                  metrics=model.metrics or {},
                  csrf_token=user_session.csrf_token if user_session else "")
