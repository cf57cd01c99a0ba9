"""Who may call what, for every route in the app's own route table and every method.

Each route is called as seven parties: anonymous; the owner of the objects in its URL (API
key and browser session with its CSRF token); the owner's browser session without the CSRF
token; another user by API key and by browser session; an admin; and a disabled user (key
and session from before it was disabled). A route is public
(listed below with the reason), a token route, an account route (each signed-in person acts
on their own account), admin-only, or else owned: only the owner gets in, everyone else meets
401, 403, 404 or 405 (a page sends strangers to /login), and no one ever meets a 5xx. A new
route is owned until listed otherwise, so it cannot go unchecked.
"""

import itertools
import re
from collections.abc import Callable

import pytest
from fastapi import routing
from sqlalchemy import select
from starlette.routing import Mount

from app.models import Deployment, Label, PredictionLog, Project
from app.web.deps import SESSION_COOKIE
from tests.security.conftest import OWNER, Party, World, dataset_zip, jpeg

PUBLIC = {
    ("GET", "/api/v1/openapi.json"): "the API's OpenAPI document",
    ("HEAD", "/api/v1/openapi.json"): "the API's OpenAPI document",
    ("GET", "/api/docs"): "the API reference page (Swagger UI)",
    ("GET", "/api/docs/assets/{path}"): "Swagger UI's and ReDoc's files",
    ("GET", "/redoc"): "the API reference page (ReDoc)",
    ("GET", "/api/v1/health"): "the load balancer's health check",
    ("POST", "/api/v1/session"): "sign-in (throttled: tests/security/test_sign_in.py)",
    ("GET", "/"): "sends you to /login or /projects",
    ("GET", "/login"): "the sign-in page",
    ("POST", "/login"): "sign-in (throttled, other sites refused)",
    ("GET", "/static/{path}"): "CSS and JavaScript",
}
# Public on a public deployment; on a private one its owner's alone (checked as owned).
DEPLOYMENT = {
    ("GET", "/demo/{slug}"): "a deployment's demo page",
    ("POST", "/api/v1/predict/{slug}"): "a prediction",
    ("POST", "/api/v1/predict/{slug}/batch"): "a batch of predictions",
    ("GET", "/api/v1/deployments/{slug}/examples/{n}"): "the demo page's example photos",
}
# Open to no party here: the metrics token is none of theirs (404 when metrics are off).
TOKEN = {("GET", "/metrics"): "Prometheus scrape, behind its own bearer token"}
ACCOUNT = {
    ("DELETE", "/api/v1/session"), ("POST", "/api/v1/api-keys"), ("GET", "/api/v1/api-keys"),
    ("GET", "/api/v1/account"), ("POST", "/api/v1/account/password"),
    ("GET", "/api/v1/projects"), ("POST", "/api/v1/projects"),
    ("POST", "/logout"), ("GET", "/projects"), ("POST", "/projects"),
    ("GET", "/account"), ("POST", "/account/password"), ("POST", "/account/api-keys"),
}
ADMIN = {
    ("POST", "/api/v1/users"), ("GET", "/api/v1/users"), ("PATCH", "/api/v1/users/{user_id}"),
    ("GET", "/admin/users"), ("POST", "/admin/users"), ("POST", "/admin/users/{user_id}"),
}

# Path parameters: the owner's objects (a fresh spare key each time: revoking spends one).
PARAMS: dict[str, Callable[[World], object]] = {
    "project_id": lambda w: w.ids["project_id"],
    "image_id": lambda w: w.ids["image_id"],
    "job_id": lambda w: w.ids["job_id"],
    "model_id": lambda w: w.ids["model_id"],
    "slug": lambda w: w.ids["slug"],
    "user_id": lambda w: w.ids["user_id"],
    "key_id": lambda w: w.new_api_key(w.owner.user_id)[0],
    "label_id": lambda w: _label(w),
    "log_id": lambda w: _logged_photo(w),
    "name": lambda w: "model.json",
    "n": lambda w: 0,
    "path": lambda w: "kodiak.css",
}
QUERY = {
    ("GET", "/api/v1/projects/{project_id}/search-results"):
        lambda w: {"job_id": w.ids["search_job_id"]},
}
# Routes whose owner's call uses up its object: each call gets a fresh one of the owner's.
ROUTE_PARAMS: dict[tuple[str, str], dict[str, Callable[[World], object]]] = {
    ("POST", "/projects/{project_id}/delete"): {"project_id": lambda w: _project(w)},
}
DOOMED = "doomed"
_serial = itertools.count()


