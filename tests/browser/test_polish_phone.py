"""Polish, continued (issue 13): phone-sized screens (the demo scrolls to its answer, the
grid's toolbar fits and speaks touch), the image detail page, duplicates that fit and go
away once resolved, and a licence filter on web searches.

Phone runs use a 390×844 touch viewport (an iPhone 12 to 15 in CSS pixels). One app (uvicorn
in a thread, no workers) serves the module, as in test_polish.
"""

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from app.db import session_scope
from app.models import Image, Job
from tests.browser.conftest import ARTIFACTS, screenshot, signed_in_page
from tests.browser.test_polish import api, factory, new_project, server, upload
from tests.serve.conftest import add_model_version, train_bear_model

__all__ = ["api", "server"]  # module fixtures shared with test_polish
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True,
         "device_scale_factor": 1}


@pytest.fixture(scope="module")
def phone(browser, server):
    """A signed-in page on a phone-sized touch screen."""
    with signed_in_page(browser, server.url, timeout_ms=20_000, **PHONE) as page:
        yield page


@pytest.fixture(scope="module")
def desk(browser, server):
    """A signed-in page on a desktop screen with a mouse."""
    with signed_in_page(browser, server.url) as page:
        yield page


def first_screen(page, name: str) -> None:
    """A screenshot of what the first screen shows (screenshot() takes the whole page)."""
    screenshot(page, name)
    page.screenshot(path=str(ARTIFACTS / f"{name}-screen.png"))


def in_view(page, selector: str) -> dict:
    """Where an element is against the viewport, and in the document."""
    return page.locator(selector).evaluate(
        "e => { const r = e.getBoundingClientRect(); return {top: r.top, bottom: r.bottom, "
        "doc_bottom: r.bottom + scrollY, height: innerHeight}; }")


# --- 13. phone-sized screens -------------------------------------------------------------------


def test_the_demo_on_a_phone_scrolls_to_its_answer(phone, server, api, data_dir,
                                                   tmp_path_factory):
    model_dir, meta, _, _ = train_bear_model(data_dir, tmp_path_factory.mktemp("bears"))
    project = new_project(api, "Bears on a phone", labels=meta["labels"])
    model_id = add_model_version(server.server.config.app, project_id=project["id"],
                                 model_dir=model_dir, meta=meta)
    created = api.post(f"/api/v1/models/{model_id}/deployments",
                       json={"slug": "phone-bears", "public": True})
    assert created.status_code == 201, created.text
    for label in meta["labels"]:  # the project's photos give the demo its examples
        photos = sorted((data_dir / "bears" / label).glob("*.jpg"))[50:52]
        added = api.post(f"/api/v1/projects/{project['id']}/images", data={"label": label},
                         files=[("files", (p.name, p.read_bytes(), "image/jpeg"))
                                for p in photos])
        assert added.status_code == 201, added.text
    phone.goto(f"{server.url}/demo/phone-bears")
    expect(phone.locator("#drop")).to_be_in_viewport()
    expect(phone.locator(".hint-touch")).to_be_visible()  # no Ctrl+V on a phone
    expect(phone.locator("#drop kbd").first).to_be_hidden()
    assert phone.evaluate("scrollY") == 0
    first_screen(phone, "phone-01-demo-before")

    example = phone.get_by_role("button", name="(grizzly)").first
    example.scroll_into_view_if_needed()
    example.tap()
    answer = phone.locator("#answer")
    expect(answer).to_contain_text("grizzly", timeout=30_000)
    expect(phone.locator("#bars li")).to_have_count(len(meta["labels"]))
    expect(answer).to_be_in_viewport(ratio=1)
    expect(phone.locator("#bars li").last).to_be_in_viewport()
    where = in_view(phone, "#answer")
    # Below the first screen in the document: without the scroll it would be out of sight.
    assert where["doc_bottom"] > where["height"], where
    assert phone.evaluate("scrollY") > 0
    assert phone.evaluate("document.scrollingElement.scrollWidth") <= 390
    first_screen(phone, "phone-02-demo-answer")


