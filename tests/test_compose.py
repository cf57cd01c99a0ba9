"""The container files: docker-compose.yml validates and has the structure that matters,
and the Dockerfile installs Kodiak from pyproject.toml without contradicting it.

No Docker engine runs on development or CI machines; `docker-compose config -q` (Debian
package `docker-compose`, v1.29) validates the file without one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PYPROJECT = ROOT / "pyproject.toml"

KODIAK_SERVICES = ("migrate", "web", "worker-gather", "worker-train")
WORKERS = ("worker-gather", "worker-train")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _command(service: dict) -> list[str]:
    cmd = service["command"]
    return cmd.split() if isinstance(cmd, str) else [str(part) for part in cmd]


def test_compose_config_validates() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        reason = (
            "docker-compose binary not found; install it with "
            "`apt-get update && apt-get install -y docker-compose`"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    result = subprocess.run(
        [binary, "-f", str(COMPOSE), "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr or result.stdout


def test_kodiak_services_share_one_image_and_env(compose: dict) -> None:
    services = compose["services"]
    for name in KODIAK_SERVICES:
        assert name in services, name
    builds = [services[name].get("build") for name in KODIAK_SERVICES]
    assert builds[0] and all(build == builds[0] for build in builds), builds
    images = {services[name].get("image") for name in KODIAK_SERVICES}
    assert len(images) == 1, images
    envs = [services[name]["environment"] for name in KODIAK_SERVICES]
    assert all(env == compose["x-kodiak-env"] for env in envs)
    for key in ("DATABASE_URL", "BROKER_URL", "STORAGE_URL", "KODIAK_HOME"):
        assert key in compose["x-kodiak-env"], key
    assert compose["x-kodiak-env"]["DATABASE_URL"].startswith("postgresql+psycopg://")
    assert compose["x-kodiak-env"]["BROKER_URL"].startswith("redis://redis:")


def test_backing_services_have_healthchecks(compose: dict) -> None:
    services = compose["services"]
    assert services["postgres"]["image"].startswith("postgres:16")
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["postgres"].get("volumes")
    assert services["redis"]["image"].startswith("redis:7")
    assert "redis-cli" in services["redis"]["healthcheck"]["test"]
    assert "ping" in services["redis"]["healthcheck"]["test"]


def test_startup_order(compose: dict) -> None:
    services = compose["services"]
    assert _command(services["migrate"]) == ["kodiak", "migrate"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("web", *WORKERS):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully", name
        assert deps["redis"]["condition"] == "service_healthy", name


def test_web(compose: dict) -> None:
    web = compose["services"]["web"]
    assert _command(web) == ["kodiak", "web"]
    assert any(str(p).split(":")[-1] == "8000" for p in web["ports"])
    assert "/api/v1/health" in " ".join(web["healthcheck"]["test"])


def test_workers_queues_pool_and_gpu(compose: dict) -> None:
    services = compose["services"]
    gather = _command(services["worker-gather"])
    assert gather[:2] == ["kodiak", "worker"]
    assert gather[gather.index("--queues") + 1] == "gather"
    assert gather[gather.index("--concurrency") + 1] == "8"

    train = services["worker-train"]
    cmd = _command(train)
    assert cmd[:2] == ["kodiak", "worker"]
    assert cmd[cmd.index("--queues") + 1] == "train"
    assert cmd[cmd.index("--pool") + 1] == "solo"  # CUDA does not survive fork
    devices = train["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        d.get("driver") == "nvidia" and d.get("count") == 1 and "gpu" in d.get("capabilities", [])
        for d in devices
    )
    assert "deploy" not in services["worker-gather"]


def test_web_and_workers_share_storage_volume(compose: dict) -> None:
    services = compose["services"]
    storage_url = compose["x-kodiak-env"]["STORAGE_URL"]
    assert storage_url.startswith("file://")
    path = storage_url.removeprefix("file://")
    mounts = {name: set(map(str, services[name].get("volumes", []))) for name in ("web", *WORKERS)}
    shared = set.intersection(*mounts.values())
    assert any(m.endswith(":" + path) for m in shared), mounts
    volume = next(m for m in shared if m.endswith(":" + path)).split(":")[0]
    assert volume in compose["volumes"]


def test_dockerfile_agrees_with_pyproject() -> None:
    dockerfile = DOCKERFILE.read_text()
    pyproject = tomllib.loads(PYPROJECT.read_text())
    instructions = [
        line.strip()
        for line in dockerfile.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]

    froms = [line.split()[1] for line in instructions if line.upper().startswith("FROM ")]
    assert froms == ["python:3.11-slim"], froms
    assert pyproject["project"]["requires-python"] == ">=3.11,<3.12"

    # Installs the project itself from pyproject.toml, with plain pip and no cache.
    runs = " ".join(line for line in instructions if line.upper().startswith("RUN "))
    assert re.search(r"pip install --no-cache-dir \.(\s|$)", runs), runs
    assert "requirements" not in runs

    # Nothing pinned in the Dockerfile that pyproject does not say: every `name==version`
    # or `name>=...` in a pip line must be absent or identical in pyproject.
    declared = {
        re.split(r"[\[<>=!~ ;]", dep, maxsplit=1)[0].lower(): dep
        for dep in pyproject["project"]["dependencies"]
    }
    for pin in re.findall(r"([A-Za-z0-9_.\-]+)\s*(==|>=|<=|~=)\s*([A-Za-z0-9_.+\-]+)", runs):
        name, op, version = pin
        assert name.lower() in declared, f"Dockerfile installs {name} not in pyproject"
        spec = declared[name.lower()]
        assert f"{op}{version}" in spec, f"Dockerfile {name}{op}{version} vs pyproject {spec}"
    assert "torch==2.14.1" in pyproject["project"]["dependencies"]
    assert "torchvision==0.29.1" in pyproject["project"]["dependencies"]
    assert "index-url" not in runs  # torch comes from the same index pyproject resolves on

    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), users
    assert "PYTHONDONTWRITEBYTECODE" in dockerfile and "PYTHONUNBUFFERED" in dockerfile
    assert any(line.startswith("HEALTHCHECK") for line in instructions)
    assert "/api/v1/health" in dockerfile


def test_dockerignore_keeps_what_pip_needs() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv"} <= ignored
    for needed in ("pyproject.toml", "app", "workers", "README.md", "migrations", "alembic.ini"):
        assert needed not in ignored, needed