def _unique(prefix: str) -> str:
    return f"{prefix}-{next(_serial)}"


def _label(w: World) -> int:
    """A fresh label of the owner's project (deleting one spends it)."""
    with w.session() as session:
        label = Label(project_id=w.ids["project_id"], name=_unique("label"), query="q")
        session.add(label)
        session.flush()
        return label.id


def _logged_photo(w: World) -> int:
    """A fresh logged prediction of the owner's private deployment that kept its photo."""
    key = f"predictions/matrix/{_unique('photo')}.jpg"
    w.client.app.state.storage.put(key, jpeg((120, 90, 60)))
    with w.session() as session:
        deployment = session.scalar(select(Deployment).where(Deployment.slug == w.ids["slug"]))
        row = PredictionLog(deployment_id=deployment.id, model_id=deployment.model_id,
                            label="cat", confidence=0.5, latency_ms=1.0, image_key=key)
        session.add(row)
        session.flush()
        return row.id


def _project(w: World) -> int:
    """A fresh, empty project of the owner's, to delete."""
    with w.session() as session:
        project = Project(owner_id=w.owner.user_id, name=DOOMED)
        session.add(project)
        session.flush()
        return project.id


def _image(field: str) -> dict:
    return {"files": [(field, ("photo.jpg", jpeg((90, 120, 150))))]}