def test_the_grid_on_a_phone_fits_its_toolbar_and_speaks_touch(phone, desk, server, api):
    project = new_project(api, "Grid on a phone",
                          labels=("grizzly", "black", "teddy", "polar", "panda"))
    pid = project["id"]
    ids = upload(api, pid, "grizzly", [(40 * i % 256, 90, 30 + 9 * i) for i in range(12)])
    phone.goto(f"{server.url}/projects/{pid}/images")
    toolbar = phone.locator("#toolbar")
    expect(toolbar).to_be_visible()
    first_screen(phone, "phone-03-grid")
    # One row of tools, and the photos start on the first screen.
    assert toolbar.bounding_box()["height"] <= 60, toolbar.bounding_box()
    expect(phone.locator("#grid .tile").first).to_be_in_viewport()
    assert phone.evaluate("document.scrollingElement.scrollWidth") <= 390
    # No keyboard hints on touch: no keys on the buttons, no Shift-click.
    for kbd in phone.locator("#toolbar kbd").all():
        expect(kbd).to_be_hidden()
    expect(phone.locator(".hint-keys")).to_be_hidden()
    expect(phone.locator(".hint-touch")).to_be_visible()
    expect(phone.get_by_text("Shift-click")).to_be_hidden()
    phone.locator('[data-bulk-status="excluded"]').tap()  # nothing selected: a touch hint
    expect(phone.locator("#toast")).to_contain_text("tap them")
    # Tapping selects; a tool off to the right of the row is reached and works.
    phone.locator(f'.tile[data-id="{ids[0]}"] img').tap()
    expect(phone.locator("#selected-count")).to_have_text("1 selected")
    phone.locator('[data-bulk-label="panda"]').tap()
    expect(phone.locator(f'.tile[data-id="{ids[0]}"] .lbl')).to_have_text("panda")
    assert api.get(f"/api/v1/projects/{pid}/images?label=panda").json()["total"] == 1
    phone.locator(f'.tile[data-id="{ids[0]}"] a.open').tap()  # the tile's i opens the image
    expect(phone).to_have_url(f"{server.url}/projects/{pid}/images/{ids[0]}")
    expect(phone.locator("#history")).to_contain_text("relabelled from grizzly to panda")
    expect(phone.locator("#full-image")).to_be_in_viewport()
    assert phone.evaluate("document.scrollingElement.scrollWidth") <= 390
    first_screen(phone, "phone-05-image")

    desk.goto(f"{server.url}/projects/{pid}/images")  # a mouse and keys: the hints stay
    expect(desk.locator("#toolbar kbd").first).to_be_visible()
    expect(desk.locator(".hint-keys")).to_be_visible()
    expect(desk.locator(".hint-touch")).to_be_hidden()


# --- 14. the image detail view -----------------------------------------------------------------


def test_a_tile_opens_the_image_with_its_source_licence_and_history(desk, server, api):
    project = new_project(api, "Detail view", labels=("grizzly", "black"))
    pid = project["id"]
    first = upload(api, pid, "grizzly", [(120, 80, 40), (20, 60, 200)])[0]
    with session_scope(factory(server)) as session:
        image = session.get(Image, first)
        image.source, image.provider, image.query = "search", "duckduckgo", "grizzly bear"
        image.page_url = "https://bears.example/where-it-was"
        image.image_url = "https://img.example/grizzly.jpg"
        image.licence = "free to share and use commercially (search filter: ShareCommercially)"
    desk.goto(f"{server.url}/projects/{pid}/images")
    desk.locator(f'.tile[data-id="{first}"]').click()  # select it, relabel it
    desk.locator('[data-bulk-label="black"]').click()
    expect(desk.locator(f'.tile[data-id="{first}"] .lbl')).to_have_text("black")
    desk.locator(f'.tile[data-id="{first}"] a.open').click()
    expect(desk).to_have_url(f"{server.url}/projects/{pid}/images/{first}")
    expect(desk.locator("h1")).to_contain_text("black")
    full = desk.locator("#full-image")
    expect(full).to_be_visible()
    assert full.evaluate("e => e.complete && e.naturalWidth") == 64
    provenance = desk.locator("#provenance")
    expect(provenance).to_contain_text("grizzly bear")
    expect(provenance).to_contain_text("duckduckgo")
    expect(provenance.get_by_role("link", name="https://bears.example/where-it-was")).to_be_visible()
    expect(desk.locator("#licence")).to_contain_text("free to share and use commercially")
    expect(desk.locator("#history li").first).to_contain_text("added as grizzly")
    expect(desk.locator("#history li").nth(1)).to_contain_text("relabelled from grizzly to black")
    expect(desk.locator(".sub a[aria-current=page]")).to_have_text("Images")
    screenshot(desk, "polish-14-image-detail")


# --- 14. duplicates: captions that fit, resolved groups that go --------------------------------


