"""Gathering endpoints of API v1: web image search, URL-list import, duplicates, results."""

from fastapi import APIRouter

from app.models import SearchResult
from app.schemas import SearchIn, UrlImportIn
from app.services import catalog, gathering, jobs
from app.web.api import image_out
from app.web.deps import ProjectDep, SessionDep, SettingsDep

router = APIRouter(prefix="/api/v1")


def search_result_out(row: SearchResult) -> dict:
    return {
        "id": row.id,
        "position": row.position,
        "image_url": row.image_url,
        "page_url": row.page_url,
        "title": row.title,
        "provider": row.provider,
        "query": row.query,
        "licence": row.licence,
        "status": row.status,
        "reason": row.reason,
        "image_id": row.image_id,
    }


@router.post("/projects/{project_id}/searches", status_code=202)
def start_search(body: SearchIn, project: ProjectDep, session: SessionDep,
                 settings: SettingsDep):
    job = gathering.start_search(session=session, settings=settings, project=project,
                                 label=body.label, query=body.query,
                                 max_images=body.max_images, provider=body.provider,
                                 licence=body.licence)
    return jobs.job_view(job)


@router.post("/projects/{project_id}/url-imports", status_code=202)
def start_url_import(body: UrlImportIn, project: ProjectDep, session: SessionDep,
                     settings: SettingsDep):
    job = gathering.start_url_import(session=session, settings=settings, project=project,
                                     label=body.label, urls=body.urls)
    return jobs.job_view(job)


@router.get("/projects/{project_id}/search-results")
def search_results(job_id: int, project: ProjectDep, session: SessionDep):
    rows = gathering.search_results(session=session, project=project, job_id=job_id)
    return {"job_id": job_id, "results": [search_result_out(row) for row in rows]}


@router.get("/projects/{project_id}/duplicates")
def duplicate_groups(project: ProjectDep, session: SessionDep):
    groups = catalog.duplicate_groups(session=session, project=project)
    return {"groups": [
        {"group": images[0].duplicate_group,
         "images": [{**image_out(image), "duplicate_group": image.duplicate_group}
                    for image in images]}
        for images in groups
    ]}
