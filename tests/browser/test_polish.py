"""A new user's first hour in Chromium, without a stumble: what `hidden` hides, API docs
offline, unambiguous "none of these", searches without internet, back button and deep links,
numbering, renaming and deleting, kept images, and the small things.

One app (uvicorn in a thread, no workers: jobs and models are made directly where a test
needs them) and one signed-in page serve the whole module.
"""

import re
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from playwright.sync_api import expect

from app.cli import migrate
from app.db import session_scope
from app.models import Deployment, Job, ModelVersion, utcnow
from tests.browser.conftest import LiveServer, screenshot, sign_in, signed_in_api, signed_in_page
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, make_settings


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("polish"), search_retries=5,
                             search_backoff_s=10)
    migrate(settings)
    with LiveServer(settings) as live:
        yield live


@pytest.fixture(scope="module")
def api(server):
    """An httpx client signed in as the admin, sending the CSRF header."""
    with signed_in_api(server.url) as client:
        yield client


@pytest.fixture(scope="module")
def page(browser, server):
    """One signed-in page for the module (tests that need a fresh one make their own)."""
    with signed_in_page(browser, server.url) as page:
        yield page


def factory(server):
    return server.server.config.app.state.session_factory


def new_project(api, name: str, labels=("grizzly", "black", "teddy")) -> dict:
    created = api.post("/api/v1/projects", json={"name": name, "labels": list(labels)})
    assert created.status_code == 201, created.text
    return created.json()


def add_job(server, project_id: int, *, kind: str = "training", status: str = "running",
            result: dict | None = None, error: str | None = None) -> int:
    now = utcnow()
    with session_scope(factory(server)) as session:
        job = Job(project_id=project_id, kind=kind, status=status, params={},
                  result=result, error=error, message=status, progress=0.5,
                  started_at=now, heartbeat_at=now,
                  finished_at=None if status in ("queued", "running") else now)
        session.add(job)
        session.flush()
        return job.id


def add_model(server, project_id: int, *, labels=("grizzly", "black", "teddy"),
              job_id: int | None = None) -> int:
    """A model version row (no files: the pages that show it never load it)."""
    with session_scope(factory(server)) as session:
        model = ModelVersion(project_id=project_id, job_id=job_id, backbone="efficientnet_lite0",
                             labels=list(labels), recipe={}, storage_prefix="",
                             metrics={"error_rate": 0.05, "accuracy": 0.95, "valid_count": 20,
                                      "unknown_threshold": 0.5})
        session.add(model)
        session.flush()
        model.storage_prefix = f"models/{project_id}/{model.id}"
        model.created_at = utcnow() - timedelta(minutes=1)
        return model.id


def deploy(server, project_id: int, model_id: int, slug: str, public: bool = True) -> None:
    with session_scope(factory(server)) as session:
        session.add(Deployment(slug=slug, project_id=project_id, model_id=model_id,
                               public=public))


# --- 1. `hidden` hides ------------------------------------------------------------------------


def test_hidden_elements_stay_hidden(page, server, api):
    project = new_project(api, "Hidden things")
    model_id = add_model(server, project["id"])
    deploy(server, project["id"], model_id, "hidden-things")
    page.goto(f"{server.url}/demo/hidden-things")
    expect(page.locator("#drop")).to_be_visible()
    expect(page.locator("#preview")).to_be_hidden()  # no broken image before a photo
    expect(page.locator("#camera-snap")).to_be_hidden()
    expect(page.locator("#toast")).to_be_hidden()
    screenshot(page, "polish-01-demo-before-a-photo")

    for status in ("running", "failed", "cancelled"):
        job_id = add_job(server, project["id"], status=status)
        page.goto(f"{server.url}/jobs/{job_id}")
        expect(page.locator("h1 .status")).to_have_text(status)
        expect(page.locator("#result-link")).to_be_hidden()
        if status == "running":
            expect(page.locator("#cancel")).to_be_visible()
            screenshot(page, "polish-01-job-running")
        else:
            expect(page.locator("#cancel")).to_be_hidden()
    done = add_job(server, project["id"], status="succeeded", result={"model_id": model_id})
    page.goto(f"{server.url}/jobs/{done}")
    expect(page.locator("#result-link")).to_be_visible()


# --- 2. the API docs work offline -------------------------------------------------------------


