"""API v1: model versions (metrics, files) and deployments (create, list, switch, roll back)."""


from fastapi import APIRouter, HTTPException, Request

from app.models import Deployment, ModelVersion
from app.schemas import (
    DeploymentIn,
    DeploymentPatch,
)
from app.services import deployments
from app.web.deps import (
    ProjectDep,
    SessionDep,
    StorageDep,
    UserDep,
)
from app.web.files import file_response

router = APIRouter(prefix="/api/v1")


def model_out(model: ModelVersion, *, full: bool = False) -> dict:
    metrics = model.metrics or {}
    out = {
        "id": model.id,
        "version": deployments.model_version(model),  # "v3": the project's third model
        "project_id": model.project_id,
        "job_id": model.job_id,
        "backbone": model.backbone,
        "labels": model.labels,
        "error_rate": metrics.get("error_rate"),
        "created_at": model.created_at.isoformat(),
        "files": {name: f"/api/v1/models/{model.id}/files/{name}" for name in
                  deployments.model_files(model)},
    }
    if full:
        out["metrics"] = metrics
        out["recipe"] = model.recipe
    return out


def deployment_out(request: Request, deployment: Deployment) -> dict:
    base = str(request.base_url).rstrip("/")
    return {
        "slug": deployment.slug,
        "model_id": deployment.model_id,
        "project_id": deployment.project_id,
        "public": deployment.public,
        "threshold": deployment.threshold,
        "log_images": deployment.log_images,
        "predict_url": f"{base}/api/v1/predict/{deployment.slug}",
        "demo_url": f"{base}/demo/{deployment.slug}",
        "updated_at": deployment.updated_at.isoformat(),
    }


# --- health, session, users, keys ---------------------------------------------------------


@router.get("/projects/{project_id}/models")
def list_models(project: ProjectDep, session: SessionDep):
    return [model_out(m) for m in deployments.list_models(session=session, project=project)]


@router.get("/models/{model_id}")
def get_model(model_id: int, session: SessionDep, user: UserDep):
    return model_out(deployments.get_model(session=session, owner=user, model_id=model_id),
                     full=True)


@router.get("/models/{model_id}/files/{name}")
def model_file(model_id: int, name: str, session: SessionDep, user: UserDep,
               storage: StorageDep):
    model = deployments.get_model(session=session, owner=user, model_id=model_id)
    files = deployments.model_files(model)
    if name not in files:
        raise HTTPException(404, f"no file {name!r}; files are {', '.join(files)}")
    return file_response(storage, f"{model.storage_prefix}/{name}", filename=name)


@router.post("/models/{model_id}/deployments", status_code=201)
def create_deployment(model_id: int, body: DeploymentIn, request: Request,
                      session: SessionDep, user: UserDep):
    model = deployments.get_model(session=session, owner=user, model_id=model_id)
    deployment = deployments.create_deployment(
        session=session, model=model, slug=body.slug, public=body.public,
        threshold=body.threshold, log_images=body.log_images,
    )
    session.commit()
    return deployment_out(request, deployment)


@router.get("/projects/{project_id}/deployments")
def list_deployments(project: ProjectDep, request: Request, session: SessionDep):
    return [deployment_out(request, d)
            for d in deployments.list_deployments(session=session, project=project)]


@router.patch("/deployments/{slug}")
def update_deployment(slug: str, body: DeploymentPatch, request: Request,
                      session: SessionDep, user: UserDep):
    deployment = deployments.get_owned_deployment(session=session, owner=user, slug=slug)
    model = (deployments.get_model(session=session, owner=user, model_id=body.model_id)
             if body.model_id is not None else None)
    threshold = body.threshold if "threshold" in body.model_fields_set else deployments.KEEP
    deployments.update_deployment(session=session, deployment=deployment, model=model,
                                  public=body.public, threshold=threshold,
                                  log_images=body.log_images)
    session.commit()
    return deployment_out(request, deployment)
