"""Label assist's JSON API: the inbox (images without a label) with clusters and suggestions,
the organize job, accepting suggestions in bulk, and similar images."""

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from app.models import Image, InboxSuggestion
from app.schemas import InboxAcceptIn
from app.services import catalog, jobs, label_assist
from app.web.deps import ProjectDep, SessionDep, SettingsDep, UserDep

router = APIRouter(prefix="/api/v1")


def suggestion_out(row: InboxSuggestion | None) -> dict | None:
    if row is None or row.label is None:
        return None
    return {"label": row.label, "confidence": row.confidence}


@router.post("/projects/{project_id}/inbox/organize", status_code=202)
def organize(project: ProjectDep, session: SessionDep, settings: SettingsDep):
    """Embed the images not embedded yet, group the inbox by look and, with a model, suggest
    a label for each inbox image (it runs by itself after uploads and trainings)."""
    job = label_assist.start_organize(session=session, settings=settings, project=project)
    return {"job": jobs.job_view(job)}


@router.get("/projects/{project_id}/inbox")
def inbox(
    project: ProjectDep, session: SessionDep,
    cluster: Annotated[int | None, Query(ge=0, le=2**31 - 1)] = None,
    order: Literal["cluster", "confidence", "informative"] = "cluster",
    limit: Annotated[int, Query(ge=1, le=500)] = 60,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
):
    """The project's images without a label: `cluster` (one group by look), `order`
    (cluster: typical first; confidence: most confident suggestion first; informative: the
    ones a label teaches the next model most first)."""
    page = label_assist.list_inbox(session=session, project=project, cluster=cluster,
                                   order=order, limit=limit, offset=offset)
    return {
        "total": page.total, "limit": limit, "offset": offset,
        "items": [{"id": image_id, "thumb_url": f"/api/v1/images/{image_id}/thumb?size=240",
                   "file_url": f"/api/v1/images/{image_id}/file",
                   "cluster": row.cluster if row else None,
                   "suggestion": suggestion_out(row)} for image_id, row in page.items],
        "clusters": page.clusters,
        "model_id": page.model_id,
        "embedded": page.embedded,
        "pending": page.pending,
        "organize_job": jobs.job_view(page.organize_job) if page.organize_job else None,
    }


@router.post("/projects/{project_id}/inbox/accept")
def accept(body: InboxAcceptIn, project: ProjectDep, session: SessionDep):
    """Label every inbox image whose suggestion is at least `min_confidence`; `undo` holds
    images/bulk bodies that put them back in the inbox."""
    result = label_assist.accept_suggestions(session=session, project=project,
                                             min_confidence=body.min_confidence,
                                             cluster=body.cluster)
    session.commit()
    return result


@router.get("/images/{image_id}/similar")
def similar(image_id: int, session: SessionDep, user: UserDep,
            limit: Annotated[int, Query(ge=1, le=200)] = 24):
    """The project's images nearest to this one by look (cosine distance of embeddings)."""
    image = catalog.get_owned_image(session=session, owner=user, image_id=image_id)
    found = label_assist.similar_images(session=session, image=image, limit=limit)
    return {"items": [item_out(row, distance) for row, distance in found]}


def item_out(image: Image, distance: float) -> dict:
    return {"id": image.id, "thumb_url": f"/api/v1/images/{image.id}/thumb?size=240",
            "file_url": f"/api/v1/images/{image.id}/file",
            "label": image.label.name if image.label else None,
            "distance": round(distance, 6)}
