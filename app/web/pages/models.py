"""Model pages: a model's results, the project's models and their deployments."""

from typing import Annotated

from fastapi import Form, Request
from fastapi.responses import HTMLResponse

from app.models import Job, Project
from app.services import catalog, deployments
from app.services.comparison import compare_models
from app.services.errors import InvalidInputError
from app.web.deps import SessionDep
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


def confusion_cells(labels: list[str], matrix: list[list[int]]) -> list[list[dict]]:
    """Each cell with its share of the row, for colouring (rows actual, columns predicted)."""
    rows = []
    for i, row in enumerate(matrix):
        total = sum(row) or 1
        rows.append([{"count": n, "share": n / total, "diagonal": i == j,
                      "actual": labels[i], "predicted": labels[j]}
                     for j, n in enumerate(row)])
    return rows


@router.get("/models/{model_id}", response_class=HTMLResponse)
def model_page(request: Request, model: PageModelDep, session: SessionDep,
               user_session: SignedInDep, compare: int | None = None):
    project = session.get(Project, model.project_id)
    other = (deployments.get_model(session=session, owner=user_session.user, model_id=compare)
             if compare else None)
    if other is not None and other.project_id != model.project_id:
        raise InvalidInputError("compare with a model of the same project")
    comparison = (compare_models(session=session, first=model, second=other)
                  if other is not None else None)
    metrics = model.metrics or {}
    top = [row for row in metrics.get("top_losses", []) if row.get("image_id")]
    images = catalog.images_by_id(session=session, project=project,
                                   image_ids=[row["image_id"] for row in top])
    return render(request, "model.html", **project_context(
        session, user_session, project, "models", model=model, metrics=metrics,
        matrix=confusion_cells(model.labels, metrics.get("confusion_matrix") or []),
        top=[(row, images.get(row["image_id"])) for row in top], other=other,
        comparison=comparison,
        models=deployments.list_models(session=session, project=project),
        training_job=session.get(Job, model.job_id) if model.job_id else None))


@router.get("/projects/{project_id}/models", response_class=HTMLResponse)
def models_page(request: Request, project: PageProjectDep, session: SessionDep,
                user_session: SignedInDep, notice: str = "", deploy: int | None = None):
    """The project's versions and deployments; `deploy`: the version to deploy, chosen."""
    return render(request, "models.html", **project_context(
        session, user_session, project, "models", notice=notice, chosen=deploy,
        suggested_slug=deployments.suggest_slug(session=session, name=project.name),
        models=deployments.list_models(session=session, project=project),
        deployments=deployments.list_deployments(session=session, project=project),
        base_url=str(request.base_url).rstrip("/"),
        slug_pattern=deployments.SLUG_PATTERN, slug_rule=deployments.SLUG_RULE))


@router.post("/projects/{project_id}/deploy")
def project_deploy(form: CsrfFormDep, session: SessionDep, user_session: SignedInDep,
                   model_id: Annotated[int, Form()], slug: Annotated[str, Form()] = "",
                   public: Annotated[bool, Form()] = False):
    model = deployments.get_model(session=session, owner=user_session.user, model_id=model_id)
    slug = slug.strip().lower()
    deployments.create_deployment(session=session, model=model, slug=slug, public=public)
    session.commit()
    return redirect(f"/projects/{model.project_id}/models", notice=f"deployed as {slug}")


@router.post("/deployments/{slug}")
def deployment_update(slug: str, form: CsrfFormDep, session: SessionDep,
                      user_session: SignedInDep,
                      model_id: Annotated[int | None, Form()] = None,
                      public: Annotated[str, Form()] = "",
                      log_images: Annotated[str, Form()] = ""):
    deployment = deployments.get_owned_deployment(session=session, owner=user_session.user,
                                                  slug=slug)
    model = (deployments.get_model(session=session, owner=user_session.user, model_id=model_id)
             if model_id else None)
    deployments.update_deployment(session=session, deployment=deployment, model=model,
                                  public={"true": True, "false": False}.get(public),
                                  log_images={"true": True, "false": False}.get(log_images))
    session.commit()
    return redirect(f"/projects/{deployment.project_id}/models",
                    notice=f"{slug} now serves model v{deployments.model_version(deployment.model)}"
                    f" ({'public' if deployment.public else 'private'}"
                    f"{', photos kept' if deployment.log_images else ''})")
