"""Property-based fuzzing of the JSON API from its own OpenAPI document (schemathesis).

Every operation gets a bounded number of generated requests, valid and invalid, sent with
the owner's API key (admins' routes with the admin's) to the app of tests/security/conftest.py:
no answer may be a 5xx, and each status code and JSON body must be one the document declares.
"""

import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.models import User
from app.web.main import create_app
from tests.conftest import make_settings

EXAMPLES_PER_OPERATION = 10
# Every operation declares its errors as a `default` answer {"detail": ...} (app/web/openapi.py),
# so any 4xx conforms when its body does.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


def openapi_document() -> dict:
    """The app's OpenAPI document: it depends on the routes alone, so any app's will do."""
    with tempfile.TemporaryDirectory() as home:
        app = create_app(make_settings(Path(home)))
        app.state.engine.dispose()
        return app.openapi()


# Loaded when the tests are collected, for one test per operation (schemathesis's lazy
# `from_fixture` does not run under pytest 9); the calls go to the `world` app.
schema = schemathesis.openapi.from_dict(openapi_document()).exclude(
    # A live stream that lasts as long as its job (the jobs made here never finish); the
    # authorisation matrix calls it on a finished job.
    path="/api/v1/jobs/{job_id}/events",
)


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True,
          database=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))
def test_api_answers_as_documented_and_never_fails(case, world):
    caller = world.admin if case.path.startswith("/api/v1/users") else world.owner
    headers = {"Authorization": f"Bearer {caller.key}"}
    request = case.as_transport_kwargs(base_url="http://testserver", headers=headers)
    response = send(world.client, request)
    case.validate_response(response, checks=CHECKS, headers=headers,
                           transport_kwargs=request)
    _keep_the_callers(world)


def send(client, request: dict):
    """Send schemathesis's request (made for `requests`) through the app's test client."""
    headers = dict(request["headers"])
    if request.get("cookies"):
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in request["cookies"].items())
    body = {}
    if "json" in request:
        body["json"] = request["json"]
    elif request.get("data") is not None:
        data = request["data"]
        body["content" if isinstance(data, bytes | str) else "data"] = data
    if request.get("files"):
        body["files"] = request["files"]
    client.cookies.clear()
    return client.request(request["method"], request["url"], params=request.get("params"),
                          headers=headers, follow_redirects=False, **body)


def _keep_the_callers(world) -> None:
    """Undo what a generated request may do to the callers themselves: revoke the owner's
    key, or (as the admin) disable the owner."""
    with world.session() as session:
        session.get(User, world.owner.user_id).disabled_at = None
    ok = world.client.get("/api/v1/account",
                          headers={"Authorization": f"Bearer {world.owner.key}"})
    if ok.status_code == 401:
        world.owner.key = world.new_api_key(world.owner.user_id)[1]
