"""HTML pages: sign-in, projects, the dataset grid and review, training, results, deployments."""

import math
import re
import secrets
from collections.abc import Callable
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from app.models import Image, Job, ModelVersion, Project, UserSession
from app.schemas import TrainingIn
from app.services import (
    auth,
    curation,
    datasets,
    deployments,
    exports,
    jobs,
    predictions,
    projects,
    training,
)
from app.services.errors import ConflictError, InvalidInputError, NotFoundError
from app.web.deps import SESSION_COOKIE, SessionDep, SettingsDep, StorageDep
from app.web.paths import TEMPLATES_DIR

templates = Jinja2Templates(directory=TEMPLATES_DIR)
GRID_PAGE = 200
RECIPE_DEFAULTS = {"epochs": 0, "frozen_epochs": 1, "lr": 2e-3, "unfrozen_lr": 5e-5,
                   "batch_size": 32, "valid_pct": 0.2, "seed": 42, "augment_views": 2}


class SignInRequired(Exception):
    """The page needs a signed-in user."""


class PageRoute(APIRoute):
    """Service errors on a page become a readable error page, never raw JSON."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except NotFoundError as exc:
                return error_page(request, 404, "Not found", str(exc))
            except (InvalidInputError, ConflictError) as exc:
                return error_page(request, 400, "That did not work", str(exc))
            except RequestValidationError as exc:
                fields = ", ".join(str(e.get("loc", ["", "?"])[-1]) for e in exc.errors())
                return error_page(request, 400, "Some fields are missing or invalid",
                                  f"check: {fields}")

        return handle


router = APIRouter(include_in_schema=False, route_class=PageRoute)


def error_page(request: Request, status: int, title: str, message: str) -> HTMLResponse:
    return render(request, "error.html", code=status, title=title, message=message,
                  back=request.headers.get("referer"))


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


def render(request: Request, name: str, code: int = 200, **context) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context, status_code=code)


def redirect(url: str, **query) -> RedirectResponse:
    query = {k: v for k, v in query.items() if v not in (None, "")}
    return RedirectResponse(f"{url}?{urlencode(query)}" if query else url, status_code=303)


def signed_in_context(user_session: UserSession, **context) -> dict:
    return {"user": user_session.user, "csrf_token": user_session.csrf_token, **context}


def owned(session, user_session: UserSession, project_id: int) -> Project:
    return projects.get_project(session=session, owner=user_session.user, project_id=project_id)


def project_context(session, user_session: UserSession, project: Project, section: str,
                    **context) -> dict:
    return signed_in_context(user_session, project=project, section=section,
                             counts=projects.image_counts(session=session, project=project),
                             **context)


# --- sign-in and projects -----------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def home(user_session: PageSessionDep):
    return redirect("/projects" if user_session else "/login")


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request):
    return render(request, "login.html", error=None)


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, session: SessionDep, settings: SettingsDep,
          email: Annotated[str, Form()] = "", password: Annotated[str, Form()] = ""):
    try:
        user = auth.authenticate(session=session, email=email, password=password)
    except auth.AuthError as exc:
        return render(request, "login.html", code=401, error=str(exc), email=email)
    token, _ = auth.start_session(session=session, user=user, days=settings.session_days)
    session.commit()
    response = redirect("/projects")
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="lax",
                        secure=settings.cookie_secure, max_age=settings.session_days * 86400)
    return response


@router.post("/logout")
def logout(request: Request, session: SessionDep, user_session: SignedInDep,
           csrf_token: Annotated[str, Form()] = ""):
    check_csrf(user_session, csrf_token)
    auth.end_session(session=session, token=request.cookies.get(SESSION_COOKIE, ""))
    session.commit()
    response = redirect("/login")
    response.delete_cookie(SESSION_COOKIE)
    return response


@router.get("/projects", response_class=HTMLResponse)
def project_list(request: Request, session: SessionDep, user_session: SignedInDep):
    owned_projects = projects.list_projects(session=session, owner=user_session.user)
    rows = [(p, projects.image_counts(session=session, project=p)) for p in owned_projects]
    return render(request, "projects.html", **signed_in_context(user_session, rows=rows))


@router.post("/projects")
def project_create(session: SessionDep, user_session: SignedInDep,
                   name: Annotated[str, Form()] = "",
                   label: Annotated[list[str], Form()] = (),
                   query: Annotated[list[str], Form()] = (),
                   csrf_token: Annotated[str, Form()] = ""):
    check_csrf(user_session, csrf_token)
    project = projects.create_project(session=session, owner=user_session.user, name=name)
    queries = list(query) + [""] * len(label)
    for label_name, label_query in zip(label, queries, strict=False):
        if label_name.strip():
            projects.add_label(session=session, project=project, name=label_name,
                               query=label_query.strip() or None)
    session.commit()
    return redirect(f"/projects/{project.id}")


@router.get("/projects/{project_id}", response_class=HTMLResponse)
def project_page(request: Request, project_id: int, session: SessionDep,
                 user_session: SignedInDep, settings: SettingsDep, notice: str = ""):
    project = owned(session, user_session, project_id)
    project_jobs = jobs.list_jobs(session=session, project=project, limit=8)
    for job in project_jobs:
        jobs.fail_if_stale(job=job, stale_seconds=settings.job_stale_seconds)
    session.commit()
    return render(request, "project.html", **project_context(
        session, user_session, project, "overview", jobs=project_jobs, notice=notice,
        samples=curation.sample_images(session=session, project=project),
        latest=curation.latest_model(session=session, project=project)))


@router.post("/projects/{project_id}/labels")
def label_add(project_id: int, session: SessionDep, user_session: SignedInDep,
              name: Annotated[str, Form()] = "", query: Annotated[str, Form()] = "",
              csrf_token: Annotated[str, Form()] = ""):
    check_csrf(user_session, csrf_token)
    project = owned(session, user_session, project_id)
    label = projects.add_label(session=session, project=project, name=name,
                               query=query.strip() or None)
    session.commit()
    return redirect(f"/projects/{project_id}", notice=f"added the label “{label.name}”")


@router.post("/projects/{project_id}/upload", response_class=HTMLResponse)
async def project_upload(request: Request, project_id: int, session: SessionDep,
                         user_session: SignedInDep, storage: StorageDep, settings: SettingsDep):
    form = await request.form(max_files=10_000)
    check_csrf(user_session, str(form.get("csrf_token", "")))
    project = await run_in_threadpool(owned, session, user_session, project_id)
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
    return redirect(f"/projects/{project_id}", notice=summary(result)[:1500])


def summary(result: datasets.AddResult) -> str:
    notice = (f"added {len(result.added)}, duplicates {len(result.duplicates)}, "
              f"rejected {len(result.rejected)}")
    if result.rejected:
        notice += ": " + "; ".join(f"{r['filename']}: {r['reason']}" for r in result.rejected[:5])
    return notice


@router.post("/projects/{project_id}/import", response_class=HTMLResponse)
async def project_import(request: Request, project_id: int, session: SessionDep,
                         user_session: SignedInDep, storage: StorageDep, settings: SettingsDep):
    form = await request.form(max_files=1)
    check_csrf(user_session, str(form.get("csrf_token", "")))
    project = await run_in_threadpool(owned, session, user_session, project_id)
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
    return redirect(f"/projects/{project_id}", notice="import: " + summary(result)[:1500])


# --- curation ------------------------------------------------------------------------------


@router.get("/projects/{project_id}/images", response_class=HTMLResponse)
def image_grid(request: Request, project_id: int, session: SessionDep,
               user_session: SignedInDep, label: str = "", status: str = "active",
               page: int = 1, per: int = GRID_PAGE):
    project = owned(session, user_session, project_id)
    per, page = max(12, min(per, 2000)), max(1, page)
    images, total = datasets.list_images(
        session=session, project=project, label=label or None, status=status or None,
        limit=per, offset=(page - 1) * per)
    pages = max(1, math.ceil(total / per))
    return render(request, "images.html", **project_context(
        session, user_session, project, "images", images=images, total=total, page=page,
        pages=pages, per=per, label=label, status=status,
        thumb_size=curation.thumbnail_size(160)))


@router.get("/projects/{project_id}/review", response_class=HTMLResponse)
def review_page(request: Request, project_id: int, session: SessionDep,
                user_session: SignedInDep, page: int = 1):
    project = owned(session, user_session, project_id)
    page = max(1, page)
    model, items, total = curation.review_queue(session=session, project=project, limit=60,
                                                offset=(page - 1) * 60)
    return render(request, "review.html", **project_context(
        session, user_session, project, "review", model=model, items=items, total=total,
        page=page, pages=max(1, math.ceil(total / 60))))


@router.get("/projects/{project_id}/duplicates", response_class=HTMLResponse)
def duplicates_page(request: Request, project_id: int, session: SessionDep,
                    user_session: SignedInDep):
    project = owned(session, user_session, project_id)
    return render(request, "duplicates.html", **project_context(
        session, user_session, project, "duplicates",
        groups=datasets.duplicate_groups(session=session, project=project)))


@router.get("/projects/{project_id}/failed", response_class=HTMLResponse)
def failed_page(request: Request, project_id: int, session: SessionDep,
                user_session: SignedInDep):
    project = owned(session, user_session, project_id)
    return render(request, "failed.html", **project_context(
        session, user_session, project, "failed",
        rows=curation.failed_verifications(session=session, project=project)))


# --- training and results ------------------------------------------------------------------


@router.get("/projects/{project_id}/train", response_class=HTMLResponse)
def train_page(request: Request, project_id: int, session: SessionDep,
               user_session: SignedInDep):
    project = owned(session, user_session, project_id)
    trainings = [j for j in jobs.list_jobs(session=session, project=project, limit=30)
                 if j.kind == "training"]
    return render(request, "train.html", **project_context(
        session, user_session, project, "train", recipe=RECIPE_DEFAULTS, trainings=trainings))


def recipe_from_form(form) -> dict:
    """The recipe fields a person filled in, as numbers (blank means the default)."""
    recipe = {}
    for name, default in RECIPE_DEFAULTS.items():
        value = str(form.get(name, "")).strip()
        if not value:
            continue
        try:
            recipe[name] = type(default)(float(value)) if isinstance(default, int) \
                else float(value)
        except (ValueError, OverflowError) as exc:
            raise InvalidInputError(f"{name.replace('_', ' ')} must be a number") from exc
    return recipe


@router.post("/projects/{project_id}/train")
async def train_start(request: Request, project_id: int, session: SessionDep,
                      user_session: SignedInDep, settings: SettingsDep):
    form = await request.form()
    check_csrf(user_session, str(form.get("csrf_token", "")))
    recipe = recipe_from_form(form)

    def start():
        project = owned(session, user_session, project_id)
        return training.start_training(session=session, settings=settings, project=project,
                                       recipe=recipe)

    job = await run_in_threadpool(start)
    return redirect(f"/jobs/{job.id}")


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: int, session: SessionDep, user_session: SignedInDep,
             settings: SettingsDep):
    job = jobs.get_job(session=session, owner=user_session.user, job_id=job_id,
                       stale_seconds=settings.job_stale_seconds)
    session.commit()
    project = session.get(Project, job.project_id)
    return render(request, "job.html", **project_context(
        session, user_session, project, "train", job=job, view=jobs.job_view(job)))


def owned_model(session, user_session: UserSession, model_id: int) -> ModelVersion:
    return deployments.get_model(session=session, owner=user_session.user, model_id=model_id)


@router.get("/models/{model_id}", response_class=HTMLResponse)
def model_page(request: Request, model_id: int, session: SessionDep,
               user_session: SignedInDep, compare: int | None = None):
    model = owned_model(session, user_session, model_id)
    project = session.get(Project, model.project_id)
    other = owned_model(session, user_session, compare) if compare else None
    if other is not None and other.project_id != model.project_id:
        raise InvalidInputError("compare with a model of the same project")
    metrics = model.metrics or {}
    top = [row for row in metrics.get("top_losses", []) if row.get("image_id")]
    images = {i.id: i for i in datasets_images(session, [row["image_id"] for row in top])}
    return render(request, "model.html", **project_context(
        session, user_session, project, "models", model=model, metrics=metrics,
        matrix=confusion_cells(model.labels, metrics.get("confusion_matrix") or []),
        top=[(row, images.get(row["image_id"])) for row in top], other=other,
        models=deployments.list_models(session=session, project=project),
        training_job=session.get(Job, model.job_id) if model.job_id else None))


def datasets_images(session, ids: list[int]) -> list[Image]:
    return [image for image in (session.get(Image, i) for i in ids) if image is not None]


def confusion_cells(labels: list[str], matrix: list[list[int]]) -> list[list[dict]]:
    """Each cell with its share of the row, for colouring (rows actual, columns predicted)."""
    rows = []
    for i, row in enumerate(matrix):
        total = sum(row) or 1
        rows.append([{"count": n, "share": n / total, "diagonal": i == j,
                      "actual": labels[i], "predicted": labels[j]}
                     for j, n in enumerate(row)])
    return rows


@router.post("/models/{model_id}/retrain")
def retrain(model_id: int, session: SessionDep, user_session: SignedInDep,
            settings: SettingsDep, csrf_token: Annotated[str, Form()] = ""):
    check_csrf(user_session, csrf_token)
    model = owned_model(session, user_session, model_id)
    project = session.get(Project, model.project_id)
    recipe = {k: v for k, v in (model.recipe or {}).items() if k in TrainingIn.model_fields}
    job = training.start_training(session=session, settings=settings, project=project,
                                  recipe=recipe)
    return redirect(f"/jobs/{job.id}")


# --- models and deployments ----------------------------------------------------------------


@router.get("/projects/{project_id}/models", response_class=HTMLResponse)
def models_page(request: Request, project_id: int, session: SessionDep,
                user_session: SignedInDep, notice: str = ""):
    project = owned(session, user_session, project_id)
    return render(request, "models.html", **project_context(
        session, user_session, project, "models", notice=notice,
        models=deployments.list_models(session=session, project=project),
        deployments=deployments.list_deployments(session=session, project=project),
        base_url=str(request.base_url).rstrip("/")))


@router.post("/projects/{project_id}/deploy")
def project_deploy(project_id: int, session: SessionDep, user_session: SignedInDep,
                   model_id: Annotated[int, Form()], slug: Annotated[str, Form()] = "",
                   public: Annotated[bool, Form()] = False,
                   csrf_token: Annotated[str, Form()] = ""):
    check_csrf(user_session, csrf_token)
    model = owned_model(session, user_session, model_id)
    slug = slug.strip().lower()
    if not deployments_slug_ok(slug):
        raise InvalidInputError("a slug is 2 to 63 lowercase letters, digits or dashes, "
                                "starting with a letter or digit")
    deployments.create_deployment(session=session, model=model, slug=slug, public=public)
    session.commit()
    return redirect(f"/projects/{model.project_id}/models", notice=f"deployed as {slug}")


def deployments_slug_ok(slug: str) -> bool:
    return re.fullmatch(r"[a-z0-9][a-z0-9-]{1,62}", slug) is not None


@router.post("/deployments/{slug}")
def deployment_update(slug: str, session: SessionDep, user_session: SignedInDep,
                      model_id: Annotated[int | None, Form()] = None,
                      public: Annotated[str, Form()] = "",
                      csrf_token: Annotated[str, Form()] = ""):
    check_csrf(user_session, csrf_token)
    deployment = deployments.get_owned_deployment(session=session, owner=user_session.user,
                                                  slug=slug)
    model = owned_model(session, user_session, model_id) if model_id else None
    deployments.update_deployment(session=session, deployment=deployment, model=model,
                                  public={"true": True, "false": False}.get(public))
    session.commit()
    return redirect(f"/projects/{deployment.project_id}/models",
                    notice=f"{slug} now serves model #{deployment.model_id}"
                    f" ({'public' if deployment.public else 'private'})")


@router.get("/demo/{slug}", response_class=HTMLResponse)
def demo_page(request: Request, slug: str, session: SessionDep, storage: StorageDep,
              settings: SettingsDep, user_session: PageSessionDep, embed: bool = False):
    user = user_session.user if user_session else None
    try:
        deployment = deployments.get_deployment(session=session, slug=slug)
        if not deployments.can_predict(session=session, deployment=deployment, user=user):
            raise NotFoundError(slug)
    except NotFoundError:
        return render(request, "error.html", code=404,
                      message=f"There is no demo called “{slug}” (or it is private).")
    model = deployment.model
    examples = predictions.example_images(session=session, storage=storage,
                                          deployment=deployment,
                                          per_label=settings.demo_examples)
    return render(request, "demo.html", deployment=deployment, model=model,
                  metrics=model.metrics or {}, embed=embed, base=str(request.base_url),
                  examples=[(i, image.label.name if image.label else "")
                            for i, image in enumerate(examples)],
                  threshold=predictions.unknown_threshold(deployment=deployment, model=model),
                  csrf_token=user_session.csrf_token if user_session else "")
