"""Model versions and the deployments that point at them."""

import re

from sqlalchemy import func, select
from sqlalchemy.orm import Session, joinedload, object_session

from app.ml.novelty import SCORE as FAMILIARITY
from app.models import Deployment, ModelVersion, Project, User
from app.services.errors import ConflictError, InvalidInputError, NotFoundError

# `-` is escaped so that the pattern also works as an HTML input's (the JavaScript `v` flag).
SLUG_PATTERN = r"[a-z0-9][a-z0-9\-]{1,62}"
SLUG_RULE = "a slug is 2 to 63 lowercase letters, digits or dashes, starting with a letter or digit"
PROBABILITY = "max_probability"  # the unknown score of versions without a feature bank
MODEL_FILES = ("weights.safetensors", "model.json", "model.onnx")
BANK_FILES = ("features.npy",)  # versions trained with a feature bank (app.ml.novelty)


def unknown_score(model: ModelVersion) -> str:
    """What "none of these" (and a deployment's threshold) looks at: the familiarity with the
    training photos (versions trained with a feature bank), else the top probability."""
    return FAMILIARITY if (model.metrics or {}).get("unknown_score") == FAMILIARITY else PROBABILITY


def model_files(model: ModelVersion) -> tuple[str, ...]:
    """The files a model version has: the bank only where "none of these" uses one."""
    return MODEL_FILES + BANK_FILES if unknown_score(model) == FAMILIARITY else MODEL_FILES


def list_models(*, session: Session, project: Project) -> list[ModelVersion]:
    query = select(ModelVersion).where(ModelVersion.project_id == project.id)
    return list(session.scalars(query.where(ModelVersion.storage_prefix != "").order_by(
        ModelVersion.id.desc())))


def model_versions(*, session: Session, project_id: int) -> dict[int, int]:
    """Each finished model's version number in its project: v3 is the project's third model
    (ids are shared by every project)."""
    ids = session.scalars(
        select(ModelVersion.id).where(ModelVersion.project_id == project_id,
                                      ModelVersion.storage_prefix != "")
        .order_by(ModelVersion.id))
    return {model_id: n for n, model_id in enumerate(ids, start=1)}


def model_version(model: ModelVersion) -> int:
    """This model's version number in its project."""
    return object_session(model).scalar(
        select(func.count()).select_from(ModelVersion)
        .where(ModelVersion.project_id == model.project_id, ModelVersion.storage_prefix != "",
               ModelVersion.id <= model.id))


def get_model(*, session: Session, owner: User, model_id: int) -> ModelVersion:
    """The owner's finished model version, or NotFoundError."""
    model = session.get(ModelVersion, model_id)
    if model is None or not model.storage_prefix:
        raise NotFoundError(f"model {model_id} not found")
    if session.get(Project, model.project_id).owner_id != owner.id:
        raise NotFoundError(f"model {model_id} not found")
    return model


def create_deployment(
    *, session: Session, model: ModelVersion, slug: str, public: bool,
    threshold: float | None = None, log_images: bool = False,
) -> Deployment:
    """Deploy a model version under a new slug."""
    check_slug(slug)
    if session.scalar(select(Deployment.id).where(Deployment.slug == slug)):
        raise ConflictError(f"the slug {slug!r} is taken; choose another")
    deployment = Deployment(
        slug=slug, project_id=model.project_id, model_id=model.id, public=public,
        threshold=threshold, log_images=log_images,
    )
    session.add(deployment)
    session.flush()
    return deployment


def suggest_slug(*, session: Session, name: str) -> str:
    """A free slug made from a project's name ("Bears!" -> "bears", then "bears-2")."""
    base = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:56] or "model"
    base = base if len(base) >= 2 else f"{base}-model"
    taken = set(session.scalars(select(Deployment.slug).where(Deployment.slug.startswith(base))))
    return next(slug for n in range(1, len(taken) + 2)
                if (slug := base if n == 1 else f"{base}-{n}") not in taken)


def check_slug(slug: str) -> None:
    """InvalidInputError, saying the rule, unless the slug follows SLUG_PATTERN."""
    if re.fullmatch(SLUG_PATTERN, slug) is None:
        raise InvalidInputError(SLUG_RULE)


def get_deployment(*, session: Session, slug: str) -> Deployment:
    """The deployment and its current model version (one query), or NotFoundError."""
    query = select(Deployment).where(Deployment.slug == slug)
    deployment = session.scalar(query.options(joinedload(Deployment.model)))
    if deployment is None:
        raise NotFoundError(f"deployment {slug!r} not found")
    return deployment


def get_owned_deployment(*, session: Session, owner: User, slug: str) -> Deployment:
    deployment = get_deployment(session=session, slug=slug)
    if session.get(Project, deployment.project_id).owner_id != owner.id:
        raise NotFoundError(f"deployment {slug!r} not found")
    return deployment


def can_predict(*, session: Session, deployment: Deployment, user: User | None) -> bool:
    """Public deployments answer anyone; private ones only their owner."""
    return deployment.public or owns_deployment(session=session, deployment=deployment,
                                                user=user)


KEEP = object()


def update_deployment(
    *, session: Session, deployment: Deployment, model: ModelVersion | None = None,
    public: bool | None = None, threshold: float | None | object = KEEP,
    log_images: bool | None = None,
) -> Deployment:
    """Point a deployment at another version of the same project (or roll back), or retune it.

    `threshold=None` clears the deployment's own threshold (the model's calibrated one
    applies again); leave it as KEEP to keep the current one. A threshold is on the model's
    unknown score, so moving to a version with another score clears it unless one is given.
    """
    if model is not None:
        if model.project_id != deployment.project_id:
            raise ConflictError("a deployment can only move to a model of the same project")
        if threshold is KEEP and unknown_score(model) != unknown_score(deployment.model):
            threshold = None  # a confidence is not a familiarity: the calibrated one applies
        deployment.model_id = model.id
        deployment.model = model
    if public is not None:
        deployment.public = public
    if threshold is not KEEP:
        deployment.threshold = threshold
    if log_images is not None:
        deployment.log_images = log_images
    session.flush()
    return deployment


def owns_deployment(*, session: Session, deployment: Deployment, user: User | None) -> bool:
    return user is not None and session.get(Project, deployment.project_id).owner_id == user.id


def list_deployments(*, session: Session, project: Project) -> list[Deployment]:
    query = select(Deployment).where(Deployment.project_id == project.id)
    return list(session.scalars(query.order_by(Deployment.id)))
