"""Real processes: the `kodiak` web server and Celery workers, PostgreSQL and Redis."""

import os
import secrets
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
import pytest
import redis

from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, REPO

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/{db}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def base_env(home: Path, port: int, **extra: str) -> dict[str, str]:
    dropped = ("DATABASE_URL", "BROKER_URL", "STORAGE_URL")
    env = {k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("KODIAK_")}
    env.update({
        "KODIAK_HOME": str(home),
        "KODIAK_PORT": str(port),
        "KODIAK_ADMIN_EMAIL": ADMIN_EMAIL,
        "KODIAK_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


@contextmanager
def running(args: list[str], env: dict[str, str], log: Path, *, module: str = "app.cli"):
    """`python -m module *args` (`kodiak` by default), stopped (SIGTERM, then SIGKILL) at the
    end; its output goes to `log`."""
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", module, *args], env=env, cwd=REPO,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_healthy(base_url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited early:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{base_url}/api/v1/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"server did not answer within {timeout} s:\n{log.read_text()[-4000:]}")


@pytest.fixture
def postgres_url():
    """A fresh PostgreSQL database, dropped afterwards."""
    name = f"kodiak_it_{secrets.token_hex(4)}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not answering on 127.0.0.1:5432 ({exc}); run `make services`")
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@contextmanager
def empty_redis(url: str):
    """A client of the Redis database at `url`, emptied before and after use."""
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not answering on 127.0.0.1:6379 ({exc}); run `make services`")
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


@pytest.fixture
def redis_url(request):
    """A Redis database emptied before use: the module's REDIS_DB (11 by default), so test
    modules that run workers never share a queue."""
    url = REDIS_URL.format(db=getattr(request.module, "REDIS_DB", 11))
    with empty_redis(url):
        yield url
