"""The account page (password, API keys) and the admins' users page."""

import re

from fastapi.testclient import TestClient

from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD

OTHER = {"email": "other@example.com", "password": "other-password"}


def sign_in(client: TestClient, email: str, password: str) -> tuple[TestClient, str]:
    """A browser (own cookie jar) signed in through the form, and its CSRF token."""
    browser = TestClient(client.app)
    answer = browser.post("/login", data={"email": email, "password": password},
                          follow_redirects=False)
    assert answer.status_code == 303, answer.text
    page = browser.get("/account")
    return browser, re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)


def test_account_page_needs_sign_in_and_links_from_the_header(client, other_user):
    answer = client.get("/account", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/login?next=%2Faccount"
    browser, _ = sign_in(client, **OTHER)
    page = browser.get("/projects")
    assert 'href="/account"' in page.text and 'href="/admin/users"' not in page.text
    admin, _ = sign_in(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    assert 'href="/admin/users"' in admin.get("/projects").text


def test_a_new_api_key_is_shown_once_and_can_be_revoked(client, other_user):
    browser, csrf = sign_in(client, **OTHER)
    created = browser.post("/account/api-keys", data={"csrf_token": csrf, "name": "script"})
    assert created.status_code == 200
    key = re.search(r"<pre>(kdk_[^<]+)</pre>", created.text).group(1)
    assert client.get("/api/v1/projects",
                      headers={"Authorization": f"Bearer {key}"}).status_code == 200
    page = browser.get("/account")
    assert key not in page.text and "script" in page.text
    key_id = re.search(r'data-key-id="(\d+)"[^<]*<td>script', page.text).group(1)

    assert browser.post(f"/account/api-keys/{key_id}/revoke",
                        data={"csrf_token": "wrong"}).status_code == 400
    revoked = browser.post(f"/account/api-keys/{key_id}/revoke", data={"csrf_token": csrf},
                           follow_redirects=False)
    assert revoked.status_code == 303
    assert client.get("/api/v1/projects",
                      headers={"Authorization": f"Bearer {key}"}).status_code == 401


def test_someone_elses_key_is_not_found(client, other_user):
    admin, admin_csrf = sign_in(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    browser, csrf = sign_in(client, **OTHER)
    mine = client.get("/api/v1/api-keys", headers=other_user).json()[0]["id"]
    answer = admin.post(f"/account/api-keys/{mine}/revoke", data={"csrf_token": admin_csrf})
    assert answer.status_code == 404 and "<html" in answer.text
    assert client.get("/api/v1/api-keys", headers=other_user).json()[0]["id"] == mine


def test_password_change_form(client, other_user):
    browser, csrf = sign_in(client, **OTHER)
    elsewhere, _ = sign_in(client, **OTHER)
    form = {"csrf_token": csrf, "current_password": OTHER["password"],
            "new_password": "a-new-password", "repeat_password": "a-new-password"}
    differ = browser.post("/account/password", data={**form, "repeat_password": "other-one"})
    assert differ.status_code == 400 and "differ" in differ.text
    wrong = browser.post("/account/password", data={**form, "current_password": "nope"})
    assert wrong.status_code == 400 and "current password is wrong" in wrong.text
    short = browser.post("/account/password",
                         data={**form, "new_password": "short", "repeat_password": "short"})
    assert short.status_code == 400 and "at least 8" in short.text
    assert browser.post("/account/password",
                        data={**form, "csrf_token": "x"}).status_code == 400

    changed = browser.post("/account/password", data=form, follow_redirects=False)
    assert changed.status_code == 303
    assert browser.get("/account").status_code == 200
    assert elsewhere.get("/account", follow_redirects=False).status_code == 303
    assert client.post("/login", data={**OTHER, "password": "a-new-password"},
                       follow_redirects=False).status_code == 303


def test_users_page_is_for_admins(client, other_user):
    browser, csrf = sign_in(client, **OTHER)
    assert browser.get("/admin/users").status_code == 404
    assert browser.post("/admin/users/1", data={"csrf_token": csrf,
                                                "disabled": "true"}).status_code == 404
    admin, admin_csrf = sign_in(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    page = admin.get("/admin/users")
    assert page.status_code == 200 and OTHER["email"] in page.text
    assert page.text.count('action="/admin/users/') == 1  # not for yourself


def test_an_admin_disables_enables_and_adds_users(client, other_user):
    admin, csrf = sign_in(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    browser, _ = sign_in(client, **OTHER)
    page = admin.get("/admin/users")
    other_id = re.search(r'data-user-id="(\d+)">\s*<td>other@', page.text).group(1)
    admin_id = re.search(r'data-user-id="(\d+)">\s*<td>admin@', page.text).group(1)

    disabled = admin.post(f"/admin/users/{other_id}", data={"csrf_token": csrf,
                                                            "disabled": "true"})
    assert disabled.status_code == 200 and "disabled" in disabled.text
    assert browser.get("/account", follow_redirects=False).status_code == 303
    assert client.get("/api/v1/projects", headers=other_user).status_code == 401
    myself = admin.post(f"/admin/users/{admin_id}", data={"csrf_token": csrf,
                                                          "disabled": "true"})
    assert myself.status_code == 400 and "your own account" in myself.text
    admin.post(f"/admin/users/{other_id}", data={"csrf_token": csrf, "disabled": "false"})
    assert client.get("/api/v1/projects", headers=other_user).status_code == 200

    added = admin.post("/admin/users", data={"csrf_token": csrf, "email": "new@example.com",
                                             "password": "new-password"})
    assert added.status_code == 200 and "new@example.com can sign in now" in added.text
    bad = admin.post("/admin/users", data={"csrf_token": csrf, "email": "nope",
                                           "password": "x"})
    assert bad.status_code == 400 and "email" in bad.text
    sign_in(client, "new@example.com", "new-password")
