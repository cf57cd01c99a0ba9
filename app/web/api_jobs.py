"""API v1: trainings and jobs (list, one, cancel, live events)."""

import asyncio
import json

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from app.schemas import (
    TrainingIn,
)
from app.services import jobs, training
from app.web.deps import (
    ProjectDep,
    SessionDep,
    SettingsDep,
    UserDep,
)

router = APIRouter(prefix="/api/v1")


@router.post("/projects/{project_id}/trainings", status_code=202)
def start_training(
    project: ProjectDep, session: SessionDep, settings: SettingsDep,
    body: TrainingIn | None = None,
):
    recipe = body.model_dump(exclude_none=True) if body else {}
    job = training.start_training(session=session, settings=settings, project=project,
                                  recipe=recipe)
    return jobs.job_view(job)


@router.get("/projects/{project_id}/jobs")
def list_jobs(project: ProjectDep, session: SessionDep, settings: SettingsDep):
    found = jobs.list_jobs(session=session, project=project)
    for job in found:
        jobs.fail_if_stale(job=job, stale_seconds=settings.job_stale_seconds)
    session.commit()
    return [jobs.job_view(job) for job in found]


@router.get("/jobs/{job_id}")
def get_job(job_id: int, session: SessionDep, user: UserDep, settings: SettingsDep):
    job = jobs.get_job(session=session, owner=user, job_id=job_id,
                       stale_seconds=settings.job_stale_seconds)
    session.commit()
    return jobs.job_view(job)


@router.post("/jobs/{job_id}/cancel")
def cancel_job(job_id: int, session: SessionDep, user: UserDep, settings: SettingsDep):
    job = jobs.get_job(session=session, owner=user, job_id=job_id,
                       stale_seconds=settings.job_stale_seconds)
    jobs.request_cancel(session=session, job=job)
    session.commit()
    return jobs.job_view(job)


@router.get("/jobs/{job_id}/events")
async def job_events(job_id: int, request: Request, user: UserDep, settings: SettingsDep):
    factory = request.app.state.session_factory

    def snapshot() -> dict:
        with factory() as session:
            job = jobs.get_job(session=session, owner=user, job_id=job_id,
                               stale_seconds=settings.job_stale_seconds)
            session.commit()
            return jobs.job_view(job)

    first = await run_in_threadpool(snapshot)  # 404 before the stream starts
    release = request.app.state.event_streams.take(user.id)  # 429 above the user's limit

    async def stream():
        view, last = first, None
        try:
            while True:
                if view != last:
                    yield f"event: job\ndata: {json.dumps(view)}\n\n"
                    last = view
                if view["status"] in jobs.TERMINAL or await request.is_disconnected():
                    return
                await asyncio.sleep(0.5)
                view = await run_in_threadpool(snapshot)
        finally:
            release()

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                             background=BackgroundTask(release))  # also when never started


# --- models and deployments -----------------------------------------------------------------


