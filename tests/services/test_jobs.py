"""Job state: claimed once, redelivery-safe, cancellable, never stuck running."""

from datetime import timedelta

import pytest

from app.db import make_engine, make_session_factory, session_scope
from app.models import Job, Project, utcnow
from app.services import auth, jobs, projects


@pytest.fixture
def factory(settings):
    engine = make_engine(settings.resolved_database_url())
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def job_id(factory):
    with session_scope(factory) as session:
        user = auth.create_user(session=session, email="j@example.com", password="pw-123456")
        project = projects.create_project(session=session, owner=user, name="p")
        return jobs.create_job(session=session, project=project, kind="training", params={}).id


def status(factory, job_id):
    with factory() as session:
        return session.get(Job, job_id).status


def test_claim_once_then_redelivery_is_skipped(factory, job_id):
    first = jobs.JobReporter(factory, job_id)
    assert first.claim(stale_seconds=600) is not None
    assert jobs.JobReporter(factory, job_id).claim(stale_seconds=600) is None
    first.finish(status="succeeded", result={"model_id": 1})
    assert jobs.JobReporter(factory, job_id).claim(stale_seconds=600) is None
    assert status(factory, job_id) == "succeeded"


def test_cancel_queued_is_immediate_and_running_is_asked(factory, job_id):
    with session_scope(factory) as session:
        jobs.request_cancel(session=session, job=session.get(Job, job_id))
    assert status(factory, job_id) == "cancelled"
    assert jobs.JobReporter(factory, job_id).claim(stale_seconds=600) is None


def test_running_job_sees_cancel_request(factory, job_id):
    reporter = jobs.JobReporter(factory, job_id, interval=0)
    reporter.claim(stale_seconds=600)
    assert reporter.should_stop() is False
    with session_scope(factory) as session:
        jobs.request_cancel(session=session, job=session.get(Job, job_id))
    assert reporter.should_stop() is True


def test_silent_running_job_is_failed_and_a_redelivery_reclaims_a_silent_one(factory, job_id):
    jobs.JobReporter(factory, job_id).claim(stale_seconds=600)
    # A redelivery while the first worker still beats is refused...
    assert jobs.JobReporter(factory, job_id).claim(stale_seconds=600) is None
    with session_scope(factory) as session:
        session.get(Job, job_id).heartbeat_at = utcnow() - timedelta(seconds=120)
    # ...and taken over once that worker has been silent for a minute (it crashed).
    assert jobs.JobReporter(factory, job_id).claim(stale_seconds=600) is not None
    assert status(factory, job_id) == "running"
    with session_scope(factory) as session:
        job = session.get(Job, job_id)
        assert utcnow() - job.heartbeat_at < timedelta(seconds=5)
        job.heartbeat_at = utcnow() - timedelta(seconds=700)
        jobs.fail_if_stale(job=job, stale_seconds=600)
        assert job.status == "failed" and "stopped responding" in job.error
    assert jobs.JobReporter(factory, job_id).claim(stale_seconds=600) is None


def test_progress_writes_heartbeat_and_clamps(factory, job_id):
    reporter = jobs.JobReporter(factory, job_id, interval=0)
    reporter.claim(stale_seconds=600)
    reporter.progress(1.7, "almost")
    with factory() as session:
        job = session.get(Job, job_id)
        assert job.progress == 1.0 and job.message == "almost" and job.heartbeat_at is not None


def test_detail_is_written_with_the_next_progress(factory, job_id):
    reporter = jobs.JobReporter(factory, job_id, interval=3600)
    reporter.claim(stale_seconds=600)
    reporter.progress(0.1, "first")  # written: the first write is never throttled
    reporter.progress(0.2, "throttled")
    with factory() as session:
        assert session.get(Job, job_id).message == "first"
    reporter.update_detail(found=12)
    reporter.progress(0.3, "with detail")
    with factory() as session:
        job = session.get(Job, job_id)
        assert job.detail == {"found": 12} and job.message == "with detail"


def test_a_worker_that_comes_back_does_not_overwrite_a_stale_failure(factory, job_id):
    reporter = jobs.JobReporter(factory, job_id)
    reporter.claim(stale_seconds=600)
    with session_scope(factory) as session:
        job = session.get(Job, job_id)
        job.heartbeat_at = utcnow() - timedelta(seconds=700)
        jobs.fail_if_stale(job=job, stale_seconds=600)
    reporter.finish(status="succeeded", result={"model_id": 1})
    assert status(factory, job_id) == "failed"
    with pytest.raises(jobs.JobAbandoned), session_scope(factory) as session:
        reporter.finish(status="succeeded", result={"model_id": 1}, session=session)


def test_a_job_deleted_with_its_project_stops_its_worker_cleanly(factory, job_id):
    reporter = jobs.JobReporter(factory, job_id, interval=0)
    reporter.claim(stale_seconds=600)
    with session_scope(factory) as session:
        session.delete(session.get(Project, session.get(Job, job_id).project_id))
    with pytest.raises(jobs.JobAbandoned, match="deleted with its project"):
        reporter.progress(0.5, "half way")
    with pytest.raises(jobs.JobAbandoned):
        reporter.should_stop()
    reporter.finish(status="cancelled", message="cancelled")  # logs, never raises
    with pytest.raises(jobs.JobAbandoned), session_scope(factory) as session:
        reporter.finish(status="succeeded", session=session)


def _age(factory, job_id, **fields):
    with session_scope(factory) as session:
        job = session.get(Job, job_id)
        for name, value in fields.items():
            setattr(job, name, value)


def test_sweep_fails_silent_running_jobs(factory, job_id, settings):
    jobs.JobReporter(factory, job_id).claim(stale_seconds=600)
    with factory() as session:
        assert jobs.sweep(session=session, settings=settings)["failed_stale"] == 0
    silent = timedelta(seconds=settings.job_stale_seconds + 5)
    _age(factory, job_id, heartbeat_at=utcnow() - silent)
    with factory() as session:
        assert jobs.sweep(session=session, settings=settings)["failed_stale"] == 1
    assert status(factory, job_id) == "failed"


def test_sweep_resends_a_lost_queued_job_then_fails_it(factory, job_id, settings, monkeypatch):
    sent = []
    monkeypatch.setattr(jobs, "enqueue", lambda _settings, task, *args: sent.append((task, args)))
    waited = timedelta(seconds=settings.job_requeue_seconds + 1)
    _age(factory, job_id, enqueued_at=utcnow(), deliveries=1)
    with factory() as session:
        assert jobs.sweep(session=session, settings=settings)["requeued"] == 0
    for delivery in range(2, settings.job_max_deliveries + 1):
        _age(factory, job_id, enqueued_at=utcnow() - waited)
        with factory() as session:
            assert jobs.sweep(session=session, settings=settings)["requeued"] == 1
        with factory() as session:
            assert session.get(Job, job_id).deliveries == delivery
    assert sent == [("kodiak.train", (job_id,))] * (settings.job_max_deliveries - 1)
    _age(factory, job_id, enqueued_at=utcnow() - waited)
    with factory() as session:
        assert jobs.sweep(session=session, settings=settings)["failed_lost"] == 1
    with factory() as session:
        job = session.get(Job, job_id)
        assert job.status == "failed" and "lost this job" in job.error
