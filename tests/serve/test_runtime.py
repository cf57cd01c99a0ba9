"""The serving runtime's lifetime: made and started at app startup, stopped at shutdown."""

import threading
import time

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.cli import migrate
from app.models import PredictionLog
from app.web.main import create_app
from tests.conftest import make_settings
from tests.serve.conftest import deploy_bears


def new_app(home, **settings):
    migrate(config := make_settings(home, **settings))
    return create_app(config)


def predict(client, data_dir) -> None:
    photo = sorted((data_dir / "bears" / "black").glob("*.jpg"))[40].read_bytes()
    answer = client.post("/api/v1/predict/bears", files={"file": ("x.jpg", photo, "image/jpeg")})
    assert answer.status_code == 200, answer.text


def logged_rows(app) -> int:
    with app.state.session_factory() as session:
        return session.scalar(select(func.count()).select_from(PredictionLog))


def test_startup_makes_the_runtime_and_shutdown_writes_the_rest_of_the_log(
        bear_model, tmp_path, data_dir):
    app = new_app(tmp_path, prediction_log_flush_s=3600)
    assert not hasattr(app.state, "serving")  # made by the lifespan, not by create_app
    with TestClient(app) as client:
        serving = app.state.serving
        deploy_bears(client, bear_model)
        predict(client, data_dir)
        predict(client, data_dir)
        assert logged_rows(app) == 0  # kept in memory until due
        assert serving.cache.cached_ids() and not serving.http.is_closed
    assert logged_rows(app) == 2
    assert serving.http.is_closed


def test_logged_rows_reach_the_database_without_another_request(bear_model, tmp_path,
                                                                data_dir):
    app = new_app(tmp_path, prediction_log_flush_s=0.5)
    with TestClient(app) as client:
        deploy_bears(client, bear_model)
        for expected in (1, 2):
            predict(client, data_dir)
            deadline = time.monotonic() + 5
            while logged_rows(app) < expected and time.monotonic() < deadline:
                time.sleep(0.05)
            assert logged_rows(app) == expected


def test_a_lone_request_decodes_on_the_inference_thread_once_its_model_is_loaded(
        bear_model, tmp_path, data_dir, monkeypatch):
    from app.services import predictions

    threads = []
    prepare = predictions._prepare

    def recording(*args):
        threads.append(threading.current_thread().name)
        return prepare(*args)

    monkeypatch.setattr(predictions, "_prepare", recording)
    app = new_app(tmp_path)
    with TestClient(app) as client:
        deploy_bears(client, bear_model)
        predict(client, data_dir)  # loads the model: on the decode pool
        predict(client, data_dir)  # loaded, batcher idle: one trip to the inference thread
        [batcher] = app.state.serving.batchers.values()
        assert batcher.forward_passes == 2 and batcher.idle()
    assert threads[0].startswith("decode") and threads[1].startswith("inference")
