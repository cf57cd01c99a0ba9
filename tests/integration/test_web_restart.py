"""The web process restarted (SIGTERM, then started again) while a large upload is in flight,
on the embedded default (SQLite, local store): the web waits for the upload a while
(WEB_STOP_GRACE_S), then stops it and the client gets a 503 saying so (or sees the connection
close); nothing of the upload is kept, no row points at a missing file, and the restarted web
answers."""

import secrets
import signal
import threading
import time

import httpx
import pytest

from app.cli import WEB_STOP_GRACE_S
from app.config import Settings
from tests.integration.conftest import base_env, free_port, wait_healthy
from tests.integration.stack import admin_client, image_count, migrate, process, store_check

pytestmark = pytest.mark.integration
CHUNK = 64 * 1024


def slow_multipart(files: list, *, label: str, seconds: float):
    """(content type, body chunks): a multipart upload streamed over about `seconds`."""
    boundary = secrets.token_hex(16)
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="label"\r\n\r\n'
             f"{label}\r\n".encode()]
    for path in files:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
                     f'filename="{path.name}"\r\nContent-Type: image/jpeg\r\n\r\n'.encode()
                     + path.read_bytes() + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    body = b"".join(parts)
    chunks = [body[i:i + CHUNK] for i in range(0, len(body), CHUNK)]

    def stream():
        for chunk in chunks:
            time.sleep(seconds / len(chunks))
            yield chunk

    return f"multipart/form-data; boundary={boundary}", stream()


def test_web_restarted_during_a_large_upload(tmp_path, data_dir):
    port = free_port()
    env = base_env(tmp_path, port)
    settings = Settings(home=tmp_path)
    migrate(env, tmp_path)
    base_url = f"http://127.0.0.1:{port}"
    photos = sorted((data_dir / "bears" / "black").glob("*.jpg"))[:120]
    outcome: dict = {}
    with process(["web"], env, tmp_path / "web-1.log", module="app.cli") as web:
        wait_healthy(base_url, web, tmp_path / "web-1.log")
        http, admin = admin_client(base_url)
        pid = http.post("/api/v1/projects", json={"name": "Bears", "labels": ["black"]},
                        headers=admin).json()["id"]
        content_type, body = slow_multipart(photos, label="black",
                                            seconds=3 + WEB_STOP_GRACE_S + 10)

        def upload() -> None:
            try:
                answer = httpx.post(f"{base_url}/api/v1/projects/{pid}/images", content=body,
                                    headers={**admin, "Content-Type": content_type},
                                    timeout=60)
                outcome["status"] = answer.status_code
                outcome["json"] = answer.json() if answer.content else None
            except httpx.HTTPError as exc:
                outcome["error"] = repr(exc)

        client = threading.Thread(target=upload)
        client.start()
        time.sleep(3)  # the upload is about a third through
        web.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        web.wait(timeout=60)
        stop_s = time.monotonic() - stopped
        client.join(timeout=60)
    # the upload was stopped: the client got a 503 saying so, or the connection closed
    assert "error" in outcome or outcome["status"] == 503, outcome
    if "error" not in outcome:
        assert "restarted" in outcome["json"]["detail"]
    assert stop_s < WEB_STOP_GRACE_S + 5, stop_s

    with process(["web"], env, tmp_path / "web-2.log", module="app.cli") as web:
        wait_healthy(base_url, web, tmp_path / "web-2.log")
        http, admin = admin_client(base_url)
        assert image_count(http, admin, pid) == 0
        report = store_check(settings)
        assert report.clean, report
        answer = http.post(f"/api/v1/projects/{pid}/images", headers=admin,
                           data={"label": "black"},
                           files=[("files", (p.name, p.read_bytes(), "image/jpeg"))
                                  for p in photos[:3]])
        assert answer.status_code == 201, answer.text
