"""Training extras of the JSON API: the learning-rate finder and out-of-sample predictions."""

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from app.models import ImagePrediction
from app.schemas import TrainingIn
from app.services import deployments, jobs, training
from app.web.deps import ProjectDep, SessionDep, SettingsDep, UserDep

router = APIRouter(prefix="/api/v1")


def prediction_out(row: ImagePrediction) -> dict:
    return {
        "image_id": row.image_id,
        "given_label": row.given_label,
        "predicted_label": row.predicted_label,
        "confidence": row.confidence,
        "loss": row.loss,
        "probabilities": row.probabilities,
        "in_validation": row.in_validation,
        "file_url": f"/api/v1/images/{row.image_id}/file",
    }


@router.post("/projects/{project_id}/lr-find", status_code=202)
def start_lr_find(project: ProjectDep, session: SessionDep, settings: SettingsDep,
                  body: TrainingIn | None = None):
    recipe = body.model_dump(exclude_none=True) if body else {}
    job = training.start_lr_find(session=session, settings=settings, project=project,
                                 recipe=recipe)
    return jobs.job_view(job)


@router.get("/models/{model_id}/predictions")
def list_predictions(
    model_id: int, session: SessionDep, user: UserDep,
    sort: Literal["loss", "confidence", "image"] = "loss",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
):
    model = deployments.get_model(session=session, owner=user, model_id=model_id)
    rows, total = training.list_predictions(session=session, model=model, sort=sort,
                                            limit=limit, offset=offset)
    return {"total": total, "limit": limit, "offset": offset,
            "predictions": [prediction_out(row) for row in rows]}
