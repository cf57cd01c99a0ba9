"""Label assist in headless Chromium against `kodiak run` (web + real workers): photos uploaded
without a label, grouped by look, a group labelled, a model trained, its suggestions accepted
above a confidence and undone, one photo fixed, and similar photos labelled together."""

import re
import time
from collections import Counter
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import screenshot
from tests.browser.test_curation import app_url  # noqa: F401  (the `kodiak run` fixture)

pytestmark = pytest.mark.browser
LABELS = ("grizzly", "black", "teddy")
PER_LABEL = 8
ORGANIZE_TIMEOUT_MS = 300_000
TRAIN_TIMEOUT_MS = 420_000


def sign_in_and_create(page, url: str) -> int:
    page.goto(f"{url}/projects")
    page.fill("#email", "admin@example.com")
    page.fill("#password", "admin-password-1")
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Projects")
    page.fill("#name", "Inbox bears")
    for i, label in enumerate(LABELS):
        page.fill(f"#label-{i}", label)
    page.click("text=Create project")
    expect(page.locator("h1")).to_have_text("Inbox bears")
    return int(page.url.rsplit("/", 1)[1])


def upload_unlabelled(page, data_dir: Path) -> dict[str, str]:
    """PER_LABEL photos of each label through the upload form's "no label yet (inbox)",
    named after their true label (the filename is how the test knows the truth)."""
    files, truth = [], {}
    for label in LABELS:
        for path in sorted((data_dir / "bears" / label).glob("*.jpg"))[:PER_LABEL]:
            name = f"{label}-{path.name}"
            truth[name] = label
            files.append({"name": name, "mimeType": "image/jpeg", "buffer": path.read_bytes()})
    page.select_option("#upload-label", label="no label yet (inbox)")
    page.set_input_files("#files", files)
    with page.expect_navigation(timeout=120_000):  # the page reloads when done
        page.click("#upload-form button[type=submit]")
    return truth


class Api:
    """The JSON API with the page's session cookie (reads need no CSRF token)."""

    def __init__(self, page, url: str, project_id: int) -> None:
        self.request, self.url, self.project_id = page.context.request, url, project_id

    def get(self, path: str, **params) -> dict:
        answer = self.request.get(f"{self.url}/api/v1{path}", params=params)
        assert answer.ok, answer.text()
        return answer.json()

    def labels(self) -> dict[int, str | None]:
        rows = self.get(f"/projects/{self.project_id}/images", status="active", limit=500)
        return {row["id"]: row["label"] for row in rows["images"]}

    def inbox(self, **params) -> dict:
        return self.get(f"/projects/{self.project_id}/inbox", **{"limit": 500, **params})


