import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image as PILImage

from app.cli import migrate
from app.models import PredictionLog
from app.web.main import create_app
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, api_key, make_settings
from tests.serve.conftest import add_model_version, deploy, make_project


@pytest.fixture(scope="module")
def served(bear_model, tmp_path_factory):
    """One app with the bear model recorded twice (v1, v2) and a public deployment `bears`."""
    model_dir, meta, _, _ = bear_model
    settings = make_settings(tmp_path_factory.mktemp("serve"))
    migrate(settings)
    with TestClient(create_app(settings)) as client:
        admin = api_key(client, ADMIN_EMAIL, ADMIN_PASSWORD)
        project_id = make_project(client, admin, meta["labels"])
        v1 = add_model_version(client.app, project_id=project_id, model_dir=model_dir, meta=meta)
        v2 = add_model_version(client.app, project_id=project_id, model_dir=model_dir, meta=meta)
        deploy(client, admin, v1, "bears", public=True)
        yield client, admin, project_id, v1, v2


def post_file(client, slug, data: bytes, headers=None, **params):
    return client.post(f"/api/v1/predict/{slug}", files={"file": ("x.jpg", data, "image/jpeg")},
                       headers=headers or {}, params=params)


def bear(data_dir: Path, label: str, n: int = 40) -> bytes:
    return sorted((data_dir / "bears" / label).glob("*.jpg"))[n].read_bytes()


def test_http_answers_match_pytorch_on_the_validation_images(served, bear_model):
    client, admin, *_ = served
    _, meta, result, samples = bear_model
    paths = [samples[i].key for i in result.valid_indices]
    files = [("files", (Path(p).name, Path(p).read_bytes(), "image/jpeg")) for p in paths]
    batch = client.post("/api/v1/predict/bears/batch", files=files, headers=admin)
    assert batch.status_code == 200, batch.text
    answers = batch.json()["predictions"]
    single = post_file(client, "bears", Path(paths[0]).read_bytes(), admin).json()
    assert single == answers[0]
    got = np.array([[a["probabilities"][label] for label in meta["labels"]] for a in answers])
    assert got.shape == (len(paths), len(meta["labels"]))
    assert np.abs(got - np.array(result.valid_probabilities)).max() < 1e-4


def test_base64_top_k_and_sorted_probabilities(served, data_dir):
    client, admin, *_ = served
    data = bear(data_dir, "grizzly")
    by_file = post_file(client, "bears", data, admin).json()
    assert by_file["label"] == "grizzly" and by_file["unknown"] is False
    values = list(by_file["probabilities"].values())
    assert values == sorted(values, reverse=True) and len(values) == 3
    assert by_file["confidence"] == values[0]
    encoded = base64.b64encode(data).decode()
    for payload in (encoded, f"data:image/jpeg;base64,{encoded}"):
        by_json = client.post("/api/v1/predict/bears", json={"image_base64": payload},
                              headers=admin)
        assert by_json.json() == by_file
    top1 = post_file(client, "bears", data, admin, top_k=1).json()
    assert list(top1["probabilities"]) == ["grizzly"]
    assert client.post("/api/v1/predict/bears", json={"image_base64": "not base64!"},
                       headers=admin).status_code == 422
    assert post_file(client, "bears", b"not an image", admin).status_code == 422
    assert post_file(client, "bears", data, admin, top_k=0).status_code == 422
    missing = client.post("/api/v1/predict/nope", json={"image_base64": encoded}, headers=admin)
    assert missing.status_code == 404 and "detail" in missing.json()


def test_switch_is_seen_by_the_next_request_and_rollback_works(served, data_dir):
    client, admin, _, v1, v2 = served
    data = bear(data_dir, "black")
    assert post_file(client, "bears", data).json()["model_id"] == v1
    switched = client.patch("/api/v1/deployments/bears", json={"model_id": v2}, headers=admin)
    assert switched.status_code == 200 and switched.json()["model_id"] == v2
    assert post_file(client, "bears", data).json()["model_id"] == v2
    client.patch("/api/v1/deployments/bears", json={"model_id": v1}, headers=admin)
    assert post_file(client, "bears", data).json()["model_id"] == v1


