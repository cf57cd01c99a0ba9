"""Exactly-once job claims: many deliveries of one job race on PostgreSQL; one wins."""

import threading

from alembic import command

from app.cli import alembic_config
from app.db import make_engine, make_session_factory, session_scope
from app.models import Job
from app.services import auth, jobs, projects

RACERS = 8


def test_only_one_of_many_racing_deliveries_claims_a_job(postgres_url):
    command.upgrade(alembic_config(postgres_url), "heads")
    engine = make_engine(postgres_url)
    factory = make_session_factory(engine)
    with session_scope(factory) as session:
        user = auth.create_user(session=session, email="c@example.com", password="pw-123456")
        project = projects.create_project(session=session, owner=user, name="p")
        job_ids = [jobs.create_job(session=session, project=project, kind="training",
                                   params={}).id for _ in range(10)]
    for job_id in job_ids:
        start = threading.Barrier(RACERS)
        wins = []

        def deliver(job_id=job_id, start=start, wins=wins):
            reporter = jobs.JobReporter(factory, job_id)
            start.wait()
            if reporter.claim(stale_seconds=600) is not None:
                wins.append(threading.get_ident())

        threads = [threading.Thread(target=deliver) for _ in range(RACERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(wins) == 1, f"job {job_id} claimed {len(wins)} times"
        with factory() as session:
            assert session.get(Job, job_id).status == "running"
    engine.dispose()