def wait_for(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(1)


def ids_of(tiles) -> list[int]:
    return [int(i) for i in tiles.evaluate_all("ts => ts.map(t => t.dataset.id)")]


def label_selection(page, label: str, count: int) -> None:
    page.select_option("#label-choice", label)
    expect(page.locator("#label-these")).to_have_text(f"Label these {count}")
    page.click("#label-these")
    expect(page.locator("#toast")).to_contain_text(
        f"{count} photo{'s' if count != 1 else ''} labelled as {label}")


def expect_total(page, n: int) -> None:
    expect(page.locator("#inbox-total")).to_have_text(
        f"{n} photo{'s' if n != 1 else ''} without a label", timeout=30_000)


def test_inbox_flow_in_the_browser(page, app_url, data_dir):  # noqa: F811
    page.set_default_timeout(30_000)
    project_id = sign_in_and_create(page, app_url)
    api = Api(page, app_url, project_id)

    # An empty inbox says where photos come from.
    page.click('.sub a[href$="/inbox"]')
    expect(page.locator("#empty")).to_be_visible()
    expect(page.locator("#empty")).to_contain_text("no label yet (inbox)")
    expect(page.locator("#workspace")).to_be_hidden()
    screenshot(page, "inbox-01-empty")

    page.click(".sub >> text=Overview")
    truth_by_name = upload_unlabelled(page, data_dir)
    total = len(truth_by_name)
    rows = api.get(f"/projects/{project_id}/images", status="active", limit=500)["images"]
    assert len(rows) == total, [r["original_filename"] for r in rows]
    truth = {row["id"]: truth_by_name[row["original_filename"]] for row in rows}
    assert len(truth) == total and all(row["label"] is None for row in rows)

    # The organize job starts by itself; the page shows its progress, then the groups.
    page.click('.sub a[href$="/inbox"]')
    expect_total(page, total)
    first_job = api.inbox()["organize_job"]
    assert first_job is not None and first_job["kind"] == "organize"  # started by the upload
    if first_job["status"] in ("queued", "running"):  # so it was when the page loaded
        expect(page.locator("#organize-text")).to_contain_text("Organizing the inbox")
        screenshot(page, "inbox-02-organizing")
    picker = page.locator("#cluster-picker [data-cluster]")
    expect(picker.first).to_be_visible(timeout=ORGANIZE_TIMEOUT_MS)
    expect(page.locator("#organize")).to_be_hidden()
    clusters = api.inbox()["clusters"]
    assert sum(c["size"] for c in clusters) == total and len(clusters) > 1
    expect(picker).to_have_count(len(clusters))
    screenshot(page, "inbox-03-groups")

    # Label whole groups: each opens all selected; the misfits are clicked out first.
    labelled: dict[int, str] = {}
    for _ in range(len(clusters)):
        if all(Counter(labelled.values())[label] >= 3 for label in LABELS):
            break
        tiles = page.locator("#inbox-grid .tile")
        expect(tiles.first).to_be_visible()
        shown = ids_of(tiles)
        expect(page.locator("#view-title")).to_contain_text(f"{len(shown)} photo")
        expect(page.locator('#inbox-grid .tile[aria-selected="true"]')).to_have_count(len(shown))
        majority = Counter(truth[i] for i in shown).most_common(1)[0][0]
        misfits = [i for i in shown if truth[i] != majority]
        for image_id in misfits:
            page.click(f'#inbox-grid .tile[data-id="{image_id}"] img')
        if misfits:
            screenshot(page, "inbox-04-misfits-out")
        label_selection(page, majority, len(shown) - len(misfits))
        labelled.update({i: majority for i in shown if i not in misfits})
        expect_total(page, total - len(labelled))
        now = api.labels()
        assert {i: now[i] for i in labelled} == labelled  # right labels, saved
        assert all(now[i] is None for i in misfits)  # the misfits stay in the inbox
    assert len(set(labelled.values())) >= 2

    # Train the quickest recipe (the head on the frozen body, the form's default).
    page.click(".sub >> text=Train")
    expect(page.locator("#epochs")).to_have_value("0")
    page.click("text=Start training")
    expect(page.locator("h1 .status")).to_have_text("succeeded", timeout=TRAIN_TIMEOUT_MS)
    model_id = page.locator("#result-link").get_attribute("href").rsplit("/", 1)[1]

    # The training started organizing again: suggestions from the new model appear.
    wait_for(lambda: api.inbox(limit=1)["organize_job"]["id"] != first_job["id"], "organize")
    page.click('.sub a[href$="/inbox"]')
    suggestions = page.locator('[data-view="suggestions"]')
    expect(suggestions).to_be_enabled(timeout=ORGANIZE_TIMEOUT_MS)
    expect(page.locator("#organize")).to_be_hidden(timeout=ORGANIZE_TIMEOUT_MS)
    inbox = api.inbox(order="confidence")
    assert str(inbox["model_id"]) == model_id
    left = total - len(labelled)
    assert inbox["total"] == left and all(i["suggestion"] for i in inbox["items"])
    suggestions.click()
    confidences = [i["suggestion"]["confidence"] for i in inbox["items"]]
    assert confidences == sorted(confidences, reverse=True)
    # A threshold that splits the suggestions: the most confident half or so above it.
    percent = max(1, int(confidences[(len(confidences) - 1) // 2] * 100))
    above = [i for i in inbox["items"] if i["suggestion"]["confidence"] >= percent / 100]
    assert 0 < len(above) < left or len(above) == left == 1
    page.fill("#min-confidence", str(percent))
    accept = page.locator("#accept")
    expect(accept).to_have_text(f"Accept {len(above)} suggestion{'s' if len(above) != 1 else ''}"
                                f" above {percent}%")
    expect(page.locator("#inbox-grid .tile")).to_have_count(len(above))
    assert ids_of(page.locator("#inbox-grid .tile")) == [i["id"] for i in above]
    first = page.locator("#inbox-grid .tile").first.locator(".lbl")
    expect(first).to_have_text(re.compile(rf"^{above[0]['suggestion']['label']} \d+%$"))
    rest = page.locator("#rest-grid .tile")
    expect(page.locator("#rest-note")).to_have_text(
        "The model is least sure about these; labelling them teaches it most.")
    informative = [i["id"] for i in api.inbox(order="informative")["items"]
                   if i["id"] not in {a["id"] for a in above}]
    assert ids_of(rest) == informative
    screenshot(page, "inbox-05-suggestions")
    page.set_viewport_size({"width": 390, "height": 844})
    screenshot(page, "inbox-05-suggestions-phone")
    page.set_viewport_size({"width": 1280, "height": 900})

    # Accept above the threshold, then undo: the photos go back to the inbox.
    accept.click()
    expect(page.locator("#toast")).to_contain_text(f"Accepted {len(above)} suggestion")
    expect_total(page, left - len(above))
    now = api.labels()
    assert all(now[i["id"]] == i["suggestion"]["label"] for i in above)
    undo = page.locator("#accept-undo")
    expect(undo).to_be_visible()
    screenshot(page, "inbox-06-accepted")
    undo.click()
    expect(page.locator("#toast")).to_contain_text(f"Undone: {len(above)} photo")
    expect_total(page, left)
    expect(undo).to_be_hidden()
    now = api.labels()
    assert all(now[i["id"]] is None for i in above)

    # Fix one: a photo the model gets wrong (or the least certain one) gets its true label.
    items = api.inbox(order="informative")["items"]
    wrong = [i for i in items if i["suggestion"]["label"] != truth[i["id"]]]
    target = (wrong or items)[0]["id"]
    page.click(f'.tile[data-id="{target}"] img')
    expect(page.locator("#selected-count")).to_have_text("1 selected")
    label_selection(page, truth[target], 1)
    expect_total(page, left - 1)
    assert api.labels()[target] == truth[target]

    # Find similar: the nearest photos, the unlabelled ones selected, ready to label together.
    source = api.inbox(order="informative")["items"][0]["id"]
    page.click(f'.tile[data-id="{source}"] [data-similar]')
    expect(page.locator("#view-title")).to_contain_text(f"Similar to photo {source}")
    nearest = api.get(f"/images/{source}/similar", limit=24)["items"]
    assert nearest and all(n["id"] != source for n in nearest)
    assert [n["distance"] for n in nearest] == sorted(n["distance"] for n in nearest)
    tiles = page.locator("#inbox-grid .tile")
    assert ids_of(tiles) == [source] + [n["id"] for n in nearest]
    waiting = [source] + [n["id"] for n in nearest if n["label"] is None]
    assert ids_of(page.locator('#inbox-grid .tile[aria-selected="true"]')) == waiting
    for n in nearest:
        if n["label"]:
            expect(page.locator(f'#inbox-grid .tile[data-id="{n["id"]}"] .lbl')).to_have_text(
                n["label"])
    screenshot(page, "inbox-07-similar")
    label = truth[source]
    misfits = [i for i in waiting if truth[i] != label]
    for image_id in misfits:
        page.click(f'#inbox-grid .tile[data-id="{image_id}"] img')
    label_selection(page, label, len(waiting) - len(misfits))
    now = api.labels()
    assert all(now[i] == label for i in waiting if i not in misfits)
    assert all(now[i] is None for i in misfits)
    expect(page.locator(f'#inbox-grid .tile[data-id="{source}"] .lbl')).to_have_text(label)

    # From the image grid: "Find similar" on a selected photo opens the same view.
    page.click(".sub >> text=Images")
    page.wait_for_load_state("load")  # grid.js (a module) listens from then on
    page.locator(".tile").first.click()
    expect(page.locator("#selected-count")).to_have_text("1 selected")
    chosen = int(page.locator(".tile").first.get_attribute("data-id"))
    page.click('#toolbar [data-command="similar"]')
    expect(page).to_have_url(re.compile(rf"/projects/{project_id}/inbox\?similar={chosen}$"))
    expect(page.locator("#view-title")).to_contain_text(f"Similar to photo {chosen}")
    expect(page.locator("#inbox-grid .tile").nth(1)).to_be_visible()
    screenshot(page, "inbox-08-similar-from-grid")

    # And from an image's own page.
    page.goto(f"{app_url}/projects/{project_id}/images/{source}")
    page.click("#find-similar")
    expect(page.locator("#view-title")).to_contain_text(f"Similar to photo {source}")
    assert ids_of(page.locator("#inbox-grid .tile"))[0] == source
