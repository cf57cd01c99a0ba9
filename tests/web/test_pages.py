"""The HTML pages: sign-in, projects, grid, review, training, results, deployments, errors."""

import re
from urllib.parse import urlencode

import pytest
from sqlalchemy import select

from app.models import ImagePrediction, Job, ModelVersion
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD


def sign_in(client) -> str:
    answer = client.post("/login", data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
                         follow_redirects=False)
    assert answer.status_code == 303
    page = client.get("/projects")
    return re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)


@pytest.fixture
def csrf(client) -> str:
    return sign_in(client)


@pytest.fixture
def bears(client, csrf, data_dir) -> int:
    answer = client.post("/projects", data={
        "name": "Bears", "label": ["grizzly", "black", ""], "query": ["grizzly bear", "", ""],
        "csrf_token": csrf}, follow_redirects=False)
    assert answer.status_code == 303
    project_id = int(answer.headers["location"].rsplit("/", 1)[1])
    for label in ("grizzly", "black"):
        paths = sorted((data_dir / "bears" / label).glob("*.jpg"))[:4]
        added = client.post(f"/api/v1/projects/{project_id}/images", data={"label": label},
                            headers={"X-CSRF-Token": csrf},
                            files=[("files", (p.name, p.read_bytes())) for p in paths])
        assert added.status_code == 201, added.text
    return project_id


