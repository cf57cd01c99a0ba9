"""The attacks of a stranger against a real `kodiak web` process, its memory read from /proc.

A public deployment (a tiny ONNX model, no training) and a signed-up attacker with an API key;
then, one after another: a batch of highly compressible giant PNGs to the public predict,
many zip bombs in one upload, multi-megabyte JSON before sign-in, a zip with encrypted and
damaged members, and 30 wrong passwords. Meanwhile a thread keeps asking /api/v1/health.
Every answer must be a 2xx with per-file reasons or a 4xx, health must keep answering, and
the web process's peak RSS (VmHWM) must stay under 1 GB.
"""

import io
import threading
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from app.db import make_engine, make_session_factory, session_scope
from app.models import ModelVersion
from app.services import auth, deployments, projects
from app.storage import open_storage
from tests.conftest import make_settings
from tests.integration.conftest import base_env, free_port, running, wait_healthy
from tests.ml.test_images import flat_png
from tests.security.conftest import tiny_model
from tests.security.test_zip_budget import make_zip, patch_member

pytestmark = pytest.mark.integration
PEAK_LIMIT_MB = 1024


def rss_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def zip_bomb(megabytes: int) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("grizzly/huge.jpg", "w", force_zip64=True) as member:
            block = b"\0" * 2**20
            for _ in range(megabytes):
                member.write(block)
    return out.getvalue()


@pytest.fixture
def live(tmp_path, data_dir):
    port = free_port()
    settings = make_settings(tmp_path, database_url=f"sqlite:///{tmp_path / 'kodiak.db'}")
    env = base_env(tmp_path, port, DATABASE_URL=settings.resolved_database_url(),
                   STORAGE_URL=settings.resolved_storage_url())
    with running(["migrate"], env, tmp_path / "migrate.log") as migrate:
        assert migrate.wait(timeout=120) == 0, (tmp_path / "migrate.log").read_text()
    engine = make_engine(settings.resolved_database_url())
    storage = open_storage(settings.resolved_storage_url(), settings)
    with session_scope(make_session_factory(engine)) as session:
        owner = auth.create_user(session=session, email="owner@example.com",
                                 password="owner-password")
        attacker = auth.create_user(session=session, email="mallory@example.com",
                                    password="mallory-password")
        key = auth.create_api_key(session=session, user=attacker)
        project = projects.create_project(session=session, owner=owner, name="Bears",
                                          labels=["grizzly", "black"])
        mine = projects.create_project(session=session, owner=attacker, name="Mine",
                                       labels=["grizzly", "black"])
        meta = tiny_model(tmp_path / "model", ["grizzly", "black"])
        prefix = f"models/{project.id}/tiny"
        for path in (tmp_path / "model").iterdir():
            storage.put_file(f"{prefix}/{path.name}", path)
        model = ModelVersion(project_id=project.id, backbone="tiny", labels=meta["labels"],
                             metrics=meta["metrics"], recipe={}, storage_prefix=prefix)
        session.add(model)
        session.flush()
        deployments.create_deployment(session=session, model=model, slug="bears", public=True)
        mine_id = mine.id
    engine.dispose()
    with running(["web"], env, tmp_path / "web.log") as web:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, web, tmp_path / "web.log")
        yield {"base": base, "pid": web.pid, "key": key, "project": mine_id,
               "log": tmp_path / "web.log"}


def test_attacks_leave_the_web_answering_within_its_memory(live, data_dir, capsys):
    headers = {"Authorization": f"Bearer {live['key']}"}
    health_failures, stop = [], threading.Event()

    def keep_asking_health():
        with httpx.Client(base_url=live["base"], timeout=10) as http:
            while not stop.is_set():
                try:
                    if http.get("/api/v1/health").status_code != 200:
                        health_failures.append("status")
                except httpx.HTTPError as exc:
                    health_failures.append(repr(exc))
                time.sleep(0.2)

    watcher = threading.Thread(target=keep_asking_health)
    watcher.start()
    photo = sorted((data_dir / "bears" / "grizzly").glob("*.jpg"))[0].read_bytes()
    table = []

    def attack(name: str, send) -> httpx.Response:
        answer = send()
        table.append((name, answer.status_code, rss_mb(live["pid"], "VmHWM")))
        assert answer.status_code < 500, (name, answer.status_code, answer.text[:300])
        if answer.status_code >= 400:
            assert "detail" in answer.json(), (name, answer.text[:300])
        return answer

    try:
        with httpx.Client(base_url=live["base"], timeout=120) as http:
            giant = flat_png(8000, 8000)  # 64 megapixels, a few hundred KB
            attack("batch predict: 8 flat 64 MP PNGs, anonymous", lambda: http.post(
                "/api/v1/predict/bears/batch",
                files=[("files", (f"g{i}.png", giant, "image/png")) for i in range(8)]))
            tall = flat_png(12000, 4000)
            attack("predict: one 48 MP PNG, anonymous", lambda: http.post(
                "/api/v1/predict/bears", files={"file": ("t.png", tall, "image/png")}))
            bombs = [zip_bomb(400) for _ in range(6)]  # 6 x 400 MB of zeros, ~400 KB each
            answer = attack("upload: 6 zip bombs of 400 MB each", lambda: http.post(
                f"/api/v1/projects/{live['project']}/images", headers=headers,
                data={"label": "grizzly"},
                files=[("files", (f"bomb{i}.zip", b, "application/zip"))
                       for i, b in enumerate(bombs)]))
            assert answer.status_code == 413 or not answer.json()["added"]
            big_json = b'{"email": "' + b"a" * 8 * 2**20 + b'", "password": "x"}'
            answer = attack("8 MB JSON to sign-in, anonymous", lambda: http.post(
                "/api/v1/session", content=big_json,
                headers={"content-type": "application/json"}))
            assert answer.status_code == 413
            answer = attack("8 MB JSON to create a project, signed in", lambda: http.post(
                "/api/v1/projects", content=big_json, headers={
                    **headers, "content-type": "application/json"}))
            assert answer.status_code == 413
            hostile = make_zip([("grizzly/ok.jpg", photo), ("grizzly/secret.jpg", photo + b"1"),
                                ("grizzly/broken.jpg", photo + b"2")])
            hostile = patch_member(hostile, "grizzly/secret.jpg", flag=1)
            hostile = patch_member(hostile, "grizzly/broken.jpg", crc=0)
            answer = attack("upload: a zip with encrypted and damaged members", lambda: http.post(
                f"/api/v1/projects/{live['project']}/images", headers=headers,
                data={"label": "grizzly"},
                files=[("files", ("hostile.zip", hostile, "application/zip"))]))
            assert answer.status_code == 201 and len(answer.json()["added"]) == 1
            assert len(answer.json()["rejected"]) == 2
            statuses = [http.post("/api/v1/session", json={
                "email": "owner@example.com", "password": f"guess-{i}"}).status_code
                for i in range(30)]
            table.append(("30 wrong passwords for one account", statuses[-1],
                          rss_mb(live["pid"], "VmHWM")))
            assert 429 in statuses and set(statuses) <= {401, 429}
            assert http.get("/api/v1/health").status_code == 200
    finally:
        stop.set()
        watcher.join()
    peak = rss_mb(live["pid"], "VmHWM")
    with capsys.disabled():
        print("\nattack | answer | web peak RSS so far (MB)")
        for name, status, mb in table:
            print(f"{name} | {status} | {mb:.0f}")
    assert health_failures == []
    assert peak < PEAK_LIMIT_MB, f"web peak RSS {peak:.0f} MB"
