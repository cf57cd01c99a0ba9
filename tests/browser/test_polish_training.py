"""Training in plain words and trying a model before deploying it, in Chromium (issue 13,
items 9 and 10, and the demo's "None of these" for a visitor).

One app (uvicorn in a thread, no workers): a training job's progress is written to its row
step by step, as the worker writes it, while the page follows its live events; the model
tried is the small bear model the serve and demo tests share, trained once per process.
"""

import io
import re
import threading
from datetime import timedelta

import httpx
import pytest
from playwright.sync_api import expect

from app.cli import migrate
from app.db import session_scope
from app.models import Deployment, Job, utcnow
from app.web.pages.training import RECIPE_FORM
from tests.browser.conftest import LiveServer, screenshot, signed_in_api, signed_in_page
from tests.browser.test_polish import new_project
from tests.conftest import make_settings
from tests.serve.conftest import add_model_version, train_bear_model

MAX_PIXELS = 4_000_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("polish-training"), max_predict_mb=1,
                             max_image_pixels=MAX_PIXELS)
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
    with signed_in_page(browser, server.url) as page:
        yield page


@pytest.fixture(scope="module")
def bear_model(data_dir, tmp_path_factory):
    return train_bear_model(data_dir, tmp_path_factory.mktemp("bear-model"))


def factory(server):
    return server.server.config.app.state.session_factory


def bear_version(server, api, bear_model, name: str) -> int:
    """The small bear model as a new version of a new project (not deployed)."""
    model_dir, meta, _, _ = bear_model
    project = new_project(api, name, labels=meta["labels"])
    return add_model_version(server.server.config.app, project_id=project["id"],
                             model_dir=model_dir, meta=meta)


# --- 9. the training form and the job page in plain words -------------------------------------


def test_the_training_form_explains_every_recipe_term(page, server, api):
    project = new_project(api, "Recipe words")
    page.goto(f"{server.url}/projects/{project['id']}/train")
    intro = page.locator("main .card").first
    expect(intro).to_contain_text("adds a new last layer, the head, for your labels")
    expect(intro).to_contain_text("validation photos, is held back")
    page.click("text=More settings")
    for name in RECIPE_FORM:
        field = page.locator(f"#{name}")
        help_id = field.get_attribute("aria-describedby")
        assert help_id, f"{name} has no explanation"
        assert len(page.locator(f"#{help_id}").inner_text()) > 40, name
    expect(page.locator("#head_epochs-help")).to_contain_text(
        "only the new last layer (the “head”) learns")
    expect(page.locator("#head_epochs-help")).to_contain_text("one point on the training charts")
    expect(page.locator("#epochs-help")).to_contain_text("fine-tune every layer")
    screenshot(page, "polish-training-09-form")


def training_row(server, project_id: int, params: dict) -> int:
    now = utcnow()
    with session_scope(factory(server)) as session:
        job = Job(project_id=project_id, kind="training", status="running", params=params,
                  progress=0.0, message="training on 592 images of 3 labels",
                  started_at=now - timedelta(seconds=20), heartbeat_at=now, detail={})
        session.add(job)
        session.flush()
        return job.id


def report(server, job_id: int, progress: float, message: str, **detail) -> None:
    """What the worker's JobReporter writes: progress, message, live details, a heartbeat."""
    with session_scope(factory(server)) as session:
        job = session.get(Job, job_id)
        job.progress, job.message, job.heartbeat_at = progress, message, utcnow()
        job.detail = {**(job.detail or {}), **detail}


def bar_value(page) -> float | None:
    return page.locator("#job progress").evaluate(
        "b => b.hasAttribute('value') ? b.value : null")