def test_pages_need_sign_in_and_come_back_after_it(client):
    for path in ("/projects", "/projects/1", "/projects/1/images?label=a%20b", "/models/1",
                 "/jobs/1"):
        answer = client.get(path, follow_redirects=False)
        assert answer.status_code == 303, path
        assert answer.headers["location"] == "/login?" + urlencode({"next": path}), path
    signed_in = client.post("/login", follow_redirects=False, data={
        "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "next": "/projects?x=1"})
    assert signed_in.headers["location"] == "/projects?x=1"
    assert 'name="next" value="/account"' in client.get("/login?next=/account").text


@pytest.mark.parametrize("target", [
    "//evil.example/x", "https://evil.example/", "/\\evil.example", "\\\\evil.example",
    "javascript:alert(1)", "/\t/evil.example", "evil.example"])
def test_sign_in_never_sends_anyone_to_another_site(client, target):
    assert 'name="next"' not in client.get("/login", params={"next": target}).text
    signed_in = client.post("/login", follow_redirects=False, data={
        "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "next": target})
    assert signed_in.headers["location"] == "/projects"


def test_wrong_password_shows_the_form_again(client):
    answer = client.post("/login", data={"email": ADMIN_EMAIL, "password": "nope"})
    assert answer.status_code == 401
    assert 'role="alert"' in answer.text and "<form" in answer.text


def test_new_project_with_labels_and_queries(client, bears):
    page = client.get(f"/projects/{bears}")
    assert page.status_code == 200
    assert 'value="grizzly bear"' in page.text  # the query, editable beside "Search the web"
    assert 'value="black"' in page.text  # a blank query defaults to the label's name
    assert page.text.count('class="label-card"') == 2
    assert "4 images" in page.text
    assert page.text.count("/thumb?size=96") == 8  # the sample strips


def test_grid_lists_images_with_thumbnails_and_filters(client, bears):
    page = client.get(f"/projects/{bears}/images?label=grizzly")
    assert page.status_code == 200
    assert page.text.count('class="tile') == 4
    assert 'data-bulk-label="black"' in page.text and "<kbd>X</kbd>" in page.text
    thumb = re.search(r'src="(/api/v1/images/\d+/thumb\?size=\d+)"', page.text).group(1)
    image = client.get(thumb)
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    first = client.get(f"/projects/{bears}/images?per=12&page=1")
    assert first.text.count('class="tile') == 8
    beyond = client.get(f"/projects/{bears}/images?per=12&page=2")
    assert beyond.status_code == 200 and beyond.text.count('class="tile') == 0


def test_labels_from_the_web_are_escaped(client, csrf):
    answer = client.post("/projects", data={"name": "<script>alert(1)</script>",
                                            "label": ["<img src=x onerror=alert(1)>"],
                                            "query": [""], "csrf_token": csrf})
    assert answer.status_code == 200
    assert "<script>alert(1)</script>" not in answer.text
    assert "&lt;script&gt;" in answer.text
    assert "<img src=x onerror" not in answer.text


def test_form_errors_are_pages_not_json(client, csrf, bears):
    duplicate = client.post(f"/projects/{bears}/labels",
                            data={"name": "grizzly", "csrf_token": csrf})
    assert duplicate.status_code == 400
    assert duplicate.headers["content-type"].startswith("text/html")
    assert "exists already" in duplicate.text
    expired = client.post(f"/projects/{bears}/labels", data={"name": "teddy", "csrf_token": "x"})
    assert expired.status_code == 400 and "reload the page" in expired.text
    missing = client.get("/projects/999")
    assert missing.status_code == 404 and "<h1>Not found</h1>" in missing.text
    not_enough = client.post(f"/projects/{bears}/train", data={"csrf_token": csrf,
                                                              "epochs": "lots"})
    assert not_enough.status_code == 400 and "epochs must be a number" in not_enough.text
    huge = client.post(f"/projects/{bears}/train", data={"csrf_token": csrf, "epochs": "1e999"})
    assert huge.status_code == 400 and "epochs must be a number" in huge.text
    out_of_range = client.post(f"/projects/{bears}/train",
                               data={"csrf_token": csrf, "lr": "nan", "epochs": "99"})
    assert out_of_range.status_code == 400 and "invalid training recipe" in out_of_range.text


def test_train_page_defaults_to_head_only(client, bears):
    page = client.get(f"/projects/{bears}/train")
    assert re.search(r'id="epochs"[^>]*value="0"', page.text)
    assert "fastest" in page.text


def test_training_form_starts_a_job_and_its_page_shows_history(client, settings, csrf, bears):
    answer = client.post(f"/projects/{bears}/train", data={"csrf_token": csrf, "epochs": "0",
                                                           "batch_size": "16"},
                         follow_redirects=False)
    assert answer.status_code == 303
    job_url = answer.headers["location"]
    from app.db import make_engine, make_session_factory

    factory = make_session_factory(make_engine(settings.resolved_database_url()))
    with factory() as session:
        job = session.scalar(select(Job))
        assert job.params == {"epochs": 0, "batch_size": 16}
        job.detail = {"history": [{"phase": "frozen", "epoch": 1, "train_loss": 0.5,
                                   "valid_loss": 0.4, "error_rate": 0.1, "seconds": 2.0}]}
        session.commit()
    page = client.get(job_url)
    assert page.status_code == 200
    assert 'id="loss-chart"' in page.text and '"train_loss": 0.5' in page.text
    assert 'id="cancel"' in page.text


def make_model(settings, project_id: int, image_ids: list[int]) -> int:
    from app.db import make_engine, make_session_factory

    factory = make_session_factory(make_engine(settings.resolved_database_url()))
    with factory() as session:
        model = ModelVersion(
            project_id=project_id, backbone="efficientnet_lite0", labels=["black", "grizzly"],
            storage_prefix=f"models/{project_id}/x", recipe={"epochs": 0},
            metrics={"error_rate": 0.25, "accuracy": 0.75, "valid_count": 4,
                     "confusion_matrix": [[2, 0], [1, 1]],
                     "per_class": {"black": {"precision": 0.67, "recall": 1.0, "support": 2},
                                   "grizzly": {"precision": 1.0, "recall": 0.5, "support": 2}},
                     "top_losses": [{"image_id": image_ids[0], "actual": "grizzly",
                                     "predicted": "black", "confidence": 0.9, "loss": 2.3}]})
        session.add(model)
        session.flush()
        for rank, image_id in enumerate(image_ids):
            session.add(ImagePrediction(
                model_id=model.id, image_id=image_id, given_label="grizzly",
                predicted_label="black", confidence=0.9 - rank * 0.1, loss=3.0 - rank,
                probabilities={"black": 0.9, "grizzly": 0.1}, in_validation=True))
        session.commit()
        return model.id


def grizzly_ids(client, csrf, project_id):
    listed = client.get(f"/api/v1/projects/{project_id}/images?label=grizzly")
    return [image["id"] for image in listed.json()["images"]]


def test_results_page_shows_matrix_per_class_and_top_losses(client, settings, csrf, bears):
    ids = grizzly_ids(client, csrf, bears)
    model_id = make_model(settings, bears, ids[:2])
    page = client.get(f"/models/{model_id}")
    assert page.status_code == 200
    assert 'id="confusion"' in page.text and "--share: 0.500" in page.text
    assert "25.0%" in page.text and "Retrain" in page.text
    assert f'data-id="{ids[0]}"' in page.text and "Relabel as black" in page.text
    other = make_model(settings, bears, ids[2:3])
    compared = client.get(f"/models/{model_id}?compare={other}")
    assert 'id="comparison"' in compared.text


def test_review_ranks_by_out_of_sample_loss(client, settings, csrf, bears):
    ids = grizzly_ids(client, csrf, bears)
    make_model(settings, bears, [ids[2], ids[0]])
    page = client.get(f"/projects/{bears}/review")
    first, second = (int(m) for m in re.findall(r'class="review-card" data-id="(\d+)"',
                                                page.text))
    assert (first, second) == (ids[2], ids[0])
    assert "Relabel as black" in page.text and "90.0%" in page.text


def test_models_page_deploys_and_rolls_back(client, settings, csrf, bears):
    ids = grizzly_ids(client, csrf, bears)
    first = make_model(settings, bears, ids[:1])
    second = make_model(settings, bears, ids[:1])
    deployed = client.post(f"/projects/{bears}/deploy", data={
        "csrf_token": csrf, "model_id": second, "slug": "my-bears", "public": "true"})
    assert deployed.status_code == 200 and "deployed as my-bears" in deployed.text
    assert "/demo/my-bears" in deployed.text and "curl" in deployed.text
    taken = client.post(f"/projects/{bears}/deploy", data={
        "csrf_token": csrf, "model_id": first, "slug": "my-bears"})
    assert taken.status_code == 400 and "taken" in taken.text
    rolled = client.post("/deployments/my-bears", data={
        "csrf_token": csrf, "model_id": first, "public": "false"})
    assert "my-bears now serves model v1 (private)" in rolled.text  # the project's first
    tidied = client.post(f"/projects/{bears}/deploy", data={
        "csrf_token": csrf, "model_id": first, "slug": "  Big-Bears "})
    assert "deployed as big-bears" in tidied.text


def test_the_slug_rule_is_one_rule_for_form_page_and_api(client, settings, csrf, bears):
    from app.schemas import DeploymentIn
    from app.services.deployments import SLUG_PATTERN, SLUG_RULE

    model_id = make_model(settings, bears, grizzly_ids(client, csrf, bears)[:1])
    page = client.get(f"/projects/{bears}/models")
    assert f'pattern="{SLUG_PATTERN}"' in page.text and f'title="{SLUG_RULE}"' in page.text
    assert DeploymentIn.model_json_schema()["properties"]["slug"]["pattern"] == \
        f"^{SLUG_PATTERN}$"
    for slug, ok in (("ab", True), ("0-bears-", True), ("a" * 63, True), ("a", False),
                     ("a" * 64, False), ("-bears", False), ("bears!", False),
                     ("my_bears", False)):
        form = client.post(f"/projects/{bears}/deploy", data={
            "csrf_token": csrf, "model_id": model_id, "slug": slug})
        api = client.post(f"/api/v1/models/{model_id}/deployments", json={"slug": slug},
                          headers={"X-CSRF-Token": csrf})
        if ok:
            assert form.status_code == 200 and f"deployed as {slug}" in form.text, slug
            assert api.status_code == 409, slug  # taken by the form just before
        else:
            assert form.status_code == 400 and SLUG_RULE in form.text, slug
            assert api.status_code == 422, slug


def test_duplicates_and_failed_pages(client, settings, csrf, bears):
    from app.db import make_engine, make_session_factory
    from app.models import Image, SearchResult

    ids = grizzly_ids(client, csrf, bears)
    factory = make_session_factory(make_engine(settings.resolved_database_url()))
    with factory() as session:
        for image_id in ids[:2]:
            session.get(Image, image_id).duplicate_group = "g1"
        job = Job(project_id=bears, kind="search", params={})
        session.add(job)
        session.flush()
        session.add(SearchResult(job_id=job.id, project_id=bears, position=0,
                                 image_url="javascript:alert(1)", provider="ddgs",
                                 query="grizzly", status="rejected",
                                 reason="not an image (text/html)"))
        session.commit()
    dups = client.get(f"/projects/{bears}/duplicates")
    assert dups.text.count('class="tile') == 2 and "2 images" in dups.text
    failed = client.get(f"/projects/{bears}/failed")
    assert "not an image (text/html)" in failed.text
    assert 'href="javascript:' not in failed.text


def test_someone_elses_project_and_models_are_not_found(client, settings, other_user, csrf,
                                                       bears):
    model_id = make_model(settings, bears, grizzly_ids(client, csrf, bears)[:1])
    client.cookies.clear()
    signed_in = client.post("/login", data={"email": "other@example.com",
                                            "password": "other-password"})
    assert signed_in.status_code == 200 and "New project" in signed_in.text
    for path in (f"/projects/{bears}", f"/projects/{bears}/images", f"/projects/{bears}/train",
                 f"/projects/{bears}/models", f"/models/{model_id}"):
        answer = client.get(path)
        assert answer.status_code == 404 and "<h1>Not found</h1>" in answer.text, path
    token = re.search(r'name="csrf-token" content="([^"]+)"', signed_in.text).group(1)
    label = client.post(f"/projects/{bears}/labels", data={"name": "x", "csrf_token": token})
    assert label.status_code == 404
    deploy = client.post(f"/projects/{bears}/deploy", data={
        "csrf_token": token, "model_id": model_id, "slug": "stolen"})
    assert deploy.status_code == 404


def test_every_form_checks_its_csrf_token(client, settings, csrf, bears):
    """Each POST page but sign-in refuses a wrong token (a new form must use CsrfFormDep)."""
    from app.web import pages

    model_id = make_model(settings, bears, grizzly_ids(client, csrf, bears)[:1])
    deployed = client.post(f"/projects/{bears}/deploy", data={
        "csrf_token": csrf, "model_id": model_id, "slug": "csrf-bears"})
    assert deployed.status_code == 200
    forms = {"/logout": "/logout", "/projects": "/projects",
             "/projects/{project_id}/labels": f"/projects/{bears}/labels",
             "/projects/{project_id}/upload": f"/projects/{bears}/upload",
             "/projects/{project_id}/import": f"/projects/{bears}/import",
             "/projects/{project_id}/uploads/dismiss": f"/projects/{bears}/uploads/dismiss",
             "/projects/{project_id}/train": f"/projects/{bears}/train",
             "/models/{model_id}/retrain": f"/models/{model_id}/retrain",
             "/projects/{project_id}/deploy": f"/projects/{bears}/deploy",
             "/deployments/{slug}": "/deployments/csrf-bears",
             "/projects/{project_id}/rename": f"/projects/{bears}/rename",
             "/projects/{project_id}/delete": f"/projects/{bears}/delete",
             "/projects/{project_id}/labels/{label_id}": f"/projects/{bears}/labels/1",
             "/projects/{project_id}/labels/{label_id}/delete":
                 f"/projects/{bears}/labels/1/delete"}
    posted = {route.path for module in (pages.auth, pages.projects, pages.images,
                                        pages.training, pages.models, pages.demo)
              for route in module.router.routes if "POST" in route.methods}
    assert posted - {"/login"} == set(forms)
    for url in forms.values():
        answer = client.post(url, data={"csrf_token": "x", "name": "teddy", "slug": "x-bears",
                                        "model_id": model_id})
        assert answer.status_code == 400 and "reload the page" in answer.text, url
    assert client.get("/projects").status_code == 200  # still signed in


def test_image_page_shows_the_photo_its_provenance_licence_and_label_history(
        client, settings, csrf, bears):
    from app.db import make_engine, make_session_factory
    from app.models import Image

    image_id = grizzly_ids(client, csrf, bears)[0]
    factory = make_session_factory(make_engine(settings.resolved_database_url()))
    with factory() as session:
        image = session.get(Image, image_id)
        image.source, image.provider, image.query = "search", "duckduckgo", "grizzly bear"
        image.page_url, image.image_url = "javascript:alert(1)", "https://img.example/g.jpg"
        image.licence = "public domain (search filter: Public)"
        session.commit()
    relabel = client.patch(f"/api/v1/images/{image_id}", json={"label": "black"},
                           headers={"X-CSRF-Token": csrf})
    assert relabel.status_code == 200, relabel.text
    page = client.get(f"/projects/{bears}/images/{image_id}")
    assert page.status_code == 200
    text = re.sub(r"\s+", " ", page.text)
    assert f'src="/api/v1/images/{image_id}/file"' in text
    assert "public domain (search filter: Public)" in text and "grizzly bear" in text
    assert 'href="https://img.example/g.jpg"' in text and 'href="javascript:' not in text
    assert "added as <strong>grizzly</strong>" in text
    assert "relabelled from <strong>grizzly</strong> to <strong>black</strong>" in text
    grid = client.get(f"/projects/{bears}/images")
    assert f'href="/projects/{bears}/images/{image_id}"' in grid.text
    assert client.get(f"/projects/{bears}/images/999999").status_code == 404
