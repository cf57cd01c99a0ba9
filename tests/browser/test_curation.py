"""The whole curation flow in headless Chromium against `kodiak run` (web + real workers)."""

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import screenshot
from tests.integration.conftest import base_env, free_port, running, wait_healthy

pytestmark = pytest.mark.browser
LABELS = {"grizzly": "grizzly bear", "black": "black bear", "teddy": "teddy bear"}
PER_LABEL = 30
TRAIN_TIMEOUT_MS = 420_000


@pytest.fixture
def app_url(tmp_path, browser):
    port = free_port()
    env = base_env(tmp_path / "var", port)
    with running(["run"], env, tmp_path / "run.log") as server:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, server, tmp_path / "run.log")
        yield url


def photos(data_dir: Path, label: str) -> list[Path]:
    return sorted((data_dir / "bears" / label).glob("*.jpg"))


def wait_for_job(page, name: str) -> None:
    """On a job page: wait until the training succeeds, then check the curves and epochs."""
    expect(page.locator("h1 .status")).to_have_text("succeeded", timeout=TRAIN_TIMEOUT_MS)
    expect(page.locator("#epochs tbody tr").first).to_be_visible()
    assert page.locator("#loss-chart path.curve").count() == 2
    screenshot(page, name)


def test_bear_flow_in_the_browser(page, app_url, data_dir):
    page.set_default_timeout(30_000)
    page.goto(f"{app_url}/projects")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Fprojects$"))
    screenshot(page, "curate-01-login")
    page.fill("#email", "admin@example.com")
    page.fill("#password", "wrong")
    page.click("button[type=submit]")
    expect(page.locator("[role=alert]")).to_contain_text("wrong")
    page.fill("#password", "admin-password-1")
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Projects")

    # New project with labels and queries in one form.
    page.fill("#name", "Bears")
    for i, (label, query) in enumerate(LABELS.items()):
        page.fill(f"#label-{i}", label)
        page.fill(f"#query-{i}", query)
    screenshot(page, "curate-02-projects")
    page.click("text=Create project")
    expect(page.locator("h1")).to_have_text("Bears")
    expect(page.locator(".label-card")).to_have_count(3)
    expect(page.locator("#q-1")).to_have_value("grizzly bear")

    # Upload PER_LABEL photos of each label (drag-and-drop's JS path, through the file input).
    for label in LABELS:
        page.select_option("#upload-label", label)
        page.set_input_files("#files", [str(p) for p in photos(data_dir, label)[:PER_LABEL]])
        with page.expect_navigation(timeout=120_000):  # the page reloads when done
            page.click("#upload-form button[type=submit]")
            expect(page.locator("#upload-status")).to_contain_text(f"Added {PER_LABEL}",
                                                                   timeout=120_000)
    for label in LABELS:
        card = page.locator(f'.label-card[data-label="{label}"]')
        expect(card.locator(".count")).to_have_text(f"{PER_LABEL} images")
        expect(card.locator(".strip img")).to_have_count(6)
    screenshot(page, "curate-03-project")

    # Relabel two teddy images as grizzly by multi-select (click, shift-click), undo, redo.
    page.click(".sub >> text=Images")
    page.select_option("#f-label", "teddy")
    page.click("form.filters button")
    tiles = page.locator(".tile")
    expect(tiles).to_have_count(PER_LABEL)
    tiles.nth(0).click()
    tiles.nth(1).click(modifiers=["Shift"])
    expect(page.locator("#selected-count")).to_have_text("2 selected")
    screenshot(page, "curate-04-grid-selected")
    page.click('#toolbar [data-bulk-label="grizzly"]')
    expect(page.locator("#toast")).to_contain_text("2 images relabelled as grizzly")
    expect(tiles.nth(1).locator(".lbl")).to_have_text("grizzly")
    page.keyboard.press("z")
    expect(tiles.nth(1).locator(".lbl")).to_have_text("teddy")
    expect(page.locator("#toast")).to_contain_text("Undone")
    page.keyboard.press("1")  # label 1 is grizzly
    expect(tiles.nth(0).locator(".lbl")).to_have_text("grizzly")
    moved = [int(tiles.nth(i).get_attribute("data-id")) for i in (0, 1)]
    page.reload()
    expect(page.locator(".tile")).to_have_count(PER_LABEL - 2)
    page.set_viewport_size({"width": 390, "height": 844})
    screenshot(page, "curate-05-grid-phone")
    page.set_viewport_size({"width": 1280, "height": 900})

    # Train (head only, the default), watching live curves.
    page.click(".sub >> text=Train")
    expect(page.locator("#epochs")).to_have_value("0")
    screenshot(page, "curate-06-train")
    page.click("text=Start training")
    expect(page.locator("h1")).to_contain_text("Training #1")
    wait_for_job(page, "curate-07-job")
    page.click("#result-link")
    expect(page.locator("h1")).to_have_text("Model v1")  # the project's first model
    first_model = page.url.rsplit("/", 1)[1]
    expect(page.locator("#confusion tbody tr")).to_have_count(3)
    expect(page.locator("#confusion tbody td")).to_have_count(9)
    cells = page.locator("#confusion tbody td").all_inner_texts()
    assert sum(int(c) for c in cells) > 0
    screenshot(page, "curate-08-results")

    # Fix a top-loss image: one of the two mislabelled teddies if the model caught it.
    cards = page.locator("#review .review-card")
    assert cards.count() > 0
    caught = [c for c in cards.all() if int(c.get_attribute("data-id")) in moved]
    card = caught[0] if caught else cards.first
    if caught:
        card.locator("select[data-relabel]").select_option("teddy")
        expect(page.locator("#toast")).to_contain_text("relabelled as teddy")
        expect(card.locator(".lbl")).to_have_text("teddy")
    else:
        card.locator("[data-bulk-status=excluded]").click()
        expect(page.locator("#toast")).to_contain_text("excluded")
    expect(card).to_have_class(re.compile("done"))
    fixed = int(card.get_attribute("data-id"))  # reviewed now: the queue leaves it out

    # The review queue (out-of-sample losses), duplicates and failures pages render.
    page.click(".sub >> text=Review")
    expect(page.locator("h1")).to_have_text("Review")
    expect(page.locator(f'#review [data-id="{fixed}"]')).to_have_count(0)
    first = page.locator("#review .review-card").first  # the worst out-of-sample loss
    assert int(first.get_attribute("data-id")) in set(moved) - {fixed}
    expect(first.locator("dd").nth(1)).to_contain_text("teddy")
    if first.locator(".lbl").inner_text() == "grizzly":  # not already fixed above
        first.locator('[data-bulk-label="teddy"]').click()
        expect(first.locator(".lbl")).to_have_text("teddy")
    screenshot(page, "curate-09-review")
    page.click(".sub >> text=Duplicates")
    screenshot(page, "curate-10-duplicates")
    page.click(".sub >> text=Failed")
    screenshot(page, "curate-11-failed")

    # Retrain after cleaning, then compare the two versions.
    page.goto(f"{app_url}/models/{first_model}")
    page.click("text=Retrain with the cleaned data")
    wait_for_job(page, "curate-12-retrain-job")
    page.click("#result-link")
    second_model = page.url.rsplit("/", 1)[1]
    assert second_model != first_model
    page.select_option("#compare", first_model)
    page.click("text=Compare >> nth=-1")
    expect(page.locator("h1")).to_have_text("Model v2")
    expect(page.locator("#comparison")).to_contain_text("v1")
    screenshot(page, "curate-13-compare")

    # Deploy the new version publicly, then open its demo page and classify a photo.
    page.click(".sub >> text=Models")
    page.fill(f"#slug-{second_model}", "bears")
    page.check(f'#slug-{second_model} ~ label input[name="public"]')
    page.click(f'#slug-{second_model} ~ button')
    expect(page.locator(".notice")).to_have_text("deployed as bears")
    expect(page.locator('.deployment[data-slug="bears"]')).to_contain_text("public")
    screenshot(page, "curate-14-models")
    page.click('.deployment a[href="/demo/bears"]')
    page.wait_for_load_state("load")  # demo.js (a module) listens before the file arrives
    held_out = photos(data_dir, "grizzly")[-1]
    page.set_input_files("#file", str(held_out))
    expect(page.locator("#answer")).to_contain_text("grizzly", timeout=60_000)
    screenshot(page, "curate-15-demo")
