"""Job state: claimed once, redelivery-safe, cancellable, never stuck running."""

from datetime import timedelta

import pytest

from app.db import make_engine, make_session_factory, session_scope
from app.models import Job, utcnow
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


def test_silent_running_job_is_failed_and_can_be_reclaimed(factory, job_id):
    jobs.JobReporter(factory, job_id).claim(stale_seconds=600)
    with session_scope(factory) as session:
        job = session.get(Job, job_id)
        job.heartbeat_at = utcnow() - timedelta(seconds=700)
        jobs.fail_if_stale(job=job, stale_seconds=600)
        assert job.status == "failed" and "stopped responding" in job.error


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
