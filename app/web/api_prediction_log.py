"""A deployment's logged photos: listing them, each photo, and adding them to the project
(the inbox, or a label) through the upload pipeline."""

from typing import Annotated

from fastapi import APIRouter, Query

from app.schemas import LogAddIn
from app.services import deployments, label_assist, prediction_log
from app.services.archives import Limits
from app.web.deps import ServingDep, SessionDep, SettingsDep, StorageDep, UserDep
from app.web.files import file_response

router = APIRouter(prefix="/api/v1")


@router.get("/deployments/{slug}/log")
def logged_photos(
    slug: str, session: SessionDep, user: UserDep, serving: ServingDep,
    only: prediction_log.Only = "all",
    limit: Annotated[int, Query(ge=1, le=500)] = 60,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
):
    """The deployment's logged predictions that kept a photo, newest first (`only`: unknown,
    the "none of these" answers; low_confidence, a top probability below 0.7)."""
    serving.log.flush()  # the rows still in memory too
    deployment = deployments.get_owned_deployment(session=session, owner=user, slug=slug)
    page = prediction_log.list_logged(session=session, deployment=deployment, only=only,
                                      limit=limit, offset=offset)
    base = f"/api/v1/deployments/{slug}/log"
    return {
        "total": page.total, "limit": limit, "offset": offset,
        "low_confidence": prediction_log.LOW_CONFIDENCE,
        "items": [{"id": row.id, "created_at": row.created_at, "label": row.label,
                   "confidence": row.confidence, "unknown": row.unknown,
                   "model_id": row.model_id, "photo_url": f"{base}/{row.id}/photo"}
                  for row in page.items],
    }


@router.get("/deployments/{slug}/log/{log_id}/photo")
def logged_photo(slug: str, log_id: int, session: SessionDep, user: UserDep,
                 storage: StorageDep):
    """The photo a logged prediction kept (the owner's alone)."""
    deployment = deployments.get_owned_deployment(session=session, owner=user, slug=slug)
    row = prediction_log.get_logged(session=session, deployment=deployment, log_id=log_id)
    return file_response(storage, row.image_key, media_type="image/jpeg",
                         headers={"Cache-Control": "private, max-age=300"})


@router.post("/deployments/{slug}/log/add")
def add_logged_photos(body: LogAddIn, slug: str, session: SessionDep, user: UserDep,
                      storage: StorageDep, settings: SettingsDep, serving: ServingDep):
    """Copy logged photos into the deployment's project as an upload would (same checks,
    exact duplicates reported, source "prediction log"): to the inbox when `label` is null,
    which starts the organize job as an upload does."""
    serving.log.flush()
    deployment = deployments.get_owned_deployment(session=session, owner=user, slug=slug)
    project_id = deployment.project_id
    result = prediction_log.add_to_project(
        session=session, storage=storage, deployment=deployment, log_ids=body.ids,
        label=body.label, limits=Limits.from_settings(settings))
    label_assist.organize_after_upload(session=session, settings=settings,
                                       project_id=project_id, added=result.added)
    return {"added": result.added, "duplicates": result.duplicates,
            "rejected": result.rejected}
