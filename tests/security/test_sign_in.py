"""Sign-in abuse: failures throttled per account and per client, bounded hashing, login CSRF."""

import asyncio
import threading
import time

import pytest
from fastapi.testclient import TestClient

from app.cli import migrate
from app.services import auth
from app.services.ratelimit import SignInThrottle
from app.web.main import create_app
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, make_settings

WRONG = {"email": ADMIN_EMAIL, "password": "not-the-password"}
RIGHT = {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}


def from_ip(client: TestClient, ip: str) -> TestClient:
    """Another client of the same app, seen as coming from `ip`."""
    return TestClient(client.app, client=(ip, 40000))


def test_thirty_wrong_passwords_meet_a_429_and_lock_out_the_right_one_too(client, other_user):
    answers = [client.post("/api/v1/session", json=WRONG) for _ in range(30)]
    codes = [a.status_code for a in answers]
    assert codes[:10] == [401] * 10 and set(codes[10:]) == {429}
    assert int(answers[-1].headers["Retry-After"]) >= 1
    assert "too many failed sign-ins" in answers[-1].json()["detail"]

    elsewhere = from_ip(client, "203.0.113.9")
    locked = elsewhere.post("/api/v1/session", json=RIGHT)
    assert locked.status_code == 429 and "Retry-After" in locked.headers
    page = elsewhere.post("/login", data=RIGHT)
    assert page.status_code == 429 and "too many failed sign-ins" in page.text
    assert page.headers["Retry-After"]

    other = elsewhere.post("/api/v1/session",
                           json={"email": "other@example.com", "password": "other-password"})
    assert other.status_code == 200, other.text


def test_the_html_form_counts_failures_too(client):
    codes = [client.post("/login", data=WRONG).status_code for _ in range(12)]
    assert codes[:10] == [401] * 10 and codes[10:] == [429, 429]
    assert client.post("/api/v1/session", json=RIGHT).status_code == 429


def test_successful_sign_ins_do_not_count(client):
    for _ in range(15):
        assert client.post("/api/v1/session", json=RIGHT).status_code == 200


def test_one_client_guessing_many_accounts_is_throttled(tmp_path):
    settings = make_settings(tmp_path, sign_in_failures_per_ip=5)
    migrate(settings)
    with TestClient(create_app(settings)) as client:
        codes = [client.post("/api/v1/session", json={"email": f"u{i}@example.com",
                                                      "password": "guess"}).status_code
                 for i in range(7)]
        assert codes == [401] * 5 + [429] * 2
        assert client.post("/api/v1/session", json=RIGHT).status_code == 429
        assert from_ip(client, "198.51.100.4").post(
            "/api/v1/session", json=RIGHT).status_code == 200


def test_a_locked_account_opens_again_as_the_window_passes():
    now = [0.0]
    throttle = SignInThrottle(failures_per_account=10, failures_per_ip=100, window_s=900,
                              clock=lambda: now[0])
    for _ in range(10):
        assert throttle.attempt(account="a", ip="1") == 0
    wait = throttle.attempt(account="a", ip="1")
    assert wait == pytest.approx(90)
    assert throttle.attempt(account="b", ip="1") == 0  # other accounts are not locked
    now[0] += 90
    assert throttle.attempt(account="a", ip="1") == 0
    assert throttle.attempt(account="a", ip="1") > 0


def test_password_hashes_run_a_bounded_number_at_once(monkeypatch):
    running, most = 0, 0
    lock = threading.Lock()

    def slow_authenticate(*, session, email, password):
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        raise auth.AuthError("wrong email or password")

    monkeypatch.setattr(auth, "authenticate", slow_authenticate)
    guard = auth.SignInGuard(
        throttle=SignInThrottle(failures_per_account=100, failures_per_ip=100, window_s=900),
        hashes_at_once=2)

    async def attempt(i: int):
        try:
            await guard.authenticate(session=None, email=f"u{i}@e.com", password="x", ip="1")
        except auth.AuthError as exc:
            return exc

    async def crowded():
        return await asyncio.gather(*(guard.authenticate(session=None, email="a@e.com",
                                                         password="x", ip="2")
                                      for _ in range(4)), return_exceptions=True)

    async def go():
        failures = await asyncio.gather(*(attempt(i) for i in range(8)))
        assert all(isinstance(e, auth.AuthError) for e in failures)
        assert most == 2
        guard.queue_s = 0.01  # a longer wait for a hash turns attempts away, uncounted
        return await crowded()

    outcomes = asyncio.run(go())
    busy = [e for e in outcomes if isinstance(e, auth.SignInThrottled)]
    assert busy and all("at once" in str(e) for e in busy)
    failed = len(outcomes) - len(busy)
    assert guard.throttle.by_account.take("account:a@e.com", 100 - failed) == 0


def test_sign_in_from_another_site_is_refused(client):
    for headers in ({"Origin": "https://evil.example"}, {"Origin": "null"},
                    {"Referer": "https://evil.example/page"},
                    {"Sec-Fetch-Site": "cross-site"}):
        page = client.post("/login", data=RIGHT, headers=headers, follow_redirects=False)
        assert page.status_code == 403, headers
        assert "another site" in page.text and "kodiak_session" not in page.headers.get(
            "set-cookie", "")
        api = client.post("/api/v1/session", json=RIGHT, headers=headers)
        assert api.status_code == 403 and "another site" in api.json()["detail"]
    own = client.post("/login", data=RIGHT, follow_redirects=False,
                      headers={"Origin": "http://testserver",
                               "Referer": "http://testserver/login"})
    assert own.status_code == 303 and "kodiak_session" in own.headers["set-cookie"]
