"""Helpers of the fault tests: Kodiak processes with their edges swapped (faulty.py), a signed-in
client, jobs waited for, and the store checked against the database."""

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx

from app.config import Settings
from app.db import make_engine, make_session_factory
from app.services import maintenance
from app.storage import open_storage
from tests.conftest import REPO
from tests.integration.conftest import running
from tests.integration.test_bear_flow import sign_in

FAULTY = "tests.integration.faulty"


def process(args: list[str], env: dict[str, str], log: Path, *, module: str = FAULTY):
    """`python -m module *args` (the faulty launcher by default), stopped at the end."""
    return running(args, env, log, module=module)


def wait_ready(*logs: Path, timeout: float = 60) -> None:
    """Until each Celery worker's log says it is ready to take tasks."""
    deadline = time.monotonic() + timeout
    for log in logs:
        while b"ready." not in log.read_bytes():
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)


def migrate(env: dict[str, str], home: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "app.cli", "migrate"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def admin_client(base_url: str) -> tuple[httpx.Client, dict[str, str]]:
    http = httpx.Client(base_url=base_url, timeout=60)
    return http, sign_in(http, "admin@example.com", "admin-password-1")


def spec(**values) -> str:
    """A search query for faulty.SpecProvider."""
    return json.dumps(values)


def search(http: httpx.Client, headers: dict, project_id: int, query: str, *,
           label: str = "black", max_images: int = 150) -> dict:
    answer = http.post(f"/api/v1/projects/{project_id}/searches", headers=headers,
                       json={"label": label, "query": query, "max_images": max_images})
    assert answer.status_code == 202, answer.text
    return answer.json()


def wait_job(http: httpx.Client, headers: dict, job_id: int, *, timeout: float = 60,
             until=lambda job: job["status"] not in ("queued", "running")) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = http.get(f"/api/v1/jobs/{job_id}", headers=headers).json()
        if until(job):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.2)


def image_count(http: httpx.Client, headers: dict, project_id: int) -> int:
    return http.get(f"/api/v1/projects/{project_id}/images", headers=headers,
                    params={"limit": 1}).json()["total"]


def store_check(settings: Settings, *, repair: bool = False) -> maintenance.CheckReport:
    """`kodiak check` of this Kodiak's database and store, files of any age."""
    engine = make_engine(settings.resolved_database_url())
    try:
        with make_session_factory(engine)() as session:
            return maintenance.check(session=session, settings=settings, repair=repair,
                                     storage=open_storage(settings.resolved_storage_url()),
                                     grace_s=0)
    finally:
        engine.dispose()
