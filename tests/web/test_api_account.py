"""Accounts over the JSON API: password change, API keys, users for admins, disabled users."""

from fastapi.testclient import TestClient

from tests.conftest import ADMIN_EMAIL, api_key

OTHER = {"email": "other@example.com", "password": "other-password"}


def sign_in(client: TestClient, email: str, password: str) -> TestClient:
    """A new client of the same app with its own cookie jar, signed in; X-CSRF-Token set."""
    browser = TestClient(client.app)
    answer = browser.post("/api/v1/session", json={"email": email, "password": password})
    assert answer.status_code == 200, answer.text
    browser.headers["X-CSRF-Token"] = answer.json()["csrf_token"]
    return browser


def user_id(client: TestClient, admin: dict, email: str) -> int:
    users = client.get("/api/v1/users", headers=admin).json()
    return next(u["id"] for u in users if u["email"] == email)


def test_account_shows_the_caller(client, other_user):
    me = client.get("/api/v1/account", headers=other_user)
    assert me.status_code == 200
    assert me.json()["email"] == OTHER["email"] and me.json()["disabled"] is False
    assert client.get("/api/v1/account").status_code == 401


def test_password_change_needs_the_current_one_and_ends_other_sessions(client, other_user):
    here = sign_in(client, **OTHER)
    there = sign_in(client, **OTHER)
    wrong = here.post("/api/v1/account/password",
                      json={"current_password": "nope-nope", "new_password": "brand-new-pw"})
    assert wrong.status_code == 403 and wrong.json()["detail"] == "the current password is wrong"
    short = here.post("/api/v1/account/password",
                      json={"current_password": OTHER["password"], "new_password": "short"})
    assert short.status_code == 422

    changed = here.post("/api/v1/account/password",
                        json={"current_password": OTHER["password"],
                              "new_password": "brand-new-pw"})
    assert changed.status_code == 204, changed.text
    assert here.get("/api/v1/account").status_code == 200  # this session stays
    assert there.get("/api/v1/account").status_code == 401  # the other one ended
    assert client.get("/api/v1/account", headers=other_user).status_code == 200  # keys stay
    old = client.post("/api/v1/session", json=OTHER)
    assert old.status_code == 401
    new = client.post("/api/v1/session", json={**OTHER, "password": "brand-new-pw"})
    assert new.status_code == 200


def test_password_change_by_cookie_needs_csrf(client, other_user):
    browser = sign_in(client, **OTHER)
    del browser.headers["X-CSRF-Token"]
    answer = browser.post("/api/v1/account/password",
                          json={"current_password": OTHER["password"],
                                "new_password": "brand-new-pw"})
    assert answer.status_code == 403


def test_api_keys_are_listed_without_the_key_and_revoked(client, other_user, admin):
    created = client.post("/api/v1/api-keys", json={"name": "laptop"}, headers=other_user)
    key = created.json()["key"]
    listed = client.get("/api/v1/api-keys", headers=other_user)
    assert listed.status_code == 200
    rows = listed.json()
    assert len(rows) == 2 and key not in listed.text
    laptop = next(row for row in rows if row["name"] == "laptop")
    assert key.startswith(laptop["prefix"]) and laptop["last_used_at"] is None
    assert set(laptop) == {"id", "name", "prefix", "created_at", "last_used_at"}
    first = next(row for row in rows if row["name"] != "laptop")
    assert first["last_used_at"] is not None  # the fixture's key made these calls

    assert client.delete(f"/api/v1/api-keys/{laptop['id']}", headers=admin).status_code == 404
    assert client.delete("/api/v1/api-keys/999999", headers=other_user).status_code == 404
    revoked = client.delete(f"/api/v1/api-keys/{laptop['id']}", headers=other_user)
    assert revoked.status_code == 204
    gone = client.get("/api/v1/projects", headers={"Authorization": f"Bearer {key}"})
    assert gone.status_code == 401
    assert [row["id"] for row in client.get("/api/v1/api-keys", headers=other_user).json()] \
        == [first["id"]]


def test_only_admins_list_and_change_users(client, admin, other_user):
    assert client.get("/api/v1/users", headers=other_user).status_code == 403
    users = client.get("/api/v1/users", headers=admin)
    assert users.status_code == 200
    assert {u["email"] for u in users.json()} == {ADMIN_EMAIL, OTHER["email"]}
    assert "password_hash" not in users.text
    admin_id = user_id(client, admin, ADMIN_EMAIL)
    patch = client.patch(f"/api/v1/users/{admin_id}", json={"disabled": True},
                         headers=other_user)
    assert patch.status_code == 403
    assert client.patch("/api/v1/users/999999", json={"disabled": True},
                        headers=admin).status_code == 404


def test_an_admin_cannot_disable_themselves(client, admin):
    admin_id = user_id(client, admin, ADMIN_EMAIL)
    answer = client.patch(f"/api/v1/users/{admin_id}", json={"disabled": True}, headers=admin)
    assert answer.status_code == 409
    assert client.get("/api/v1/account", headers=admin).status_code == 200


def test_a_disabled_user_is_locked_out_at_once_and_back_when_enabled(client, admin,
                                                                     other_user):
    browser = sign_in(client, **OTHER)
    other_id = user_id(client, admin, OTHER["email"])
    disabled = client.patch(f"/api/v1/users/{other_id}", json={"disabled": True},
                            headers=admin)
    assert disabled.status_code == 200 and disabled.json()["disabled"] is True
    assert client.get("/api/v1/projects", headers=other_user).status_code == 401
    assert browser.get("/api/v1/projects").status_code == 401
    refused = client.post("/api/v1/session", json=OTHER)
    assert refused.status_code == 401 and "disabled" in refused.json()["detail"]
    assert client.post("/login", data=OTHER).status_code == 401

    enabled = client.patch(f"/api/v1/users/{other_id}", json={"disabled": False},
                           headers=admin)
    assert enabled.status_code == 200 and enabled.json()["disabled"] is False
    assert client.get("/api/v1/projects", headers=other_user).status_code == 200
    assert browser.get("/api/v1/projects").status_code == 401  # sessions ended for good
    assert api_key(client, **OTHER)