def test_one_bar_for_the_whole_training_in_plain_words_with_an_estimate(page, server, api,
                                                                         bear_model):
    project = new_project(api, "One bar")
    job_id = training_row(server, project["id"], {"head_epochs": 8, "epochs": 1})
    report(server, job_id, 0.02, "decoding images 64/592", phase="decode")
    page.goto(f"{server.url}/jobs/{job_id}")
    phase, eta, message = page.locator("#phase"), page.locator("#eta"), page.locator(".message")
    expect(phase).to_have_text("Looking at your photos…")
    expect(message).to_have_text("Photo 64 of 592")
    expect(eta).to_contain_text(re.compile(r"About \d+ (s|min) left · 2\d s so far"))
    seen = [bar_value(page)]

    def step(progress: float, text: str, words: str, **detail):
        report(server, job_id, progress, text, **detail)
        expect(phase).to_have_text(words)
        page.wait_for_function("p => { const b = document.querySelector('#job progress');"
                               " return !b.hasAttribute('value') || b.value >= p; }",
                               arg=progress)
        seen.append(bar_value(page))

    step(0.4, "frozen features 608/1416", "Looking at your photos…", phase="frozen")
    expect(message).to_have_text("608 of 1416 views of your photos (each photo and its "
                                 "altered copies)")
    expect(eta).to_contain_text(re.compile(r"About \d+ (s|min) left"))  # from the rate so far

    head_rows = bear_model[2].metrics["history"][:8]
    assert [r["phase"] for r in head_rows] == ["frozen"] * 8
    step(0.5, "head epoch 3/8, loss 0.512, error 0.017", "Learning your labels…",
         phase="frozen", history=head_rows[:3])
    expect(message).to_contain_text("Head epoch 3 of 8 · error rate so far ")
    expect(message).to_contain_text("%")
    report(server, job_id, 0.6, "head epoch 8/8", history=head_rows)
    rows = page.locator("#epochs tbody tr")
    expect(rows).to_have_count(8)
    first = rows.first.locator("td")
    expect(first.nth(0)).to_have_text("Learning your labels")
    expect(first.nth(4)).to_have_text(re.compile(r"^\d+\.\d%$"))  # error rate: a percentage
    expect(first.nth(5)).to_have_text(re.compile(r"^(\d+(\.\d)?|under 0\.1) s$"))  # a duration
    expect(page.locator("#loss-chart")).to_contain_text("head epoch (1–8)")
    expect(page.locator("#error-chart")).to_contain_text("%")
    expect(page.locator("#epochs-help")).to_contain_text("head epochs, one point each")
    page.click("#recipe summary")
    expect(page.locator("#recipe")).to_contain_text("Head epochs (body frozen)8")
    expect(page.locator("#recipe")).to_contain_text("Unfrozen epochs1")

    step(0.7, "out-of-sample predictions: fold 2/5", "Checking on photos it has not seen…",
         phase="folds")
    step(0.72, "warming the cache", "Warming up…", phase="warming_up")  # a phase not known yet
    expect(message).to_have_text("warming the cache")
    unfrozen = {**head_rows[-1], "phase": "unfrozen", "epoch": 1, "seconds": 65.4}
    step(0.9, "unfrozen epoch 1/1 done, error 0.008", "Fine-tuning the whole network…",
         phase="unfrozen", history=[*head_rows, unfrozen])
    expect(page.locator("#loss-chart")).to_contain_text(
        "head epoch (1–8), then whole-network epoch (1–1)")
    expect(rows.last.locator("td").nth(5)).to_have_text("1 min 5 s")
    screenshot(page, "polish-training-09-fine-tuning")

    # A phase whose progress starts again from zero does not send the bar back.
    report(server, job_id, 0.1, "embedding the photos 64/592", phase="bank")
    expect(phase).to_have_text("Remembering your photos for “None of these”…")
    seen.append(bar_value(page))
    assert seen[-1] >= 0.9

    report(server, job_id, 0.99, "exporting the model (safetensors, ONNX)", phase="export")
    expect(phase).to_have_text("Packaging the model for serving…")
    page.wait_for_function("() => !document.querySelector('#job progress')"
                           ".hasAttribute('value')")
    expect(eta).to_contain_text("Packaging for")
    expect(message).to_have_text("Saving the model in the format the server runs (ONNX) and "
                                 "storing it")
    before = eta.inner_text()
    page.wait_for_timeout(2100)
    assert eta.inner_text() != before, "the packaging clock does not move"
    screenshot(page, "polish-training-09-packaging")
    values = [v for v in seen if v is not None]
    assert values == sorted(values), f"the bar went back: {values}"

    with session_scope(factory(server)) as session:
        job = session.get(Job, job_id)
        job.status, job.progress, job.finished_at = "succeeded", 1.0, utcnow()
        job.message = "done: error rate 0.8% in 85 s"
    expect(phase).to_have_text("Finished")
    expect(eta).to_contain_text(re.compile(r"Took \d+ s"))
    assert bar_value(page) == 1
    screenshot(page, "polish-training-09-finished")


WATCH = """() => {
    window.seen = [];
    const job = document.getElementById("job");
    const note = () => {
        const bar = job.querySelector("progress");
        window.seen.push([document.getElementById("phase").textContent,
                          bar.hasAttribute("value") ? bar.value : null,
                          job.querySelector(".message").textContent]);
    };
    new MutationObserver(note).observe(job, { subtree: true, childList: true,
                                              characterData: true, attributes: true });
}"""


