"""Sign-in, CSRF, API keys and admin-only user creation over the real app."""

from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD


def test_health(client):
    assert client.get("/api/v1/health").json()["status"] == "ok"


def test_wrong_password_is_401_with_detail(client):
    answer = client.post("/api/v1/session", json={"email": ADMIN_EMAIL, "password": "nope"})
    assert answer.status_code == 401
    assert answer.json()["detail"] == "wrong email or password"


def test_cookie_session_needs_csrf_on_unsafe_requests(client):
    login = client.post("/api/v1/session", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    csrf = login.json()["csrf_token"]
    assert client.get("/api/v1/projects").status_code == 200
    refused = client.post("/api/v1/projects", json={"name": "x"})
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]
    made = client.post("/api/v1/projects", json={"name": "x"}, headers={"X-CSRF-Token": csrf})
    assert made.status_code == 201


def test_api_key_authenticates_and_bad_key_is_401(client, admin):
    assert client.get("/api/v1/projects", headers=admin).status_code == 200
    bad = client.get("/api/v1/projects", headers={"Authorization": "Bearer kdk_wrong"})
    assert bad.status_code == 401
    assert client.get("/api/v1/projects").status_code == 401


def test_only_admins_create_users(client, admin, other_user):
    body = {"email": "third@example.com", "password": "third-password"}
    assert client.post("/api/v1/users", json=body, headers=other_user).status_code == 403
    assert client.post("/api/v1/users", json=body, headers=admin).status_code == 201
    again = client.post("/api/v1/users", json=body, headers=admin)
    assert again.status_code == 409


def test_login_page_sets_session_and_projects_page_renders(client):
    assert client.get("/projects", follow_redirects=False).headers["location"] == (
        "/login?next=%2Fprojects")
    page = client.post("/login", data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    assert page.status_code == 200
    assert "New project" in page.text
    bad = client.post("/login", data={"email": ADMIN_EMAIL, "password": "wrong"})
    assert bad.status_code == 401
    assert "wrong email or password" in bad.text
