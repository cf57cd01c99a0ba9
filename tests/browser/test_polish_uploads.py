"""Issue 13 in Chromium: uploads that say what happened to every file and keep saying it
(item 3), and a comparison of two models on the same images that the page lands on (item 7).

One app (uvicorn in a thread, no workers: models are rows made directly) serves the module.
"""

import json
import re
import shutil

import pytest
from playwright.sync_api import expect

from app.cli import migrate
from tests.browser.conftest import ARTIFACTS, LiveServer, screenshot, signed_in_api, signed_in_page
from tests.browser.test_polish import factory, new_project
from tests.conftest import make_settings

# Files the server refuses, each for its own reason: more than the five the old summary showed.
REJECTED_IN_FOLDER = ("not_an_image.jpg", "truncated.jpg", "empty.jpg")
REJECTED_CHOSEN = ("one_pixel.png", "html_error_page.jpg", "huge_dims_10000x10000.png",
                   "one_pixel.jpg", "huge_dims_65000x65000.jpg")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("polish-uploads"))
    migrate(settings)
    with LiveServer(settings) as live:
        yield live


@pytest.fixture(scope="module")
def api(server):
    with signed_in_api(server.url) as client:
        yield client


@pytest.fixture
def page(browser, server):
    with signed_in_page(browser, server.url, timeout_ms=20_000) as page:
        yield page


# --- 3. uploads: progress, a folder that waits, a history kept until dismissed ----------------