# Request bodies that the owner's call would succeed with: JSON for the API, forms for pages.
BODIES: dict[tuple[str, str], Callable[[World], dict]] = {
    ("POST", "/api/v1/session"): lambda w: {"json": {"email": "no@example.com",
                                                     "password": "not-a-password"}},
    ("POST", "/login"): lambda w: {"data": {"email": "no@example.com",
                                            "password": "not-a-password"}},
    ("POST", "/api/v1/users"): lambda w: {"json": {"email": _unique("u") + "@example.com",
                                                   "password": "a-long-password"}},
    ("POST", "/admin/users"): lambda w: {"data": {"email": _unique("p") + "@example.com",
                                                  "password": "a-long-password"}},
    ("PATCH", "/api/v1/users/{user_id}"): lambda w: {"json": {"disabled": False}},
    ("POST", "/admin/users/{user_id}"): lambda w: {"data": {"disabled": "false"}},
    ("POST", "/api/v1/api-keys"): lambda w: {"json": {"name": "matrix"}},
    ("POST", "/account/api-keys"): lambda w: {"data": {"name": "matrix"}},
    ("POST", "/api/v1/account/password"): lambda w: {"json": {
        "current_password": OWNER["password"], "new_password": OWNER["password"]}},
    ("POST", "/account/password"): lambda w: {"data": {
        "current_password": OWNER["password"], "new_password": OWNER["password"],
        "repeat_password": OWNER["password"]}},
    ("POST", "/api/v1/projects"): lambda w: {"json": {"name": "matrix"}},
    ("POST", "/projects"): lambda w: {"data": {"name": "matrix"}},
    ("POST", "/api/v1/projects/{project_id}/labels"): lambda w: {"json": {"name": _unique("l")}},
    ("PATCH", "/api/v1/projects/{project_id}"): lambda w: {"json": {"name": "Pets"}},
    ("POST", "/projects/{project_id}/rename"): lambda w: {"data": {"name": "Pets"}},
    ("POST", "/projects/{project_id}/delete"): lambda w: {"data": {"confirm": DOOMED}},
    ("PATCH", "/api/v1/projects/{project_id}/labels/{label_id}"): lambda w: {
        "json": {"name": _unique("l")}},
    ("POST", "/projects/{project_id}/labels/{label_id}"): lambda w: {
        "data": {"name": _unique("l")}},
    ("POST", "/projects/{project_id}/labels"): lambda w: {"data": {"name": _unique("l")}},
    ("POST", "/api/v1/projects/{project_id}/images"): lambda w: {**_image("files"),
                                                                 "data": {"label": "cat"}},
    ("POST", "/projects/{project_id}/upload"): lambda w: {**_image("files"),
                                                          "data": {"label": "cat"}},
    ("POST", "/api/v1/projects/{project_id}/imports"): lambda w: {
        "files": [("file", ("pets.zip", dataset_zip()))]},
    ("POST", "/projects/{project_id}/import"): lambda w: {
        "files": [("file", ("pets.zip", dataset_zip()))]},
    ("PATCH", "/api/v1/images/{image_id}"): lambda w: {"json": {"status": "active"}},
    ("POST", "/api/v1/projects/{project_id}/images/bulk"): lambda w: {
        "json": {"image_ids": [w.ids["image_id"]], "status": "active"}},
    ("POST", "/api/v1/projects/{project_id}/inbox/accept"): lambda w: {
        "json": {"min_confidence": 0.99}},
    ("POST", "/api/v1/projects/{project_id}/trainings"): lambda w: {"json": {}},
    ("POST", "/api/v1/projects/{project_id}/lr-find"): lambda w: {"json": {}},
    ("POST", "/api/v1/projects/{project_id}/searches"): lambda w: {
        "json": {"label": "cat", "max_images": 1}},
    ("POST", "/api/v1/projects/{project_id}/url-imports"): lambda w: {
        "json": {"label": "cat", "urls": ["https://example.com/cat.jpg"]}},
    ("POST", "/api/v1/models/{model_id}/deployments"): lambda w: {
        "json": {"slug": _unique("matrix"), "public": False}},
    ("POST", "/projects/{project_id}/deploy"): lambda w: {
        "data": {"model_id": w.ids["model_id"], "slug": _unique("matrix")}},
    ("PATCH", "/api/v1/deployments/{slug}"): lambda w: {"json": {"public": False}},
    ("POST", "/deployments/{slug}"): lambda w: {
        "data": {"model_id": w.ids["model_id"], "public": "false"}},
    ("POST", "/api/v1/predict/{slug}"): lambda w: _image("file"),
    ("POST", "/api/v1/predict/{slug}/batch"): lambda w: _image("files"),
    ("POST", "/api/v1/models/{model_id}/predict"): lambda w: _image("file"),
    ("POST", "/api/v1/deployments/{slug}/log/add"): lambda w: {
        "json": {"ids": [_logged_photo(w)]}},
}
SAFE = ("GET", "HEAD", "OPTIONS")


def route_table(app) -> list[tuple[str, str]]:
    """(method, path) of every route the app answers, mounts included."""
    table = set()
    for route in routing.iter_route_contexts(app.routes):
        if isinstance(route.original_route, Mount):
            table.add(("GET", route.path + "/{path}"))
            continue
        table.update((method, route.path) for method in route.methods)
    # The owner deletes their project last: every other call needs it.
    return sorted(table, key=lambda r: (r == ("DELETE", "/api/v1/projects/{project_id}"), r))


def kind_of(route: tuple[str, str]) -> str:
    for kind, routes in (("public", PUBLIC), ("deployment", DEPLOYMENT), ("token", TOKEN),
                         ("account", ACCOUNT), ("admin", ADMIN)):
        if route in routes:
            return kind
    return "owned"


def parties(world: World) -> list[Party]:
    """The seven callers, each with a browser session of its own, new for every route (a call
    may have ended the last one)."""
    def party(name: str, who: Party, *, key: bool = True, csrf: bool = True) -> Party:
        cookie, token = world.new_cookie(who.user_id)
        return Party(name, who.user_id, who.key if key else None, cookie,
                     token if csrf else None)

    return [
        Party("anonymous"),
        party("disabled", world.disabled),
        party("other", world.other),
        party("other-cookie", world.other, key=False),
        party("admin", world.admin),
        party("owner-no-csrf", world.owner, key=False, csrf=False),
        party("owner", world.owner),
    ]


