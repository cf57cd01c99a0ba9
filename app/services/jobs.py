"""Job state in the database: created by the web, claimed and reported by workers."""

import logging
import threading
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session, object_session, sessionmaker

from app.config import Settings
from app.db import session_scope
from app.models import Job, Project, User, utcnow
from app.queue import TASK_OF_KIND, enqueue
from app.services.errors import LimitExceededError, NotFoundError, UnavailableError

log = logging.getLogger(__name__)
TERMINAL = ("succeeded", "failed", "cancelled")
QUOTAS = {  # setting -> the kinds it bounds, per user and across projects, queued or running
    "max_active_searches": (("search", "url_import"), "searches and URL imports"),
    "max_active_trainings": (("training", "lr_find"), "trainings and learning-rate sweeps"),
}


class JobCancelled(Exception):
    """Raised inside a job's work when a person asked to cancel it."""


class JobAbandoned(JobCancelled):
    """The job ended while its worker was still at it (marked failed as stale, or cancelled)."""


def create_job(*, session: Session, project: Project, kind: str, params: dict) -> Job:
    job = Job(project_id=project.id, kind=kind, params=params)
    session.add(job)
    session.flush()
    return job


def check_quota(*, session: Session, settings: Settings, job: Job) -> None:
    """LimitExceededError when the job's owner has their limit of such jobs queued or running,
    across all their projects (the owner's row is locked, so two requests count one by one)."""
    quota = next(((setting, kinds, what) for setting, (kinds, what) in QUOTAS.items()
                  if job.kind in kinds), None)
    if quota is None:
        return
    setting, kinds, what = quota
    owner_id = session.scalar(select(Project.owner_id).where(Project.id == job.project_id))
    session.execute(select(User.id).where(User.id == owner_id).with_for_update())
    active = session.scalar(
        select(func.count()).select_from(Job).join(Project, Project.id == Job.project_id)
        .where(Project.owner_id == owner_id, Job.kind.in_(kinds), Job.id != job.id,
               Job.status.not_in(TERMINAL))
    ) or 0
    limit = getattr(settings, setting)
    if active >= limit:
        raise LimitExceededError(
            f"{active} {what} of yours are already queued or running (limit {limit} at once, "
            "across your projects); wait for one to finish or cancel one"
        )


def submit_job(*, session: Session, settings: Settings, job: Job, task: str) -> Job:
    """Check the owner's quota, commit the job, then enqueue it; a queue that does not answer
    fails the job at once."""
    check_quota(session=session, settings=settings, job=job)
    job.enqueued_at, job.deliveries = utcnow(), job.deliveries + 1
    session.commit()
    try:
        enqueue(settings, task, job.id)
    except Exception as exc:
        log.exception("could not enqueue job %s", job.id)
        job.status, job.finished_at = "failed", utcnow()
        job.error = f"the job queue is not answering ({type(exc).__name__}); try again later"
        session.commit()
        raise UnavailableError(job.error) from exc
    return job


def get_job(*, session: Session, owner: User, job_id: int, stale_seconds: int) -> Job:
    """The owner's job; a running job whose worker went silent is marked failed."""
    job = session.get(Job, job_id)
    if job is None or session.get(Project, job.project_id).owner_id != owner.id:
        raise NotFoundError(f"job {job_id} not found")
    fail_if_stale(job=job, stale_seconds=stale_seconds)
    return job


def list_jobs(*, session: Session, project: Project, limit: int = 50) -> list[Job]:
    query = select(Job).where(Job.project_id == project.id).order_by(Job.id.desc()).limit(limit)
    return list(session.scalars(query))


def fail_if_stale(*, job: Job, stale_seconds: int, now=None) -> None:
    """A running job without a heartbeat for `stale_seconds` has lost its worker."""
    now = now or utcnow()
    beat = job.heartbeat_at or job.started_at
    if job.status == "running" and (beat is None or now - beat > timedelta(seconds=stale_seconds)):
        job.status = "failed"
        job.error = f"the worker stopped responding (no heartbeat for {stale_seconds} s)"
        job.finished_at = now