def throttle_uploads(page, bytes_per_s: int) -> None:
    """Chromium's own network emulation: the upload takes seconds, as on a slow line."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1,
        "uploadThroughput": bytes_per_s})


def record_status(page) -> None:
    """Every text the upload status shows, kept in sessionStorage across the reload."""
    page.evaluate("""() => {
        const status = document.getElementById("upload-status");
        new MutationObserver(() => {
            const seen = JSON.parse(sessionStorage.getItem("statuses") || "[]");
            seen.push(status.textContent);
            sessionStorage.setItem("statuses", JSON.stringify(seen));
        }).observe(status, { childList: true, characterData: true, subtree: true });
    }""")


def test_uploads_show_progress_and_keep_every_rejection_until_dismissed(
        page, server, api, data_dir, tmp_path):
    project = new_project(api, "Upload history", labels=("grizzly", "black"))
    pid = project["id"]
    folder = tmp_path / "grizzly"
    folder.mkdir()
    bears = sorted((data_dir / "bears" / "grizzly").glob("*.jpg"))[:8]
    for photo in bears:
        shutil.copy(photo, folder / photo.name)
    for name in REJECTED_IN_FOLDER:
        shutil.copy(data_dir / "odd" / name, folder / name)
    (folder / "notes.txt").write_text("where the photos came from")
    posts = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)

    page.goto(f"{server.url}/projects/{pid}")
    page.select_option("#upload-label", "")  # labels from the folder names
    page.set_input_files("#folder", str(folder))
    chosen = page.locator("#upload-chosen")
    expect(chosen).to_contain_text("11 files chosen")
    expect(chosen).to_contain_text("1 other file of the folder skipped")
    expect(chosen).to_contain_text("click Upload")
    page.wait_for_timeout(500)
    assert posts == []  # the folder waits for the Upload click
    page.set_input_files("#files", [str(data_dir / "odd" / name) for name in REJECTED_CHOSEN])
    expect(chosen).to_contain_text("16 files chosen")
    screenshot(page, "polish-uploads-01-chosen")

    throttle_uploads(page, 60_000)  # about 300 kB: five seconds
    record_status(page)
    button = page.locator("#upload-button")
    button.click()
    expect(button).to_be_disabled()
    expect(page.locator("#upload-progress")).to_be_visible()
    expect(page.locator("#upload-status")).to_contain_text(re.compile(r"MB sent"))
    screenshot(page, "polish-uploads-02-progress")
    page.locator("#uploads article.upload").wait_for(timeout=60_000)  # opened onto it
    page.wait_for_load_state("load")
    expect(page).to_have_url(re.compile(r"\?uploaded=\d+#uploads$"))

    statuses = json.loads(page.evaluate("sessionStorage.getItem('statuses')"))
    sent = [float(m.group(1)) for s in statuses if (m := re.search(r"([\d.]+) MB of", s))]
    assert len(set(sent)) >= 3 and sent == sorted(sent), statuses  # bytes went up as sent
    assert any("0 of 16 files filed" in s for s in statuses), statuses
    assert any("Added 8, 0 duplicates, 8 rejected" in s for s in statuses), statuses
    assert [u for u in posts if "/images" in u]  # sent through the API, in one batch

    history = page.locator("#uploads")
    expect(history).to_be_in_viewport()
    record = history.locator("article.upload")
    expect(record).to_have_count(1)
    expect(record.locator("h3")).to_be_in_viewport()
    expect(record.locator(".outcome")).to_have_text("8 added · 0 duplicates · 8 rejected")
    rejected = record.locator(".rejected li")
    expect(rejected).to_have_count(8)  # every one, not the first five
    for name in REJECTED_IN_FOLDER + REJECTED_CHOSEN:
        expect(record.locator(".rejected")).to_contain_text(name)
    expect(page.locator('.label-card[data-label="grizzly"] .count')).to_have_text("8 images")
    screenshot(page, "polish-uploads-03-history")

    page.set_viewport_size({"width": 390, "height": 844})  # a phone: long names wrap
    wide = page.evaluate("[...document.querySelectorAll('#uploads, #uploads li')]"
                         ".filter((e) => e.scrollWidth > e.clientWidth).length")
    assert wide == 0
    screenshot(page, "polish-uploads-03-history-phone")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.reload()  # kept, not a flash
    expect(page.locator("#uploads article.upload .rejected li")).to_have_count(8)
    page.click(".sub >> text=Failed")
    failed = page.locator("#failed-uploads tbody tr")
    expect(failed).to_have_count(8)
    expect(page.locator("#failed-uploads")).to_contain_text("not an image")
    expect(page.locator("main")).not_to_contain_text("Nothing failed")
    screenshot(page, "polish-uploads-04-failed")

    page.goto(f"{server.url}/projects/{pid}")
    page.locator("#uploads article.upload button", has_text="Dismiss").click()
    expect(page.locator("#uploads")).to_have_count(0)
    page.goto(f"{server.url}/projects/{pid}/failed")
    expect(failed).to_have_count(8)  # the Failed page keeps them
    assert api.get(f"/api/v1/projects/{pid}/uploads").json() == {"uploads": []}


def test_an_upload_that_cannot_be_sent_says_so_and_stays(page, server, api, data_dir):
    project = new_project(api, "Upload refused", labels=("grizzly",))
    pid = project["id"]
    page.goto(f"{server.url}/projects/{pid}")
    page.select_option("#upload-label", "grizzly")
    page.route(f"**/api/v1/projects/{pid}/images",
               lambda route: route.fulfill(status=413, content_type="application/json",
                                           body='{"detail": "the upload is over 1 MB"}'))
    page.set_input_files("#files", str(sorted((data_dir / "bears" / "grizzly").glob("*.jpg"))[0]))
    page.click("#upload-button")
    alert = page.locator("#upload-status [role=alert]")
    expect(alert).to_contain_text("1 file (0001.jpg) not sent: the upload is over 1 MB")
    expect(page.locator("#upload-button")).to_be_enabled()
    screenshot(page, "polish-uploads-05-not-sent")


def test_a_dropped_photo_waits_for_the_upload_click_too(page, server, api, data_dir):
    from tests.browser.test_demo import drop_file

    project = new_project(api, "Upload dropped", labels=("black",))
    pid = project["id"]
    posts = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    page.goto(f"{server.url}/projects/{pid}")
    page.select_option("#upload-label", "black")
    photo = sorted((data_dir / "bears" / "black").glob("*.jpg"))[0]
    drop_file(page, "#drop", photo.read_bytes(), photo.name)
    expect(page.locator("#upload-chosen")).to_contain_text("1 file chosen: click Upload")
    page.wait_for_timeout(500)
    assert posts == []
    with page.expect_navigation():
        page.click("#upload-button")
    expect(page.locator("#uploads article.upload .outcome")).to_have_text(
        "1 added · 0 duplicates · 0 rejected")
    expect(page.locator("#uploads article.upload")).to_contain_text("label black")


# --- 7. Compare: both versions on the same images, and the page lands on the comparison -------


def add_version(server, project_id: int, *, error_rate: float, top: list[int],
                answers: dict[int, tuple[str, str, bool]]) -> int:
    """A version row whose stored predictions are {image: (given, predicted, held out)}."""
    from app.db import session_scope
    from app.models import ImagePrediction, ModelVersion

    with session_scope(factory(server)) as session:
        model = ModelVersion(
            project_id=project_id, backbone="efficientnet_lite0", labels=["grizzly", "black"],
            recipe={}, storage_prefix=f"models/{project_id}/compare", metrics={
                "error_rate": error_rate, "accuracy": 1 - error_rate, "valid_count": 6,
                "top_losses": [{"image_id": i, "actual": "grizzly", "predicted": "black",
                                "confidence": 0.6, "loss": 1.0} for i in top]})
        session.add(model)
        session.flush()
        for image_id, (given, predicted, held_out) in answers.items():
            session.add(ImagePrediction(
                model_id=model.id, image_id=image_id, given_label=given,
                predicted_label=predicted, confidence=0.7, loss=0.4,
                probabilities={predicted: 0.7}, in_validation=held_out))
        return model.id


def test_compare_lands_on_both_versions_measured_on_the_same_images(page, server, api):
    from tests.browser.test_polish import upload

    project = new_project(api, "Compare", labels=("grizzly", "black"))
    pid = project["id"]
    grizzly = upload(api, pid, "grizzly", [(120 + 20 * i, 80, 40) for i in range(4)])
    black = upload(api, pid, "black", [(20, 20 + 20 * i, 30) for i in range(4)])
    ids = grizzly + black  # v1 held out ids[0:6], v2 ids[2:8]: the same images are ids[2:6]
    truth = {i: ("grizzly" if i in grizzly else "black") for i in ids}
    wrong = {"grizzly": "black", "black": "grizzly"}
    # On its own validation images v1 looks better (0% against 25%); on the four images both
    # held out, v1 gets two wrong and v2 none.
    v1 = add_version(server, pid, error_rate=0.0, top=ids, answers={
        **{i: (truth[i], truth[i], True) for i in ids[:6]},
        **{i: (truth[i], wrong[truth[i]], True) for i in (ids[3], ids[4])},
        **{i: (truth[i], truth[i], False) for i in ids[6:]}})
    v2 = add_version(server, pid, error_rate=0.25, top=ids, answers={
        **{i: (truth[i], truth[i], False) for i in ids[:2]},
        **{i: (truth[i], truth[i], True) for i in ids[2:]}})

    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto(f"{server.url}/models/{v2}")
    card = page.locator("#compare-card")
    expect(card).not_to_be_in_viewport()  # a long page: the comparison is far below
    page.select_option("#compare", str(v1))
    card.locator("button", has_text="Compare").click()
    expect(page).to_have_url(re.compile(rf"/models/{v2}\?compare={v1}#compare-card$"))
    page.wait_for_load_state("load")
    expect(card.locator("h2")).to_be_in_viewport()
    assert page.evaluate("window.scrollY") > 0
    page.screenshot(path=str(ARTIFACTS / "polish-compare-01-landed.png"))  # as one sees it
    expect(page.locator("#compared-on")).to_contain_text("the same 4 images")
    expect(page.locator("#compared-on")).to_contain_text(
        "the validation images that both held out (neither trained on them)")
    expect(page.locator("#compared-on")).to_contain_text(
        "2 validation images of v2 and 2 of v1 that the other version trained on")
    same = page.locator("#comparison tr", has_text="Error rate on the 4 same images")
    expect(same.locator("td").nth(0)).to_contain_text("0.0%")  # v2
    expect(same.locator("td").nth(1)).to_contain_text("50.0%")  # v1
    cross = page.locator("#comparison tr.cross")  # all 8 images, by fold heads or final models
    expect(cross).to_contain_text("on the 8 images both predicted")
    expect(cross.locator("td").nth(0)).to_contain_text("0.0%")
    expect(cross.locator("td").nth(1)).to_contain_text("25.0%")
    expect(page.locator("#compared-on")).to_contain_text("one image is 25.0%")
    own = page.locator("#comparison tr.own")
    expect(own).to_contain_text("different images")
    expect(page.locator("#disagreements li")).to_have_count(2)
    page.click("#compared-images summary")
    expect(page.locator("#compared-images img")).to_have_count(4)
    screenshot(page, "polish-compare-02-full-page")
