"""Headless Chromium (Debian's /usr/bin/chromium driven by Playwright) and a live app server."""

import os
import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn

from app.config import Settings
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.integration.conftest import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"


@pytest.fixture(scope="module")
def browser():
    """One Chromium per test module: a failure under CI when it is missing, else a skip.

    Not per session: Playwright's sync API runs an event loop on the main thread while it is
    open, and later tests that call asyncio.run() would find it running.
    """
    if not shutil.which(CHROMIUM):
        message = "Chromium not found at /usr/bin/chromium (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    yield page
    context.close()


def screenshot(page, name: str) -> Path:
    """Save a full-page screenshot under artifacts/screenshots (not committed)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def sign_in(page, url: str) -> None:
    """Sign in as the admin through the sign-in form at `url`."""
    page.goto(url)
    page.fill("#email", ADMIN_EMAIL)
    page.fill("#password", ADMIN_PASSWORD)
    page.click("button[type=submit]")


@contextmanager
def signed_in_api(base_url: str):
    """An httpx client signed in as the admin, sending the CSRF header."""
    with httpx.Client(base_url=base_url, timeout=30) as client:
        login = client.post("/api/v1/session",
                            json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
        assert login.status_code == 200, login.text
        client.headers["X-CSRF-Token"] = login.json()["csrf_token"]
        yield client


@contextmanager
def signed_in_page(browser, base_url: str, *, timeout_ms: int = 15_000, **context_options):
    """A page of its own browser context, signed in as the admin (a desktop screen unless
    `context_options` say otherwise)."""
    context = browser.new_context(**({"viewport": {"width": 1280, "height": 900}}
                                     | context_options))
    page = context.new_page()
    page.set_default_timeout(timeout_ms)
    sign_in(page, f"{base_url}/login")
    yield page
    context.close()


class LiveServer:
    """The real app on uvicorn in a thread, on a free loopback port."""

    def __init__(self, settings: Settings) -> None:
        from app.web.main import create_app

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=self.port,
                                log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{self.url}/api/v1/health", timeout=1)
                return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("the live server did not start")

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def live_server(settings):
    with LiveServer(settings) as server:
        yield server