def offline(context, server) -> list[str]:
    """Refuse every request that leaves the app, as a machine without internet does; the
    list collects what was refused, and the page's CSP complaints."""
    refused = []

    def only_the_app(route):
        if route.request.url.startswith(server.url):
            return route.continue_()
        refused.append(route.request.url)
        return route.abort()

    context.route("**/*", only_the_app)
    return refused


REDOCLY_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


def test_the_api_docs_work_offline_and_the_account_page_links_them(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    refused = offline(context, server)
    # ReDoc's sidebar always asks for Redocly's logo from its CDN: the CSP refuses it and
    # ReDoc drops the image (onError), as intended. Any other refusal is a fault.
    page.on("console", lambda m: refused.append(m.text)
            if "Content Security Policy" in m.text and REDOCLY_LOGO not in m.text else None)
    sign_in(page, f"{server.url}/login")
    page.click("header nav >> text=Account")
    page.click("#api-docs >> text=REST API")
    page.wait_for_url("**/api/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Kodiak", timeout=20_000)
    expect(page.locator(".opblock-summary-path", has_text="/api/v1/predict/{slug}").first
           ).to_be_visible()
    screenshot(page, "polish-02-swagger-offline")
    page.click("text=The same as one long page (ReDoc)")
    page.wait_for_url("**/redoc")
    expect(page.locator("h1", has_text="Kodiak")).to_be_visible(timeout=20_000)
    expect(page.get_by_text("/api/v1/predict/{slug}").first).to_be_attached()
    screenshot(page, "polish-02-redoc-offline")
    context.close()
    assert not refused, refused


# --- 3. "none of these" cannot be misread -----------------------------------------------------


def test_every_snippet_reads_the_answer_and_handles_none_of_these(page, server, api):
    project = new_project(api, "Snippets")
    model_id = add_model(server, project["id"])
    deploy(server, project["id"], model_id, "snippets", public=False)
    page.goto(f"{server.url}/demo/snippets")
    page.click("text=Use it from code")
    expect(page.locator("#curl")).to_contain_text('.answer // "none of these"')
    expect(page.locator("#curl")).to_contain_text("Authorization: Bearer")
    python = page.locator("#python")
    expect(python).to_contain_text('if p["answer"] is None:')
    expect(python).to_contain_text("none of these")
    screenshot(page, "polish-03-demo-snippets")

    page.goto(f"{server.url}/projects/{project['id']}/models")
    page.click("text=API snippet")
    snippets = page.locator('.deployment[data-slug="snippets"] pre')
    expect(snippets.nth(0)).to_contain_text('.answer // "none of these"')
    expect(snippets.nth(1)).to_contain_text('if p["answer"] is None:')
    assert 'r.json()["label"]' not in snippets.nth(1).inner_text()

    document = api.get("/api/v1/openapi.json").json()
    answer = document["components"]["schemas"]["PredictionOut"]["properties"]["answer"]
    assert "null" in answer["description"] and {"type": "null"} in answer["anyOf"]


# --- 4. a search without internet fails at once, and every view of the job agrees -------------


def test_a_search_without_internet_fails_at_once_and_every_view_agrees(page, server, api,
                                                                       monkeypatch):
    from ddgs import DDGS

    from app.services import search
    from app.services.gather_pipeline import run_gathering
    from tests.integration.conftest import free_port

    # The real ddgs client through a proxy that refuses connections: a network that is down.
    proxy = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setattr(search, "ddgs_factory", lambda timeout: DDGS(proxy=proxy, timeout=2))
    project = new_project(api, "Offline search", labels=("grizzly",))
    page.goto(f"{server.url}/projects/{project['id']}")
    expect(page.locator("#jobs")).to_contain_text("No jobs yet")
    card = page.locator('.label-card[data-label="grizzly"]')
    card.locator("button", has_text="Search the web").click()
    row = card.locator(".jobs li[data-job]")
    expect(row).to_have_count(1)
    job_id = int(row.get_attribute("data-job"))
    recent = page.locator(f'#jobs li[data-job="{job_id}"]')
    expect(recent).to_be_visible()  # in "Recent jobs" at once, not "No jobs yet"
    expect(page.locator("#jobs")).not_to_contain_text("No jobs yet")

    app = server.server.config.app
    run_gathering(factory=app.state.session_factory, storage=app.state.storage,
                  settings=app.state.settings, job_id=job_id)  # in well under a second
    message = "Kodiak cannot reach the image search service from this server"
    for view in (row, recent):
        expect(view.locator(".status")).to_have_text("failed")
        expect(view.locator(".message")).to_contain_text(message)
        expect(view).not_to_contain_text("Error")  # no raw exception
    screenshot(page, "polish-04-offline-search")
    page.reload()
    expect(page.locator(f'#jobs li[data-job="{job_id}"] .status')).to_have_text("failed")
    page.goto(f"{server.url}/jobs/{job_id}")
    expect(page.locator("h1 .status")).to_have_text("failed")
    expect(page.locator(".message")).to_contain_text(message)


# --- 5. Back shows the current state; sign-in returns to the deep link ------------------------


def test_back_shows_the_current_state(page, server, api):
    project = new_project(api, "Back button", labels=("grizzly",))
    response = page.goto(f"{server.url}/projects/{project['id']}")
    assert response.headers["cache-control"] == "no-store"
    expect(page.locator(".label-card")).to_have_count(1)
    page.click(".sub >> text=Images")
    expect(page.locator("h1")).to_contain_text("Images")
    added = api.post(f"/api/v1/projects/{project['id']}/labels", json={"name": "panda"})
    assert added.status_code == 201, added.text
    page.go_back()
    expect(page.locator('.label-card[data-label="panda"]')).to_be_visible()
    # A page the browser restores from its back-forward cache reloads itself.
    page.evaluate("window.restored = true")
    with page.expect_navigation():
        page.evaluate("dispatchEvent(new PageTransitionEvent('pageshow', {persisted: true}))")
    assert page.evaluate("window.restored") is None


def test_sign_in_returns_to_the_deep_link_of_this_site_only(browser, server, api):
    project = new_project(api, "Deep link", labels=("grizzly",))
    context = browser.new_context()
    page = context.new_page()
    deep = f"/projects/{project['id']}/images?label=grizzly"
    page.goto(server.url + deep)
    expect(page).to_have_url(re.compile(r"/login\?next="))
    screenshot(page, "polish-05-sign-in-with-next")
    page.fill("#email", ADMIN_EMAIL)
    page.fill("#password", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(server.url + deep)
    expect(page.locator("h1")).to_contain_text("Images: grizzly")
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        sign_in(page, f"{server.url}/login?{urlencode({'next': target})}")
        expect(page).to_have_url(f"{server.url}/projects")
    context.close()


# --- 6. numbering per project: "Training #2", "Model v1" --------------------------------------


def link_model(server, model_id: int, job_id: int) -> None:
    with session_scope(factory(server)) as session:
        session.get(ModelVersion, model_id).job_id = job_id


def test_trainings_and_models_are_numbered_per_project(page, server, api):
    project = new_project(api, "Numbering")
    pid = project["id"]
    search = add_job(server, pid, kind="search", status="failed", error="no images")
    add_job(server, pid, kind="training", status="failed", error="too few images")
    model_id = add_model(server, pid)
    training = add_job(server, pid, kind="training", status="succeeded",
                       result={"model_id": model_id})
    link_model(server, model_id, training)
    assert (training, model_id) != (2, 1)  # ids are shared by every project and kind

    page.goto(f"{server.url}/jobs/{training}")
    expect(page.locator("h1")).to_contain_text("Training #2")
    expect(page.locator("#result-link")).to_have_text("See the results: model v1")
    expect(page.locator('.sub [aria-current="page"]')).to_have_text("Train")
    screenshot(page, "polish-06-training-2")
    page.click("#result-link")
    expect(page.locator("h1")).to_have_text("Model v1")
    expect(page.locator("main")).to_contain_text("Training #2")

    page.goto(f"{server.url}/jobs/{search}")
    expect(page.locator("h1")).to_contain_text("Search #1")
    expect(page.locator('.sub [aria-current="page"]')).to_have_text("Overview")

    page.goto(f"{server.url}/projects/{pid}")
    expect(page.locator("#jobs")).to_contain_text("Training #2")
    expect(page.locator("#jobs")).to_contain_text("Training #1")
    expect(page.locator("#jobs")).to_contain_text("Search #1")
    expect(page.locator("main > div > p.muted").first).to_contain_text("Latest model v1")
    page.goto(f"{server.url}/projects/{pid}/train")
    expect(page.locator("table")).to_contain_text("Training #2")
    expect(page.locator("table")).to_contain_text("model v1")
    page.goto(f"{server.url}/projects/{pid}/models")
    expect(page.locator("#models")).to_contain_text("v1")

    job = api.get(f"/api/v1/jobs/{training}").json()
    assert (job["number"], job["title"]) == (2, "Training #2")
    assert api.get(f"/api/v1/models/{model_id}").json()["version"] == 1


# --- 7. rename and delete projects and labels; examples that look like examples ---------------


def jpeg(colour: tuple[int, int, int]) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(out, "JPEG")
    return out.getvalue()


def upload(api, project_id: int, label: str, colours) -> list[int]:
    files = [("files", (f"{label}-{i}.jpg", jpeg(c), "image/jpeg")) for i, c in enumerate(colours)]
    added = api.post(f"/api/v1/projects/{project_id}/images", data={"label": label},
                     files=files)
    assert added.status_code == 201, added.text
    return [row["image_id"] for row in added.json()["added"]]


def test_projects_and_labels_can_be_renamed_and_deleted(page, server, api):
    page.goto(f"{server.url}/projects")
    for field in ("#name", "#label-0", "#query-0"):
        assert page.locator(field).get_attribute("placeholder").startswith("for example:")
    expect(page.locator("#new-project")).to_contain_text("grey text is only an example")

    project = new_project(api, "Bears to tidy")
    pid = project["id"]
    upload(api, pid, "teddy", [(200, 150, 90), (190, 140, 80)])
    page.goto(f"{server.url}/projects/{pid}")
    teddy = page.locator('.label-card[data-label="teddy"]')
    teddy.locator("summary", has_text="Rename or delete").click()
    teddy.locator("input[name=name]").fill("toy bear")
    teddy.locator("button", has_text="Save").click()
    expect(page.locator(".notice")).to_have_text("renamed “teddy” to “toy bear”")
    toy = page.locator('.label-card[data-label="toy bear"]')
    expect(toy.locator(".count")).to_have_text("2 images")
    expect(page.locator("#q-" + str(project["labels"][2]["id"]))).to_have_value("toy bear")

    black = page.locator('.label-card[data-label="black"]')
    black.locator("summary", has_text="Rename or delete").click()
    expect(black).to_contain_text("It has no images.")
    black.locator("button", has_text="Delete the label").click()
    expect(page.locator(".notice")).to_have_text("deleted the label “black”")
    toy.locator("summary", has_text="Rename or delete").click()
    expect(toy.locator(".delete-label")).to_contain_text(
        "Its 2 images stay in the project without a label")
    screenshot(page, "polish-07-delete-a-label")
    toy.locator("button", has_text="Delete the label").click()
    expect(page.locator(".notice")).to_have_text(
        "deleted the label “toy bear”; its 2 images stay, unlabelled")
    expect(page.locator(".label-card")).to_have_count(1)
    page.goto(f"{server.url}/projects/{pid}/images?status=")
    expect(page.locator(".tile .lbl")).to_have_text(["—", "—"])

    page.goto(f"{server.url}/projects/{pid}")
    page.fill("#project-name", "Grizzlies only")
    page.click("#rename-project button")
    expect(page.locator("h1")).to_have_text("Grizzlies only")
    page.click("#delete-project summary")
    page.fill("#confirm-delete", "Grizzlies")
    page.click("#delete-project button")
    expect(page.locator("main")).to_contain_text("type the project's name exactly")
    page.go_back()
    page.click("#delete-project summary")
    page.fill("#confirm-delete", "Grizzlies only")
    screenshot(page, "polish-07-delete-the-project")
    page.click("#delete-project button")
    expect(page.locator(".notice")).to_have_text("deleted the project “Grizzlies only”")
    expect(page.locator(".projects")).not_to_contain_text("Grizzlies only")

    other = new_project(api, "API renames")
    grizzly, black_id = other["labels"][0]["id"], other["labels"][1]["id"]
    url = f"/api/v1/projects/{other['id']}/labels"
    assert api.patch(f"{url}/{grizzly}", json={"name": "BLACK"}).status_code == 409
    assert api.patch(f"{url}/{grizzly}", json={"query": "ursus arctos"}).json()["query"] == (
        "ursus arctos")
    assert api.delete(f"{url}/{black_id}").json() == {"unlabelled": 0}
    renamed = api.patch(f"/api/v1/projects/{other['id']}", json={"name": "Renamed"})
    assert renamed.json()["name"] == "Renamed"
    assert [label["name"] for label in renamed.json()["labels"]] == ["grizzly", "teddy"]


# --- 8. the review queue remembers "Keep" -----------------------------------------------------


def add_predictions(server, model_id: int, image_ids: list[int], given: str,
                    predicted: str) -> None:
    from app.models import ImagePrediction

    with session_scope(factory(server)) as session:
        for rank, image_id in enumerate(image_ids):
            session.add(ImagePrediction(
                model_id=model_id, image_id=image_id, given_label=given,
                predicted_label=predicted, confidence=0.9 - rank / 10, loss=3.0 - rank,
                probabilities={given: 0.1, predicted: 0.9 - rank / 10}))


def test_kept_images_stay_kept_after_a_reload(page, server, api):
    project = new_project(api, "Review memory", labels=("grizzly", "black"))
    pid = project["id"]
    ids = upload(api, pid, "grizzly", [(120, 80, 40), (110, 70, 30), (100, 60, 20)])
    model_id = add_model(server, pid, labels=("grizzly", "black"))
    add_predictions(server, model_id, ids, given="grizzly", predicted="black")

    page.goto(f"{server.url}/projects/{pid}/review")
    cards = page.locator("#review .review-card")
    expect(cards).to_have_count(3)
    expect(page.locator("#review-note")).to_contain_text("3 images to review")
    worst = int(cards.first.get_attribute("data-id"))
    cards.first.locator("[data-keep]").click()
    expect(page.locator("#toast")).to_contain_text("1 image kept as labelled.")
    expect(cards.first).to_have_class(re.compile("kept"))
    page.reload()
    expect(cards).to_have_count(2)
    expect(page.locator(f'#review [data-id="{worst}"]')).to_have_count(0)
    expect(page.locator("#review-note")).to_contain_text("2 images to review")
    page.click("text=Show the 1 image you already reviewed")
    expect(cards).to_have_count(1)
    expect(cards.first.locator(".badge.reviewed")).to_contain_text("reviewed")
    screenshot(page, "polish-08-reviewed")
    rows = api.get(f"/api/v1/projects/{pid}/images").json()["images"]
    reviewed = {row["id"]: row["reviewed_at"] for row in rows}
    assert reviewed[worst] is not None and sum(v is not None for v in reviewed.values()) == 1
    queue = api.get(f"/api/v1/projects/{pid}/review").json()
    assert worst not in [item["image_id"] for item in queue["items"]]

    page.goto(f"{server.url}/projects/{pid}/review")  # a fix marks the image reviewed too
    cards.first.locator('[data-bulk-label="black"]').click()
    expect(page.locator("#toast")).to_contain_text("relabelled as black")
    page.keyboard.press("z")  # undo: relabelled back, and back in the queue
    expect(page.locator("#toast")).to_contain_text("Undone")
    page.reload()
    expect(cards).to_have_count(2)


# --- 9. the small things ----------------------------------------------------------------------


def test_plurals_deploy_from_a_model_demo_title_and_favicon(page, server, api):
    project = new_project(api, "Bears & Friends", labels=("grizzly", "black"))
    pid = project["id"]
    upload(api, pid, "grizzly", [(90, 60, 30)])
    page.goto(f"{server.url}/projects/{pid}")
    expect(page.locator('.label-card[data-label="grizzly"] .count')).to_have_text("1 image")
    expect(page.locator('.label-card[data-label="black"] .count')).to_have_text("0 images")
    expect(page.locator("#project > p.muted").first).to_contain_text(
        "1 active image in 2 labels.")
    icon = page.locator('link[rel="icon"]').get_attribute("href")
    answer = api.get(icon)
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/svg+xml"

    add_model(server, pid, labels=("grizzly", "black"))
    second = add_model(server, pid, labels=("grizzly", "black"))
    page.goto(f"{server.url}/models/{second}")
    page.click("text=Deploy this version…")
    chosen = page.locator("#models tr.chosen")
    expect(chosen).to_have_count(1)
    expect(chosen).to_contain_text("v2")
    slug = page.locator(f"#slug-{second}")
    expect(slug).to_have_value("bears-friends")
    expect(slug).to_be_focused()
    help_text = page.locator("#deploy-help")
    expect(help_text).to_contain_text("/demo/<slug>")
    expect(help_text).to_contain_text("anyone with the address can use both, without a key")
    screenshot(page, "polish-09-deploy-chosen")
    chosen.locator('input[name="public"]').check()
    chosen.locator("button", has_text="Deploy").click()
    expect(page.locator(".notice")).to_have_text("deployed as bears-friends")
    page.click('.deployment a[href="/demo/bears-friends"]')
    expect(page.locator("h1")).to_have_text("Bears & Friends")
    expect(page).to_have_title("Bears & Friends · Kodiak demo")
    screenshot(page, "polish-09-demo-title")