def sweep(*, session: Session, settings: Settings) -> dict[str, int]:
    """Fail running jobs whose worker went silent; resend queued jobs the broker lost.

    A queued job still waiting `job_requeue_seconds` after it was sent is sent again (a
    duplicate delivery is harmless: claims are exactly-once), at most `job_max_deliveries`
    times in all; after that it fails with a message instead of waiting forever.
    """
    now = utcnow()
    counts = {"failed_stale": 0, "requeued": 0, "failed_lost": 0}
    silent = now - timedelta(seconds=settings.job_stale_seconds)
    running = select(Job).where(Job.status == "running").with_for_update(skip_locked=True)
    for job in session.scalars(running):
        beat = job.heartbeat_at or job.started_at
        if beat is None or beat < silent:
            fail_if_stale(job=job, stale_seconds=settings.job_stale_seconds, now=now)
            counts["failed_stale"] += 1
    waited = now - timedelta(seconds=settings.job_requeue_seconds)
    lost = select(Job).where(
        Job.status == "queued", or_(Job.enqueued_at.is_(None), Job.enqueued_at < waited)
    ).with_for_update(skip_locked=True)
    resend = []
    for job in session.scalars(lost):
        if job.deliveries >= settings.job_max_deliveries:
            job.status, job.finished_at = "failed", now
            job.error = (f"the job queue lost this job ({job.deliveries} deliveries without "
                         "a worker taking it); start it again")
            counts["failed_lost"] += 1
        else:
            job.enqueued_at, job.deliveries = now, job.deliveries + 1
            resend.append((job.id, TASK_OF_KIND[job.kind]))
    session.commit()
    for job_id, task in resend:
        try:
            enqueue(settings, task, job_id)
            counts["requeued"] += 1
        except Exception:
            log.exception("could not resend job %s; the next sweep tries again", job_id)
    if any(counts.values()):
        log.info("job sweep: %s", counts)
    return counts


def sweep_forever(*, factory: sessionmaker[Session], settings: Settings,
                  stop: threading.Event) -> None:
    """Sweep every `job_sweep_seconds` until `stop` is set (a worker's daemon thread)."""
    while not stop.wait(settings.job_sweep_seconds):
        try:
            with factory() as session:
                sweep(session=session, settings=settings)
        except Exception:
            log.exception("job sweep failed; trying again in %s s", settings.job_sweep_seconds)


def request_cancel(*, session: Session, job: Job) -> Job:
    """Cancel a queued job at once; ask a running one to stop at its next batch."""
    if job.status == "queued":
        job.status = "cancelled"
        job.finished_at = utcnow()
        job.message = "cancelled before it started"
    elif job.status == "running":
        job.cancel_requested = True
        job.message = "cancelling..."
    session.flush()
    return job


KIND_TITLES = {"search": "Search", "url_import": "URL import", "training": "Training",
               "lr_find": "Learning-rate sweep", "organize": "Inbox grouping"}


def job_title(kind: str, number: int) -> str:
    """A job's title, such as "Training #2": its kind, and its number among the project's jobs
    of that kind (ids are shared by every kind of job in every project)."""
    return f"{KIND_TITLES.get(kind, kind)} #{number}"


def job_titles(*, session: Session, project_id: int) -> dict[int, str]:
    """The title of each of a project's jobs, by id."""
    seen: dict[str, int] = {}
    titles = {}
    for job_id, kind in session.execute(
            select(Job.id, Job.kind).where(Job.project_id == project_id).order_by(Job.id)):
        seen[kind] = seen.get(kind, 0) + 1
        titles[job_id] = job_title(kind, seen[kind])
    return titles


def job_number(job: Job) -> int:
    """This job's number among its project's jobs of its kind."""
    return object_session(job).scalar(
        select(func.count()).select_from(Job)
        .where(Job.project_id == job.project_id, Job.kind == job.kind, Job.id <= job.id))


