"""Training pages: the recipe form, a job's live page, retraining a model's recipe."""

from fastapi import Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.ml.recipe import FROZEN_EPOCHS, RECIPE_FIELDS, Recipe
from app.models import Job, ModelVersion, Project
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
# Each recipe term in plain words, under its field on the form.
RECIPE_HELP = {
    "epochs": "Passes over your photos that fine-tune every layer of the network, after the "
              "head has learned. 0 (the default) skips them: fastest, and usually accurate "
              "already; each one takes minutes without a GPU.",
    "head_epochs": "Passes over your photos in which only the new last layer (the “head”) "
                   "learns, while the pretrained network stays as it is (“frozen”). Each pass "
                   "is one point on the training charts.",
    "lr": "How big a step the head takes each time it learns from a batch of photos. Too "
          "big and it overshoots; too small and it learns slowly.",
    "unfrozen_lr": "The same, for the whole-network epochs: much smaller, so the pretrained "
                   "network is adjusted without forgetting what it knew.",
    "batch_size": "How many photos it looks at before each learning step.",
    "valid_pct": "The share of your photos held back to check the model on photos it has "
                 "not learned from (0.2 is one in five). The error rate is measured on them.",
    "augment_views": "Altered copies (cropped, flipped, recoloured) of each photo it learns "
                     "from, so it does not depend on one framing.",
    "seed": "Fixes the random choices (which photos are held back, the order of the "
            "batches): the same seed and photos give the same model.",
}


@router.get("/projects/{project_id}/train", response_class=HTMLResponse)
def train_page(request: Request, project: PageProjectDep, session: SessionDep,
               user_session: SignedInDep):
    trainings = [j for j in jobs.list_jobs(session=session, project=project, limit=30)
                 if j.kind == "training"]
    context = project_context(session, user_session, project, "train", recipe=RECIPE_FORM,
                              recipe_help=RECIPE_HELP, trainings=trainings)
    expected = expected_duration(session, project_id=project.id, params={},
                                 n_images=sum(context["counts"].values()))
    return render(request, "train.html", **context, expected=about(expected["total_s"]))


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
    context = project_context(session, user_session, project, section, job=job,
                              view=jobs.job_view(job),
                              recipe_fields={**RECIPE_FIELDS, "frozen_epochs": FROZEN_EPOCHS})
    if job.kind == "training":
        context["expected"] = expected_duration(
            session, project_id=job.project_id, params=job.params,
            n_images=sum(context["counts"].values()),
            before_model=(job.result or {}).get("model_id"))
    return render(request, "job.html", **context)


# A first estimate's rules of thumb, for a project's first training on a 2-core CPU worker
# (bench/results/train.json): photos decoded, views of photos through the frozen body (in
# ONNX Runtime) and photos through the whole network per second, and seconds to package the
# model: the cached body graph with the head attached when the body stayed frozen, a full
# ONNX export of the fine-tuned network when it did not.
DECODE_PER_S, FROZEN_VIEWS_PER_S, UNFROZEN_PER_S = 300.0, 115.0, 2.0
PACKAGING_S, PACKAGING_UNFROZEN_S = 1.0, 25.0


def _packaging_s(params: dict | None) -> float:
    try:
        recipe = Recipe.from_dict(params or {})
    except (TypeError, ValueError):
        recipe = Recipe()
    return PACKAGING_UNFROZEN_S if recipe.epochs else PACKAGING_S


def expected_duration(session: Session, *, project_id: int, params: dict | None,
                      n_images: int, before_model: int | None = None) -> dict:
    """How long a training should take before its own rate says more: its recipe and image
    count at the rules of thumb, scaled by how the project's last training (before
    `before_model`, the job's own result) compared with them, on the same machine most likely."""
    scale = 1.0
    query = select(ModelVersion).where(ModelVersion.project_id == project_id)
    if before_model is not None:
        query = query.where(ModelVersion.id < before_model)
    last = session.scalars(query.order_by(ModelVersion.id.desc()).limit(1)).first()
    done = session.get(Job, last.job_id) if last is not None and last.job_id else None
    if done is not None and done.started_at and done.finished_at:
        metrics = last.metrics or {}
        n_then = (metrics.get("train_count") or 0) + (metrics.get("valid_count") or 0)
        took = (done.finished_at - done.started_at).total_seconds()
        if n_then and took > 0:
            scale = min(max(took / _rule_of_thumb(last.recipe, n_then), 0.25), 4.0)
    total = _rule_of_thumb(params, n_images) * scale
    return {"total_s": round(total, 1), "packaging_s": round(_packaging_s(params) * scale, 1)}


def about(seconds: float) -> str:
    """A rough duration in words: "about 40 s", "about 3 min"."""
    if seconds < 60:
        return f"about {max(10, round(seconds / 10) * 10)} s"
    return f"about {round(seconds / 60)} min"


def _rule_of_thumb(params: dict | None, n_images: int) -> float:
    try:
        recipe = Recipe.from_dict(params or {})
    except (TypeError, ValueError):
        recipe = Recipe()
    n_valid = n_images * recipe.valid_pct
    n_train = n_images - n_valid
    return (n_images / DECODE_PER_S + (n_train * (1 + recipe.augment_views) + n_valid)
            / FROZEN_VIEWS_PER_S + recipe.epochs * n_train / UNFROZEN_PER_S
            + _packaging_s(params))


@router.post("/models/{model_id}/retrain")
def retrain(form: CsrfFormDep, model: PageModelDep, session: SessionDep,
            settings: SettingsDep):
    project = session.get(Project, model.project_id)
    recipe = {k: v for k, v in (model.recipe or {}).items() if k in TrainingIn.model_fields}
    job = training.start_training(session=session, settings=settings, project=project,
                                  recipe=recipe)
    return redirect(f"/jobs/{job.id}")
