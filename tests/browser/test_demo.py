"""The demo page in headless Chromium: drop a bear, pick a non-bear, see bars and answers."""

import base64

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import screenshot
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.serve.conftest import add_model_version, train_bear_model


@pytest.fixture(scope="session")
def bear_model(data_dir, tmp_path_factory):
    return train_bear_model(data_dir, tmp_path_factory.mktemp("bear-model"))


@pytest.fixture
def demo_url(live_server, bear_model):
    """A public deployment `bears` of the small bear model on the live server."""
    model_dir, meta, _, _ = bear_model
    with httpx.Client(base_url=live_server.url, timeout=30) as http:
        login = http.post("/api/v1/session",
                          json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
        headers = {"X-CSRF-Token": login.json()["csrf_token"]}
        project = http.post("/api/v1/projects", headers=headers,
                            json={"name": "bears", "labels": meta["labels"]}).json()
        app = live_server.server.config.app
        model_id = add_model_version(app, project_id=project["id"], model_dir=model_dir,
                                     meta=meta)
        created = http.post(f"/api/v1/models/{model_id}/deployments", headers=headers,
                            json={"slug": "bears", "public": True})
        assert created.status_code == 201, created.text
    return f"{live_server.url}/demo/bears"


def drop_file(page, selector: str, data: bytes, name: str) -> None:
    """Dispatch a real drop event carrying the file, as dragging it from the desktop does."""
    page.evaluate(
        """([selector, b64, name]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: "image/jpeg" }));
            const target = document.querySelector(selector);
            target.dispatchEvent(new DragEvent("dragover", { dataTransfer: transfer,
                                                             bubbles: true, cancelable: true }));
            target.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer,
                                                         bubbles: true, cancelable: true }));
        }""",
        [selector, base64.b64encode(data).decode(), name],
    )


def test_demo_labels_a_dropped_bear_and_rejects_a_cat(page, demo_url, data_dir):
    page.goto(demo_url)
    expect(page.get_by_role("heading", name="bears")).to_be_visible()
    expect(page.get_by_text("Drop a photo here")).to_be_visible()
    grizzly = sorted((data_dir / "bears" / "grizzly").glob("*.jpg"))[40]
    drop_file(page, "#drop", grizzly.read_bytes(), grizzly.name)
    answer = page.locator("#answer")
    expect(answer).to_contain_text("grizzly", timeout=20_000)
    expect(answer).not_to_contain_text("None of these")
    bars = page.locator("#bars li")
    expect(bars).to_have_count(3)
    expect(bars.first).to_have_attribute("data-label", "grizzly")
    width = bars.first.locator(".bar").evaluate("e => e.getBoundingClientRect().width")
    track = bars.first.locator(".track").evaluate("e => e.getBoundingClientRect().width")
    assert width > 0.5 * track
    screenshot(page, "demo-grizzly")

    page.set_input_files("#file", str(data_dir / "ood" / "cat.jpg"))
    expect(answer).to_contain_text("None of these", timeout=20_000)
    expect(bars).to_have_count(3)
    screenshot(page, "demo-none-of-these")


def test_demo_embed_mode_and_missing_webcam_message(page, demo_url):
    page.goto(demo_url + "?embed=1")
    expect(page.locator("header.top")).to_be_hidden()
    expect(page.get_by_text("Use it from code")).to_have_count(0)
    page.evaluate("() => { Object.defineProperty(navigator, 'mediaDevices', "
                  "{ value: undefined, configurable: true }); }")
    page.get_by_role("button", name="Use the webcam").click()
    expect(page.locator("#camera-message")).to_contain_text("cannot use a webcam")
