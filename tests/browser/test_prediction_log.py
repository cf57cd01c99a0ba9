"""A deployment's logged photos in headless Chromium: the models page's "Logged photos",
filtered to the "none of these" answers, two selected and added to the inbox."""

import re
from datetime import timedelta

import httpx
import pytest
from playwright.sync_api import expect

from app.db import make_engine, make_session_factory, session_scope
from app.models import Deployment, ModelVersion, PredictionLog, Project, User, utcnow
from app.storage import open_storage
from tests.browser.conftest import screenshot
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD

pytestmark = pytest.mark.browser


def logged_deployment(settings, photos) -> int:
    """A project with a deployment whose log kept `photos` (the first two answered "none of
    these"): the project's id."""
    factory = make_session_factory(make_engine(settings.resolved_database_url()))
    storage = open_storage(settings.storage_url, settings)
    with session_scope(factory) as session:
        owner = session.query(User).filter(User.email == ADMIN_EMAIL).one()
        project = Project(owner_id=owner.id, name="Logged bears")
        session.add(project)
        session.flush()
        model = ModelVersion(project_id=project.id, backbone="efficientnet_lite0",
                             labels=["black", "grizzly"], storage_prefix="models/x",
                             recipe={}, metrics={"error_rate": 0.1})
        session.add(model)
        session.flush()
        deployment = Deployment(slug="logged-bears", project_id=project.id, model_id=model.id,
                                log_images=True)
        session.add(deployment)
        session.flush()
        for n, photo in enumerate(photos):
            key = f"predictions/{deployment.id}/{n}.jpg"
            storage.put(key, photo.read_bytes())
            session.add(PredictionLog(
                deployment_id=deployment.id, model_id=model.id, label="black",
                confidence=0.3 if n < 2 else 0.95, unknown=n < 2, latency_ms=4.0,
                created_at=utcnow() - timedelta(minutes=n), image_key=key))
        return project.id


def test_logged_photos_go_to_the_inbox(page, live_server, settings, data_dir):
    photos = sorted((data_dir / "bears" / "grizzly").glob("*.jpg"))[:4]
    project_id = logged_deployment(settings, photos)
    page.goto(f"{live_server.url}/login")
    page.fill("#email", ADMIN_EMAIL)
    page.fill("#password", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    page.goto(f"{live_server.url}/projects/{project_id}/models")
    section = page.locator('details.logged[data-slug="logged-bears"]')
    section.locator("summary").click()
    tiles = section.locator(".log-grid .tile")
    expect(tiles).to_have_count(4)
    section.locator(".log-only").select_option("unknown")
    expect(tiles).to_have_count(2)
    expect(tiles.first).to_contain_text("none of these")
    expect(section.locator(".log-add")).to_be_disabled()
    tiles.nth(0).click()
    tiles.nth(1).focus()
    page.keyboard.press("Space")
    expect(section.locator(".log-count")).to_have_text("2 selected")
    section.locator(".log-add").click()
    result = section.locator(".log-result")
    expect(result).to_contain_text("Added 2 photos to the inbox")
    expect(result.locator("a")).to_have_attribute("href", f"/projects/{project_id}/inbox")
    screenshot(page, "logged-photos")
    section.locator(".log-only").select_option("all")
    expect(tiles).to_have_count(4)
    tiles.nth(0).click()  # the newest, added a moment ago: a duplicate now
    section.locator(".log-add").click()
    expect(result).to_contain_text(re.compile(r"Added 0 photos.*1 was already in the project"))
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    inbox = httpx.get(f"{live_server.url}/api/v1/projects/{project_id}/inbox",
                      cookies=cookies).json()
    assert inbox["total"] == 2