def test_private_deployment_answers_only_its_owner(served, data_dir):
    client, admin, _, v1, _ = served
    deploy(client, admin, v1, "private-bears")
    data = bear(data_dir, "teddy")
    missing = post_file(client, "no-such-bears", data)
    assert missing.status_code == 404
    anonymous = post_file(client, "private-bears", data)  # a stranger cannot tell it exists
    assert anonymous.status_code == 404
    assert anonymous.json()["detail"] == missing.json()["detail"].replace("no-such", "private")
    created = client.post("/api/v1/users", headers=admin,
                          json={"email": "eve@example.com", "password": "eve-password"})
    assert created.status_code == 201
    eve = api_key(client, "eve@example.com", "eve-password")
    assert post_file(client, "private-bears", data, eve).json() == anonymous.json()
    assert post_file(client, "private-bears", data, admin).json()["label"] == "teddy"
    assert client.patch("/api/v1/deployments/private-bears", json={"public": True},
                        headers=eve).status_code == 404


def test_the_caller_is_checked_before_the_image_is_read(served, data_dir):
    client, admin, _, v1, _ = served
    data = bear(data_dir, "teddy")
    wrong = post_file(client, "bears", data, {"Authorization": "Bearer not-a-key"})
    assert wrong.status_code == 401 and wrong.json()["detail"] == "invalid API key"
    assert client.post("/api/v1/predict/bears", headers={"Authorization": "Bearer nope"},
                       content=b"not even multipart").status_code == 401
    deploy(client, admin, v1, "browser-bears")  # private: only its owner's session
    login = client.post("/api/v1/session",
                        json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    try:
        assert post_file(client, "browser-bears", data).status_code == 403  # no CSRF token
        signed_in = post_file(client, "browser-bears", data,
                              {"X-CSRF-Token": login.json()["csrf_token"]})
        assert signed_in.status_code == 200 and signed_in.json()["label"] == "teddy"
    finally:
        client.cookies.clear()
    assert post_file(client, "browser-bears", data).status_code == 404


def test_unknown_uses_the_calibrated_threshold_and_a_deployment_override(
        served, bear_model, data_dir):
    client, admin, project_id, *_ = served
    model_dir, meta, _, _ = bear_model
    calibrated = meta["metrics"]["unknown_threshold"]
    assert 0 < calibrated < 1
    ood = [post_file(client, "bears", p.read_bytes(), admin).json()
           for p in sorted((data_dir / "ood").glob("*.jpg"))]
    assert all(a["threshold"] == calibrated and len(a["probabilities"]) == 3 for a in ood)
    assert sum(a["unknown"] for a in ood) >= len(ood) - 2
    bears = [post_file(client, "bears", bear(data_dir, label, n), admin).json()
             for label in ("black", "grizzly", "teddy") for n in (31, 40)]
    assert sum(a["unknown"] for a in bears) <= 1
    for a in ood + bears:  # `answer` is the label, or None for "none of these"
        assert a["answer"] == (None if a["unknown"] else a["label"])

    strict = client.patch("/api/v1/deployments/bears", json={"threshold": 0.999},
                          headers=admin)
    assert strict.json()["threshold"] == 0.999
    answer = post_file(client, "bears", bear(data_dir, "grizzly"), admin).json()
    assert answer["unknown"] is True and answer["label"] == "grizzly"
    assert answer["answer"] is None
    assert abs(sum(answer["probabilities"].values()) - 1) < 1e-4
    client.patch("/api/v1/deployments/bears", json={"threshold": None}, headers=admin)
    assert post_file(client, "bears", bear(data_dir, "grizzly"), admin).json()["unknown"] is False

    no_key = add_model_version(client.app, project_id=project_id, model_dir=model_dir,
                               meta=meta, metrics={"error_rate": 0.1})
    deploy(client, admin, no_key, "uncalibrated", public=True)
    cat = post_file(client, "uncalibrated", (data_dir / "ood" / "cat.jpg").read_bytes()).json()
    assert cat["unknown"] is False and cat["threshold"] is None


def test_none_of_these_by_what_the_model_has_seen_with_a_reason(served, bear_model, data_dir):
    client, admin, _, v1, _ = served
    _, meta, _, samples = bear_model
    deploy(client, admin, v1, "open-set", public=True)
    ood = [post_file(client, "open-set", p.read_bytes()).json()
           for p in sorted((data_dir / "ood").glob("*.jpg"))]
    assert all(a["unknown"] and a["answer"] is None and a["unknown_score"] == "familiarity"
               for a in ood)
    assert all(a["familiarity"] < a["threshold"] == meta["metrics"]["unknown_threshold"]
               for a in ood)
    assert "unlike the photos it was trained on" in ood[0]["unknown_reason"]
    trained_on = {s.key for s in samples}
    held_out = [p for label in ("black", "grizzly", "teddy")
                for p in sorted((data_dir / "bears" / label).glob("*.jpg"))[31:37:2]]
    assert not trained_on & {str(p) for p in held_out}  # never seen, nor calibrated on
    bears = [post_file(client, "open-set", p.read_bytes()).json() for p in held_out]
    assert sum(a["unknown"] for a in bears) <= 1
    assert all(a["unknown_reason"] is None for a in bears if not a["unknown"])


def test_versions_without_a_bank_keep_the_probability_rule(served, bear_model, data_dir,
                                                           tmp_path):
    client, admin, project_id, v1, _ = served
    model_dir, meta, _, _ = bear_model
    old_dir = tmp_path / "old"  # a version folder as exported before feature banks
    old_dir.mkdir()
    for name in ("weights.safetensors", "model.onnx"):
        (old_dir / name).write_bytes((model_dir / name).read_bytes())
    old_meta = {k: v for k, v in meta.items() if k != "novelty"}
    old_meta["onnx"] = {**meta["onnx"], "outputs": ["logits", "probabilities"]}
    (old_dir / "model.json").write_text(json.dumps(old_meta))
    old = add_model_version(client.app, project_id=project_id, model_dir=old_dir, meta=old_meta,
                            metrics={"error_rate": 0.1, "unknown_threshold": 0.8,
                                     "unknown_score": "max_probability"})
    deploy(client, admin, old, "old-rule", public=True, threshold=0.95)
    answers = [post_file(client, "old-rule", p.read_bytes()).json()
               for p in sorted((data_dir / "ood").glob("*.jpg"))[:3]]
    for a in answers:
        assert a["unknown_score"] == "max_probability" and a["familiarity"] is None
        assert a["threshold"] == 0.95 and a["unknown"] == (a["confidence"] < 0.95)
    assert all("not sure enough" in a["unknown_reason"] for a in answers if a["unknown"])
    # a confidence means nothing as a familiarity: moving to a banked version clears it
    moved = client.patch("/api/v1/deployments/old-rule", json={"model_id": v1}, headers=admin)
    assert moved.json()["threshold"] is None
    kept = client.patch("/api/v1/deployments/old-rule", json={"model_id": old, "threshold": 0.9},
                        headers=admin)
    assert kept.json()["threshold"] == 0.9


def test_log_summary_counts_and_keeps_images_only_when_asked(served, data_dir):
    client, admin, _, v1, _ = served
    deploy(client, admin, v1, "logged", public=True)
    for label in ("black", "grizzly", "grizzly"):
        post_file(client, "logged", bear(data_dir, label))
    summary = client.get("/api/v1/deployments/logged/log-summary", headers=admin).json()
    assert summary["count"] == 3 and summary["labels"] == {"grizzly": 2, "black": 1}
    assert summary["unknown_rate"] == 0 and 0.3 < summary["mean_confidence"] <= 1
    assert 0 < summary["latency_p50_ms"] <= summary["latency_p95_ms"]
    assert [d["count"] for d in summary["per_day"]] == [3]
    assert client.get("/api/v1/deployments/logged/log-summary").status_code == 401

    client.patch("/api/v1/deployments/logged", json={"log_images": True}, headers=admin)
    post_file(client, "logged", bear(data_dir, "teddy"))
    assert client.get("/api/v1/deployments/logged/log-summary",
                      headers=admin).json()["count"] == 4
    storage = client.app.state.storage
    with client.app.state.session_factory() as session:
        keys = [row.image_key for row in session.query(PredictionLog).order_by(PredictionLog.id)
                if row.deployment_id == _deployment_id(session, "logged")]
    assert keys[:3] == [None, None, None] and keys[3] and storage.exists(keys[3])


def _deployment_id(session, slug):
    from app.models import Deployment

    return session.query(Deployment).filter_by(slug=slug).one().id


def test_per_ip_rate_limit_answers_429_with_retry_after(bear_model, tmp_path, data_dir):
    model_dir, meta, _, _ = bear_model
    settings = make_settings(tmp_path, predict_rate_per_s_ip=0.2, predict_burst_ip=2)
    migrate(settings)
    with TestClient(create_app(settings)) as client:
        admin = api_key(client, ADMIN_EMAIL, ADMIN_PASSWORD)
        project_id = make_project(client, admin, meta["labels"])
        model_id = add_model_version(client.app, project_id=project_id, model_dir=model_dir,
                                     meta=meta)
        deploy(client, admin, model_id, "limited", public=True)
        data = bear(data_dir, "black")
        assert [post_file(client, "limited", data).status_code for _ in range(2)] == [200, 200]
        limited = post_file(client, "limited", data)
        assert limited.status_code == 429 and "too many" in limited.json()["detail"]
        assert 1 <= int(limited.headers["retry-after"]) <= 5
        assert post_file(client, "limited", data, admin).status_code == 200  # keys: own bucket


def test_demo_page_shows_labels_snippets_and_examples(served, data_dir):
    client, admin, project_id, *_ = served
    for label in ("black", "grizzly", "teddy"):
        upload = client.post(f"/api/v1/projects/{project_id}/images", headers=admin,
                             data={"label": label},
                             files=[("files", (f"{label}.jpg", bear(data_dir, label, 50),
                                               "image/jpeg"))])
        assert upload.status_code == 201, upload.text
    page = client.get("/demo/bears")
    assert page.status_code == 200
    html = page.text
    assert "grizzly" in html and "curl" in html and "&lt;iframe" in html
    assert "/api/v1/deployments/bears/examples/2" in html
    example = client.get("/api/v1/deployments/bears/examples/0")
    assert example.status_code == 200 and example.headers["content-type"] == "image/jpeg"
    PILImage.open(io.BytesIO(example.content)).verify()
    assert client.get("/api/v1/deployments/bears/examples/3").status_code == 404
    deploy(client, admin, served[3], "private-demo")
    assert client.get("/api/v1/deployments/private-demo/examples/0").status_code == 404
    owner = client.get("/api/v1/deployments/private-demo/examples/0", headers=admin)
    assert owner.status_code == 200
    assert client.get("/demo/private-demo").status_code == 404
    embed = client.get("/demo/bears?embed=1").text
    assert "card demo embed" in embed and "Use it from code" not in embed
    assert "card demo embed" not in html and "Use it from code" in html


def test_url_input_goes_through_the_download_guard(bear_model, tmp_path, data_dir):
    import threading
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    model_dir, meta, _, _ = bear_model
    handler = partial(SimpleHTTPRequestHandler, directory=str(data_dir))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    photo = sorted((data_dir / "bears" / "grizzly").glob("*.jpg"))[40]
    photo_url = f"http://127.0.0.1:{server.server_port}/bears/grizzly/{photo.name}"
    try:
        for allow in (False, True):
            home = tmp_path / f"allow-{allow}"
            settings = make_settings(home, allow_loopback_downloads=allow)
            migrate(settings)
            with TestClient(create_app(settings)) as client:
                admin = api_key(client, ADMIN_EMAIL, ADMIN_PASSWORD)
                project_id = make_project(client, admin, meta["labels"])
                model_id = add_model_version(client.app, project_id=project_id,
                                             model_dir=model_dir, meta=meta)
                deploy(client, admin, model_id, "bears", public=True)
                answer = client.post("/api/v1/predict/bears", json={"url": photo_url})
                if allow:
                    assert answer.status_code == 200, answer.text
                    by_file = post_file(client, "bears", photo.read_bytes())
                    assert answer.json() == by_file.json()
                else:
                    assert answer.status_code == 422
                    assert "cannot download" in answer.json()["detail"]
    finally:
        server.shutdown()
