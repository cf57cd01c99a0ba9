"""Gathering jobs, the web side: start a web image search or a URL-list import into a label
(or, without one, into the inbox).

Each start commits the job (within its owner's quota: jobs.check_quota), then enqueues it; the
worker runs it with `gather_pipeline.run_gathering`. `search_results` lists what a job found.
"""

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import Settings
from app.models import Job, Project, SearchResult
from app.queue import IMPORT_TASK, SEARCH_TASK
from app.services import search
from app.services.errors import InvalidInputError, NotFoundError
from app.services.jobs import create_job, submit_job
from app.services.projects import add_label, clean_name

KINDS = {"search": SEARCH_TASK, "url_import": IMPORT_TASK}
MAX_IMAGES = 1000
MAX_URLS = 1000


def _label_for(*, session: Session, project: Project, name: str):
    name = clean_name(name, what="label name")
    for label in project.labels:
        if label.name.lower() == name.lower():
            return label
    return add_label(session=session, project=project, name=name)


def start_search(*, session: Session, settings: Settings, project: Project, label: str | None,
                 query: str | None = None, max_images: int | None = None,
                 provider: str | None = None, licence: str | None = None) -> Job:
    """Create a search job for a label (made if missing), commit, then enqueue it; `licence`
    (a key of search.LICENCES) keeps only images published under that licence."""
    provider = provider or settings.search_provider
    if provider not in search.PROVIDERS and provider != settings.search_provider:
        raise InvalidInputError(
            f"unknown provider {provider!r}; use one of {', '.join(sorted(search.PROVIDERS))}"
        )
    max_images = max_images or settings.search_max_images
    if not 1 <= max_images <= MAX_IMAGES:
        raise InvalidInputError(f"max_images must be between 1 and {MAX_IMAGES}")
    if licence and licence not in search.LICENCES:
        raise InvalidInputError(
            f"unknown licence {licence!r}; use one of {', '.join(search.LICENCES)}, or none "
            "for any licence")
    row = _label_for(session=session, project=project, name=label) if label else None
    query = " ".join((query or (row.query or row.name if row else "")).split())[:500]
    if not query:
        raise InvalidInputError("query must not be empty" if row else
                                "give a `query` (or a `label` to search for)")
    params = {"label": row.name if row else None, "label_id": row.id if row else None,
              "query": query,
              "max_images": max_images, "provider": provider, "licence": licence or None}
    return _enqueue(session=session, settings=settings, project=project, kind="search",
                    params=params)


def start_url_import(*, session: Session, settings: Settings, project: Project,
                     label: str | None, urls: list[str]) -> Job:
    """Create a URL-list import job for a label (made if missing; None: into the inbox),
    commit, then enqueue it."""
    cleaned = list(dict.fromkeys(u.strip() for u in urls if u and u.strip()))
    if not cleaned:
        raise InvalidInputError("urls must hold at least one http(s) URL")
    if len(cleaned) > MAX_URLS:
        raise InvalidInputError(f"at most {MAX_URLS} URLs per import (got {len(cleaned)})")
    bad = [u for u in cleaned if not u.lower().startswith(("http://", "https://"))]
    if bad:
        raise InvalidInputError(f"only http(s) URLs can be imported: {bad[0][:200]!r}")
    row = _label_for(session=session, project=project, name=label) if label else None
    params = {"label": row.name if row else None, "label_id": row.id if row else None,
              "urls": cleaned}
    return _enqueue(session=session, settings=settings, project=project, kind="url_import",
                    params=params)


def _enqueue(*, session: Session, settings: Settings, project: Project, kind: str,
             params: dict) -> Job:
    job = create_job(session=session, project=project, kind=kind, params=params)
    return submit_job(session=session, settings=settings, job=job, task=KINDS[kind])


def search_results(*, session: Session, project: Project, job_id: int) -> list[SearchResult]:
    """The stored URL list of a gathering job of this project, in provider order."""
    job = session.get(Job, job_id)
    if job is None or job.project_id != project.id or job.kind not in KINDS:
        raise NotFoundError(f"gathering job {job_id} not found in this project")
    query = select(SearchResult).where(SearchResult.job_id == job_id)
    return list(session.scalars(query.order_by(SearchResult.position)))