def job_view(job: Job) -> dict[str, Any]:
    """The job as the API shows it."""
    number = job_number(job)
    return {
        "id": job.id,
        "number": number,
        "title": job_title(job.kind, number),
        "project_id": job.project_id,
        "kind": job.kind,
        "status": job.status,
        "progress": round(job.progress, 4),
        "message": job.message,
        "error": job.error,
        "params": job.params,
        "result": job.result,
        "detail": job.detail,
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


class JobReporter:
    """A worker's handle on its job: claim, progress (throttled), cancel checks, outcome."""

    def __init__(self, factory: sessionmaker[Session], job_id: int, *, interval: float = 0.5):
        self.factory = factory
        self.job_id = job_id
        self.interval = interval
        self._last_write = self._last_check = float("-inf")
        self._cancel = False
        self.detail: dict[str, Any] = {}
        self._detail_dirty = False

    def update_detail(self, **values: Any) -> None:
        """Merge live details (counters, curves) into the job; written with the next progress."""
        self.detail.update(values)
        self._detail_dirty = True

    def claim(self, *, stale_seconds: int) -> Job | None:
        """Mark the job running, or None when it is finished or running elsewhere.

        One conditional UPDATE decides, so of two deliveries racing for the same job exactly
        one wins: a queued job, or a running one whose worker went silent (redelivered after
        a crash), is claimed; a running one with a fresh heartbeat is left to its worker.
        """
        now = utcnow()
        silent_since = now - timedelta(seconds=min(stale_seconds, 60))
        with session_scope(self.factory) as session:
            job = session.get(Job, self.job_id)
            if job is None or job.status in TERMINAL:
                return None
            claimable = or_(
                Job.status == "queued",
                and_(Job.status == "running",
                     or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < silent_since)),
            )
            if job.cancel_requested:
                session.execute(
                    update(Job).where(Job.id == self.job_id, claimable)
                    .values(status="cancelled", finished_at=now, message="cancelled")
                    .execution_options(synchronize_session=False)
                )
                return None
            claimed = session.execute(
                update(Job).where(Job.id == self.job_id, claimable, ~Job.cancel_requested)
                .values(status="running", started_at=now, heartbeat_at=now, progress=0.0,
                        error=None, message="starting")
                .execution_options(synchronize_session=False)
            ).rowcount
            if claimed != 1:
                log.info("job %s is claimed elsewhere; skipping this delivery", self.job_id)
                return None
            session.refresh(job)
            log.info("job %s claimed; running it here", self.job_id)
            return job

    def _job(self, session: Session) -> Job:
        """The job row; gone means its project was deleted while the job ran."""
        job = session.get(Job, self.job_id)
        if job is None:
            raise JobAbandoned(f"job {self.job_id} was deleted with its project")
        return job

    def progress(self, fraction: float, message: str, extra: dict | None = None) -> None:
        """Record progress and a heartbeat, at most every `interval` seconds."""
        now = time.monotonic()
        if now - self._last_write < self.interval and fraction < 1.0 and not self._detail_dirty:
            return
        self._last_write = now
        with session_scope(self.factory) as session:
            job = self._job(session)
            job.progress = max(0.0, min(1.0, float(fraction)))
            job.message = message[:500]
            job.heartbeat_at = utcnow()
            if self._detail_dirty:
                job.detail = dict(self.detail)
                self._detail_dirty = False
            self._cancel = job.cancel_requested

    def should_stop(self) -> bool:
        """Whether a person asked to cancel (read with each progress write)."""
        now = time.monotonic()
        if now - max(self._last_write, self._last_check) >= self.interval:
            self._last_check = now
            with session_scope(self.factory) as session:
                self._cancel = self._job(session).cancel_requested
        return self._cancel

    def finish(self, *, status: str, message: str = "", result: dict | None = None,
               error: str | None = None, session: Session | None = None) -> None:
        """Record the job's outcome (in `session` when given, so it commits with other rows)."""
        own_session = session is None
        if own_session:
            session = self.factory()
        try:
            self._finish(session, status=status, message=message, result=result, error=error,
                         own_session=own_session)
            if own_session:
                session.commit()
        finally:
            if own_session:
                session.close()

    def _finish(self, session: Session, *, status: str, message: str, result: dict | None,
                error: str | None, own_session: bool) -> None:
        job = session.get(Job, self.job_id)
        if job is None:
            log.warning("job %s was deleted with its project; dropping %s", self.job_id, status)
            if own_session:
                return
            raise JobAbandoned(f"job {self.job_id} was deleted with its project")
        if job.status in TERMINAL:
            # A worker that came back after its job was failed as stale does not overwrite
            # that outcome; inside the caller's transaction, its other rows roll back too.
            log.warning("job %s already ended as %s; dropping %s", self.job_id, job.status,
                        status)
            if own_session:
                return
            raise JobAbandoned(f"job {self.job_id} already ended as {job.status}")
        job.status, job.message, job.result, job.error = status, message, result, error
        job.finished_at = utcnow()
        if status == "succeeded":
            job.progress = 1.0