def test_a_real_training_reads_in_plain_words_from_start_to_finish(page, server, api,
                                                                   data_dir):
    from app.services.training import run_training

    labels = ("black", "grizzly", "teddy")
    project = new_project(api, "A real training", labels=labels)
    for label in labels:
        photos = sorted((data_dir / "bears" / label).glob("*.jpg"))[::10][:8]
        added = api.post(f"/api/v1/projects/{project['id']}/images", data={"label": label},
                         files=[("files", (p.name, p.read_bytes(), "image/jpeg"))
                                for p in photos])
        assert added.status_code == 201, added.text
    page.goto(f"{server.url}/projects/{project['id']}/train")
    expect(page.locator("#train-estimate")).to_contain_text(
        re.compile(r"With the default settings it takes about \d+ (s|min) here"))
    started = api.post(f"/api/v1/projects/{project['id']}/trainings",
                       json={"augment_views": 1, "batch_size": 16, "image_size": 64})
    assert started.status_code == 202, started.text
    job_id = started.json()["id"]
    page.goto(f"{server.url}/jobs/{job_id}")
    page.evaluate(WATCH)
    app = server.server.config.app
    worker = threading.Thread(target=run_training, kwargs={
        "factory": app.state.session_factory, "storage": app.state.storage,
        "settings": app.state.settings, "job_id": job_id})
    worker.start()
    worker.join(timeout=600)
    expect(page.locator("h1 .status")).to_have_text("succeeded", timeout=30_000)
    expect(page.locator("#phase")).to_have_text("Finished")
    expect(page.locator("#result-link")).to_be_visible()
    screenshot(page, "polish-training-09-real-training")
    seen = page.evaluate("window.seen")
    phases = [phase for phase, _, _ in seen]
    # The bar moved through named steps (the head's epochs on 24 small photos can take less
    # than one update of the page, so which steps it caught varies); the table names them all.
    assert len(set(phases) - {"Queued", "Finished"}) >= 2, phases
    expect(page.locator("#epochs tbody td:nth-child(1)").first).to_have_text(
        "Learning your labels")
    for phase, _, message in seen:  # no raw counts, no jargon, whatever the phase
        assert not re.search(r"\d+/\d+|frozen|unfrozen|fold", phase + " " + message), (
            phase, message)
    values = [value for _, value, _ in seen if value is not None]
    assert values == sorted(values), f"the bar went back: {values}"
    rows = page.locator("#epochs tbody td:nth-child(5)")
    expect(rows).to_have_count(8)  # the default head epochs, one row and one point each
    for cell in rows.all_inner_texts():
        assert re.fullmatch(r"\d+\.\d%", cell), cell


def test_a_search_job_page_highlights_the_overview_not_train(page, server, api):
    project = new_project(api, "Search tab")
    with session_scope(factory(server)) as session:
        job = Job(project_id=project["id"], kind="search", status="succeeded", params={},
                  progress=1.0, message="done", finished_at=utcnow())
        session.add(job)
        session.flush()
        job_id = job.id
    page.goto(f"{server.url}/jobs/{job_id}")
    expect(page.locator('.sub [aria-current="page"]')).to_have_text("Overview")
    expect(page.locator("#phase")).to_have_count(0)  # no training words on a search


# --- 10. try the model before deploying it ----------------------------------------------------


