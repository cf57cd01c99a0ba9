"""The `kodiak` command: `storage copy` moves a store from a folder to S3 and back."""

import os
import subprocess
import sys

from app.config import Settings
from app.storage import open_storage
from tests.conftest import REPO


def kodiak(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_storage_copy_to_s3_and_back(tmp_path, s3_store):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KODIAK_", "AWS_"))}
    env.update(KODIAK_HOME=str(tmp_path / "home"), KODIAK_S3_ENDPOINT_URL=s3_store.endpoint,
               KODIAK_S3_REGION="us-east-1", AWS_ACCESS_KEY_ID="test-key",
               AWS_SECRET_ACCESS_KEY="test-secret")
    settings = Settings(home=tmp_path / "home", s3_endpoint_url=s3_store.endpoint,
                        s3_region="us-east-1", aws_access_key_id="test-key",
                        aws_secret_access_key="test-secret")
    local_url, back_url = f"file://{tmp_path}/local", f"file://{tmp_path}/back"
    local = open_storage(local_url)
    blobs = {"images/1/a.jpg": b"a" * 100, "models/1/model.onnx": os.urandom(3 * 2**20)}
    for key, data in blobs.items():
        local.put(key, data)

    first = kodiak("storage", "copy", local_url, s3_store.url, env=env)
    assert first.returncode == 0, first.stderr
    assert "copied 2 keys" in first.stdout and "0 already there" in first.stdout
    s3 = open_storage(s3_store.url, settings)
    assert {key: s3.read(key) for key, _ in s3.list_keys()} == blobs

    again = kodiak("storage", "copy", local_url, s3_store.url, env=env)
    assert again.returncode == 0, again.stderr
    assert "copied 0 keys" in again.stdout and "2 already there" in again.stdout

    back = kodiak("storage", "copy", s3_store.url, back_url, env=env)
    assert back.returncode == 0, back.stderr
    assert "copied 2 keys" in back.stdout
    restored = open_storage(back_url)
    assert {key: restored.read(key) for key, _ in restored.list_keys()} == blobs


def test_storage_copy_needs_two_urls(tmp_path):
    result = kodiak("storage", "copy", f"file://{tmp_path}", env=dict(os.environ))
    assert result.returncode == 2 and "target_url" in result.stderr


def test_web_believes_forwarded_headers_from_the_configured_proxies_only(tmp_path, monkeypatch):
    import uvicorn

    from app import cli

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: calls.append(kwargs))
    monkeypatch.setattr("app.observability.configure_logging", lambda settings: None)
    cli.web(Settings(home=tmp_path, forwarded_allow_ips="10.0.0.5,172.18.0.0/16"))
    assert calls[0]["proxy_headers"] is True
    assert calls[0]["forwarded_allow_ips"] == "10.0.0.5,172.18.0.0/16"
    cli.web(Settings(home=tmp_path))
    assert calls[1]["forwarded_allow_ips"] == "127.0.0.1"
