"""Request ids in answers and logs, JSON log lines, and the Prometheus page."""

import json
import logging

from fastapi.testclient import TestClient

from app.config import Settings
from app.observability import JsonFormatter, job_context, request_id
from app.web.main import create_app
from tests.conftest import make_settings


def test_every_answer_carries_a_request_id_and_a_sane_given_one_is_kept(client):
    generated = client.get("/api/v1/health")
    assert len(generated.headers["x-request-id"]) == 16
    kept = client.get("/api/v1/health", headers={"X-Request-ID": "lb-42.a_b"})
    assert kept.headers["x-request-id"] == "lb-42.a_b"
    hostile = client.get("/api/v1/health", headers={"X-Request-ID": "x\" injected" * 10})
    assert hostile.headers["x-request-id"] != "x\" injected" * 10


def test_access_log_names_the_route_not_the_raw_path(client, admin, caplog):
    caplog.set_level(logging.INFO, logger="kodiak.access")
    client.get("/api/v1/jobs/12345", headers={**admin, "X-Request-ID": "trace-1"})
    [record] = [r for r in caplog.records if r.name == "kodiak.access"]
    assert record.route == "/api/v1/jobs/{job_id}" and record.status == 404
    line = json.loads(JsonFormatter().format(record))
    assert line["route"] == "/api/v1/jobs/{job_id}" and line["status"] == 404


def test_json_lines_carry_request_and_job_ids():
    record = logging.LogRecord("kodiak.x", logging.INFO, __file__, 1, "hello %s", ("you",), None)
    token = request_id.set("r-1")
    try:
        with job_context(7):
            line = json.loads(JsonFormatter().format(record))
    finally:
        request_id.reset(token)
    assert line["message"] == "hello you" and line["request_id"] == "r-1" and line["job_id"] == 7
    assert "job_id" not in json.loads(JsonFormatter().format(record))


def test_metrics_are_off_without_a_token(client):
    assert client.get("/metrics").status_code == 404


def test_metrics_with_a_token_count_requests_by_route_jobs_and_queues(tmp_path):
    from app.cli import migrate

    settings: Settings = make_settings(tmp_path, metrics_token="scrape-me",
                                       broker_url="filesystem://")
    migrate(settings)
    with TestClient(create_app(settings)) as client:
        client.get("/api/v1/projects/999")
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        page = client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert page.status_code == 200
        text = page.text
        assert ('kodiak_http_requests_total{method="GET",'
                'route="/api/v1/projects/{project_id}",status="401"}') in text
        assert "kodiak_http_request_duration_seconds_bucket" in text
        assert 'kodiak_queue_depth{queue="train"} 0.0' in text