def test_try_a_model_on_its_page_before_deploying_it(page, server, api, bear_model,
                                                     data_dir):
    model_id = bear_version(server, api, bear_model, "Try before deploying")
    page.goto(f"{server.url}/models/{model_id}")
    panel = page.locator("#try")
    expect(panel).to_contain_text("Try it before you deploy it")
    answer, bars = page.locator("#try-answer"), page.locator("#try-bars li")
    grizzly = sorted((data_dir / "bears" / "grizzly").glob("*.jpg"))[40]
    page.set_input_files("#try-file", str(grizzly))
    expect(answer).to_have_text(re.compile(r"^grizzly \(\d+\.\d% sure\)$"), timeout=20_000)
    expect(bars).to_have_count(3)
    expect(bars.first).to_have_attribute("data-label", "grizzly")
    expect(page.locator("#try-preview")).to_be_visible()
    screenshot(page, "polish-training-10-try-grizzly")

    page.set_input_files("#try-file", str(data_dir / "ood" / "cat.jpg"))
    expect(answer).to_contain_text("None of these.", timeout=20_000)
    expect(answer).to_contain_text(
        "This doesn't look like any of the photos this model learned from (the closest is ")
    numbers = page.locator("#try-numbers")
    expect(numbers.locator("p")).to_be_hidden()  # the numbers wait behind a click
    numbers.locator("summary").click()
    expect(numbers).to_contain_text("familiarity")
    screenshot(page, "polish-training-10-try-none-of-these")

    page.set_input_files("#try-file", files=[{"name": "notes.txt", "mimeType": "text/plain",
                                              "buffer": b"not a photo"}])
    expect(answer).to_have_text("“notes.txt” is not a photo: choose a JPEG, PNG or WebP image.")
    page.set_input_files("#try-file", files=[{"name": "broken.jpg", "mimeType": "image/jpeg",
                                              "buffer": b"\xff\xd8 not really a jpeg"}])
    expect(answer).to_contain_text("cannot read the image")
    expect(answer).to_have_class("error")
    screenshot(page, "polish-training-10-try-broken")
    with session_scope(factory(server)) as session:
        assert session.query(Deployment).filter_by(model_id=model_id).count() == 0


def flat_png(side: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (side, side), (90, 120, 150)).save(out, "PNG")
    return out.getvalue()


def test_trying_a_model_keeps_the_limits_and_the_owner_of_predictions(server, api,
                                                                      bear_model, data_dir):
    model_id = bear_version(server, api, bear_model, "Try limits")
    url = f"/api/v1/models/{model_id}/predict"
    photo = sorted((data_dir / "bears" / "black").glob("*.jpg"))[40].read_bytes()
    answer = api.post(url, files={"file": ("black.jpg", photo, "image/jpeg")})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["answer"] == "black" and body["model_id"] == model_id
    assert body["threshold"] == bear_model[1]["metrics"]["unknown_threshold"]
    import base64

    same = api.post(url, json={"image_base64": base64.b64encode(photo).decode()})
    assert same.json()["probabilities"] == body["probabilities"]

    too_big = api.post(url, files={"file": ("big.jpg", b"\xff" * (1024 * 1024 + 1),
                                            "image/jpeg")})
    assert too_big.status_code == 413 and "detail" in too_big.json()
    side = int(MAX_PIXELS ** 0.5) + 100
    huge = api.post(url, files={"file": ("flat.png", flat_png(side), "image/png")})
    assert huge.status_code == 422 and "cannot read the image" in huge.json()["detail"]
    no_csrf = httpx.post(server.url + url, cookies=api.cookies,
                         files={"file": ("black.jpg", photo, "image/jpeg")})
    assert no_csrf.status_code == 403
    anonymous = httpx.post(server.url + url, files={"file": ("black.jpg", photo, "image/jpeg")})
    assert anonymous.status_code == 401
    assert api.post("/api/v1/models/999999/predict",
                    files={"file": ("black.jpg", photo, "image/jpeg")}).status_code == 404
    document = api.get("/api/v1/openapi.json").json()
    operation = document["paths"]["/api/v1/models/{model_id}/predict"]["post"]
    assert operation["x-body-limit"] == "predict"


# --- the demo's "None of these", for a visitor ------------------------------------------------


def test_the_demo_says_none_of_these_in_plain_words(page, server, api, bear_model, data_dir):
    model_id = bear_version(server, api, bear_model, "Plain demo")
    created = api.post(f"/api/v1/models/{model_id}/deployments",
                       json={"slug": "plain-demo", "public": True})
    assert created.status_code == 201, created.text
    page.goto(f"{server.url}/demo/plain-demo")
    page.set_input_files("#file", str(data_dir / "ood" / "cat.jpg"))
    answer, why = page.locator("#answer"), page.locator("#answer-why")
    expect(answer).to_have_text("None of these", timeout=20_000)
    expect(why.locator(".plain")).to_have_text(re.compile(
        r"^This doesn't look like any of the photos this model learned from\. "
        r"The closest label is \w+\.$"))
    expect(why.locator(".numbers")).to_be_hidden()  # the numbers behind a click
    screenshot(page, "polish-training-demo-none-of-these")
    why.locator("summary").click()
    expect(why.locator(".numbers")).to_contain_text("familiarity")
    expect(why.locator(".numbers")).to_contain_text("threshold")

    grizzly = sorted((data_dir / "bears" / "grizzly").glob("*.jpg"))[40]
    page.set_input_files("#file", str(grizzly))
    expect(answer).to_contain_text("grizzly", timeout=20_000)
    expect(why).to_be_hidden()