def test_duplicate_captions_fit_and_a_resolved_group_goes(phone, desk, server, api, data_dir):
    long = "american black bear cub in the forest"
    project = new_project(api, "Duplicates", labels=(long, "grizzly"))
    pid = project["id"]
    photos = sorted((data_dir / "bears" / "black").glob("*.jpg"))[:5]
    added = api.post(f"/api/v1/projects/{pid}/images", data={"label": long},
                     files=[("files", (p.name, p.read_bytes(), "image/jpeg")) for p in photos])
    assert added.status_code == 201, added.text
    ids = sorted(row["image_id"] for row in added.json()["added"])
    with session_scope(factory(server)) as session:
        for image in session.scalars(select(Image).where(Image.project_id == pid)):
            image.duplicate_group = "g-one" if image.id in ids[:3] else "g-two"

    phone.goto(f"{server.url}/projects/{pid}/duplicates")
    captions = phone.locator(".dup-group .caption")
    expect(captions).to_have_count(5)
    overflowing = captions.evaluate_all(
        "cs => cs.filter(c => c.scrollWidth > c.clientWidth + 1 || c.getBoundingClientRect()"
        ".right > c.closest('.tile').getBoundingClientRect().right + 1"
        " || c.getBoundingClientRect().height > 32).length")
    assert overflowing == 0  # each caption one line inside its tile
    screenshot(phone, "phone-04-duplicates")

    desk.goto(f"{server.url}/projects/{pid}/duplicates")
    groups = desk.locator(".dup-group")
    expect(groups).to_have_count(2)
    for image_id in ids[:2]:  # keep one of the first group
        desk.locator(f'.tile[data-id="{image_id}"]').click()
    desk.locator('[data-bulk-status="excluded"]').click()
    expect(groups.first).to_be_hidden()
    expect(groups.nth(1)).to_be_visible()
    expect(desk.locator("#selected-count")).to_have_text("0 selected")
    desk.locator("#undo").click()  # undo brings it back
    expect(groups.first).to_be_visible()
    desk.locator(f'.tile[data-id="{ids[0]}"]').click()
    desk.locator(f'.tile[data-id="{ids[1]}"]').click()
    desk.keyboard.press("x")
    expect(groups.first).to_be_hidden()
    desk.reload()  # the server agrees: only the unresolved group is listed
    expect(groups).to_have_count(1)
    expect(groups.first.locator(".tile")).to_have_count(2)
    screenshot(desk, "polish-14-duplicates-resolved")
    for image_id in ids[3:]:
        desk.locator(f'.tile[data-id="{image_id}"]').click()
    desk.locator('[data-bulk-status="excluded"]').click()
    expect(desk.locator("#all-resolved")).to_be_visible()


# --- licence-aware search ----------------------------------------------------------------------


def test_the_search_form_offers_the_licence_filters_and_the_job_asks_for_one(desk, server,
                                                                              api):
    project = new_project(api, "Licensed bears", labels=("grizzly",))
    desk.goto(f"{server.url}/projects/{project['id']}")
    form = desk.locator('.search-form[data-label="grizzly"]')
    select_ = form.get_by_label("Licence of the images")
    options = select_.locator("option").all_text_contents()
    assert options[0] == "Any licence"
    assert "Creative Commons (any)" in options and "Public domain" in options
    assert "Free to share and use commercially" in options and len(options) == 7
    select_.select_option(label="Free to share and use commercially")
    form.get_by_role("button", name="Search the web").click()
    expect(form.locator("xpath=ancestor::div[@class='label-card']").locator(".jobs li")
           ).to_have_count(1)
    screenshot(desk, "polish-licence-search-form")
    with session_scope(factory(server)) as session:
        job = session.scalar(select(Job).where(Job.project_id == project["id"],
                                               Job.kind == "search"))
        assert job.params["licence"] == "ShareCommercially"


def test_the_project_page_with_its_search_forms_fits_a_phone(phone, server, api):
    # The licence select's longest option ("Free to share and use commercially") once made
    # each label's search form 27 px wider than a 390 px screen.
    project = new_project(api, "Bears on a phone", labels=("grizzly", "black"))
    phone.goto(f"{server.url}/projects/{project['id']}")
    expect(phone.get_by_label("Licence of the images").first).to_be_visible()
    first_screen(phone, "polish-phone-project")
    assert phone.evaluate("document.scrollingElement.scrollWidth") <= 390
    wide = phone.evaluate(
        "[...document.querySelectorAll('main *')].filter(e => "
        "e.getBoundingClientRect().right > innerWidth + 1).map(e => e.tagName + '.' + "
        "e.className + '#' + e.id)")
    assert wide == []
