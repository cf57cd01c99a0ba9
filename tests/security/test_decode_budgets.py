"""Decode budgets over HTTP: a request's images share a pixel budget (predictions, uploads),
predictions decode only what the model needs, and only a few images decode at once."""

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.cli import migrate
from app.services import predictions
from app.web.main import create_app
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, api_key, make_settings
from tests.ml.test_images import flat_png
from tests.serve.conftest import deploy_bears, train_bear_model

BUDGET = "too many pixels to decode in one request"


@pytest.fixture(scope="module")
def served(data_dir, tmp_path_factory):
    """An app with the small bear model deployed publicly as `bears`, default budgets."""
    bear_model = train_bear_model(data_dir, tmp_path_factory.mktemp("bear-model"))
    settings = make_settings(tmp_path_factory.mktemp("budgets"))
    migrate(settings)
    with TestClient(create_app(settings)) as client:
        deploy_bears(client, bear_model)
        photo = (data_dir / "bears" / "black" / "0001.jpg").read_bytes()
        warm = client.post("/api/v1/predict/bears", files={"file": ("bear.jpg", photo)})
        assert warm.status_code == 200, warm.text  # the model is loaded: timings are decoding
        yield client


@pytest.fixture(scope="module")
def big_jpeg() -> bytes:
    out = io.BytesIO()
    Image.linear_gradient("L").resize((6000, 4000)).convert("RGB").save(out, "JPEG")
    return out.getvalue()


def batch(client, images: list[bytes]):
    files = [("files", (f"{i}.img", data, "application/octet-stream"))
             for i, data in enumerate(images)]
    return client.post("/api/v1/predict/bears/batch", files=files)


def test_a_flat_png_too_big_to_decode_is_refused_fast(served):
    data = flat_png(7000, 7000)  # 49 megapixels in a few hundred KB: under the header limit
    assert len(data) < 1_000_000
    tick = time.perf_counter()
    answer = served.post("/api/v1/predict/bears", files={"file": ("flat.png", data)})
    assert answer.status_code == 422 and BUDGET in answer.json()["detail"]
    assert time.perf_counter() - tick < 1.0  # refused from the header, never inflated


def test_a_batch_shares_one_budget(served, big_jpeg):
    png = flat_png(4000, 3000)  # 12 megapixels decoded each: two fit in 25, three do not
    assert batch(served, [png, png]).status_code == 200
    refused = batch(served, [png, png, png])
    assert refused.status_code == 422 and BUDGET in refused.json()["detail"]
    jpegs = batch(served, [big_jpeg] * 16)  # 24 megapixels each, 1/8 of that decoded
    assert jpegs.status_code == 200, jpegs.text
    assert len(jpegs.json()["predictions"]) == 16


def test_only_a_few_images_decode_at_once(served, big_jpeg, monkeypatch):
    running, most = 0, 0
    lock = threading.Lock()
    decode = predictions.decode_rgb

    def counting_decode(*args, **kwargs):
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        try:
            time.sleep(0.05)
            return decode(*args, **kwargs)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(predictions, "decode_rgb", counting_decode)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: served.post(
            "/api/v1/predict/bears", files={"file": ("big.jpg", big_jpeg)}), range(8)))
    assert all(a.status_code == 200 for a in answers)
    assert most == served.app.state.settings.predict_decode_threads == 2


def test_an_upload_shares_one_budget_and_rejects_past_it(tmp_path):
    settings = make_settings(tmp_path, upload_pixels_per_request=5_000_000)
    migrate(settings)
    png = flat_png(2000, 1000)
    with TestClient(create_app(settings)) as client:
        admin = api_key(client, ADMIN_EMAIL, ADMIN_PASSWORD)
        project = client.post("/api/v1/projects", json={"name": "p"}, headers=admin).json()
        files = [("files", (f"{i}.png", png,
                            "image/png")) for i in range(3)]
        answer = client.post(f"/api/v1/projects/{project['id']}/images", headers=admin,
                             files=files, data={"label": "flat"})
        assert answer.status_code == 201, answer.text
        body = answer.json()
        assert len(body["added"]) + len(body["duplicates"]) == 2
        assert [r["filename"] for r in body["rejected"]] == ["2.png"]
        assert BUDGET in body["rejected"][0]["reason"]
