"""Training pages: the recipe form, a job's live page, retraining a model's recipe."""

from fastapi import Request
from fastapi.responses import HTMLResponse

from app.ml.recipe import RECIPE_FIELDS
from app.models import Project
from app.schemas import TrainingIn
from app.services import jobs, training
from app.services.errors import InvalidInputError
from app.web.deps import SessionDep, SettingsDep
from app.web.pages.common import (
    CsrfFormDep,
    PageModelDep,
    PageProjectDep,
    SignedInDep,
    page_router,
    project_context,
    redirect,
    render,
)

router = page_router()
# The recipe fields the form asks for; their labels, limits and defaults are the recipe's own.
RECIPE_FORM = {name: RECIPE_FIELDS[name] for name in (
    "epochs", "head_epochs", "lr", "unfrozen_lr", "batch_size", "valid_pct", "augment_views",
    "seed")}


@router.get("/projects/{project_id}/train", response_class=HTMLResponse)
def train_page(request: Request, project: PageProjectDep, session: SessionDep,
               user_session: SignedInDep):
    trainings = [j for j in jobs.list_jobs(session=session, project=project, limit=30)
                 if j.kind == "training"]
    return render(request, "train.html", **project_context(
        session, user_session, project, "train", recipe=RECIPE_FORM, trainings=trainings))


def recipe_from_form(form) -> dict:
    """The recipe fields a person filled in, as numbers (blank means the default)."""
    recipe = {}
    for name, spec in RECIPE_FORM.items():
        value = str(form.get(name, "")).strip()
        if not value:
            continue
        try:
            recipe[name] = spec.parse(value)
        except (ValueError, OverflowError) as exc:
            raise InvalidInputError(f"{name.replace('_', ' ')} must be a number") from exc
    return recipe


@router.post("/projects/{project_id}/train")
def train_start(form: CsrfFormDep, project: PageProjectDep, session: SessionDep,
                settings: SettingsDep):
    recipe = recipe_from_form(form)
    job = training.start_training(session=session, settings=settings, project=project,
                                  recipe=recipe)
    return redirect(f"/jobs/{job.id}")


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: int, session: SessionDep, user_session: SignedInDep,
             settings: SettingsDep):
    job = jobs.get_job(session=session, owner=user_session.user, job_id=job_id,
                       stale_seconds=settings.job_stale_seconds)
    session.commit()
    project = session.get(Project, job.project_id)
    section = "train" if job.kind in ("training", "lr_find") else "overview"  # its tab
    return render(request, "job.html", **project_context(
        session, user_session, project, section, job=job, view=jobs.job_view(job)))


@router.post("/models/{model_id}/retrain")
def retrain(form: CsrfFormDep, model: PageModelDep, session: SessionDep,
            settings: SettingsDep):
    project = session.get(Project, model.project_id)
    recipe = {k: v for k, v in (model.recipe or {}).items() if k in TrainingIn.model_fields}
    job = training.start_training(session=session, settings=settings, project=project,
                                  recipe=recipe)
    return redirect(f"/jobs/{job.id}")