def call(world: World, party: Party, method: str, path: str, *, slug: str | None = None):
    """The party's request to the route, its path parameters the owner's objects."""
    params = {**PARAMS, **ROUTE_PARAMS.get((method, path), {})}
    values = {name: params[name](world) for name in re.findall(r"{(\w+)}", path)}
    if slug is not None:
        values["slug"] = slug
    url = path.format(**values)
    request = BODIES.get((method, path), lambda w: {})(world)
    if party.csrf and "data" in request or (party.csrf and not path.startswith("/api/")
                                            and method not in SAFE):
        request["data"] = {**request.get("data", {}), "csrf_token": party.csrf}
    headers = party.headers()
    if party.cookie:
        headers["Cookie"] = f"{SESSION_COOKIE}={party.cookie}"
    world.client.cookies.clear()
    query = QUERY.get((method, path), lambda w: {})(world)
    return world.client.request(method, url, params=query, headers=headers,
                                follow_redirects=False, **request)


def refused(response, party: Party, method: str) -> bool:
    if response.status_code in (401, 403, 404, 405):
        return True
    if response.status_code == 303 and response.headers["location"].split("?")[0] == "/login":
        # A page sends someone signed out to sign in; signing out goes there too, clearing
        # the cookie as it does.
        return "set-cookie" not in response.headers
    # A page's form without its CSRF token: the "form expired" page.
    return (party.name == "owner-no-csrf" and method not in SAFE
            and response.status_code == 400 and "reload the page" in response.text)


def problem(kind: str, party: Party, method: str, response) -> str | None:
    """What is wrong with this answer to this party, if anything."""
    if response.status_code >= 500:
        return "server error"
    if kind == "public":
        return None
    no = refused(response, party, method)
    csrf_refused = party.name == "owner-no-csrf" and method not in SAFE
    if kind == "token" or party.name == "disabled":
        should_refuse = True
    elif kind == "admin":
        should_refuse = party.name != "admin"
    elif kind == "account":
        should_refuse = party.name == "anonymous" or csrf_refused
        if party.name == "owner" and no:
            return "refused its owner"
    else:
        should_refuse = party.name not in ("owner", "owner-no-csrf") or csrf_refused
    if should_refuse and not no:
        return "let in"
    if not should_refuse and no and kind != "account":
        return "refused"
    return None


@pytest.fixture(scope="module")
def matrix(world) -> dict:
    """{(method, path, party, slug kind): response} for every route and party."""
    results = {}
    for method, path in route_table(world.client.app):
        kind = kind_of((method, path))
        for party in parties(world):
            results[method, path, party.name, kind] = call(world, party, method, path)
        if kind == "deployment":
            for party in parties(world):
                results[method, path, party.name, "public-deployment"] = call(
                    world, party, method, path, slug=world.ids["public_slug"])
    return results


def test_every_route_is_known_and_every_list_is_current(world):
    table = set(route_table(world.client.app))
    listed = set(PUBLIC) | set(DEPLOYMENT) | set(TOKEN) | ACCOUNT | ADMIN
    assert listed - table == set(), "listed routes the app no longer has"
    assert set(BODIES) - table == set(), "request bodies for routes the app no longer has"
    params = {name for _, path in table for name in re.findall(r"{(\w+)}", path)}
    assert params <= set(PARAMS), f"add the owner's object for {params - set(PARAMS)}"
    assert len(table) >= 80


def test_no_party_gets_where_it_should_not(matrix):
    failures = []
    for (method, path, party_name, kind), response in matrix.items():
        party = Party(party_name)
        if kind == "public-deployment":
            wrong = response.status_code >= 500 or (
                party_name in ("anonymous", "owner", "other", "admin")
                and refused(response, party, method))
            if wrong:
                failures.append(f"{method} {path} on a public deployment as {party_name}: "
                                f"{response.status_code} {response.text[:120]}")
            continue
        found = problem(kind, party, method, response)
        if found:
            failures.append(f"{found}: {method} {path} ({kind}) as {party_name}: "
                            f"{response.status_code} {response.text[:160]}")
    assert not failures, "\n".join(failures)


def test_the_matrix_covers_every_route_and_party(world, matrix):
    routes = {(method, path) for method, path, _, _ in matrix}
    assert routes == set(route_table(world.client.app))
    assert len(matrix) >= 7 * len(routes)
