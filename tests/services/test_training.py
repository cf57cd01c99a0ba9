"""Training jobs run in-process: out-of-sample predictions, live curves, lr_find, cancel."""

import json
import math
import threading
import time

import pytest

from app.db import session_scope
from app.models import Image, Job
from app.services import training
from app.services.errors import InvalidInputError
from tests.ml.conftest import TINY

LABELS = ("black", "grizzly", "teddy")


def upload_bears(client, headers, data_dir, *, every: int = 10) -> int:
    """A project with every n-th bear photo of each label; its id."""
    project = client.post("/api/v1/projects", json={"name": "Bears", "labels": list(LABELS)},
                          headers=headers).json()
    for label in LABELS:
        paths = sorted((data_dir / "bears" / label).glob("*.jpg"))[::every]
        answer = client.post(
            f"/api/v1/projects/{project['id']}/images", headers=headers, data={"label": label},
            files=[("files", (p.name, p.read_bytes(), "image/jpeg")) for p in paths],
        )
        assert answer.status_code == 201, answer.text
    return project["id"]


def run(client, job_id: int, work=training.run_training) -> Job:
    state = client.app.state
    work(factory=state.session_factory, storage=state.storage, settings=state.settings,
         job_id=job_id)
    with state.session_factory() as session:
        return session.get(Job, job_id)


def test_training_stores_out_of_sample_predictions_ranked_by_loss(client, admin, other_user,
                                                                   data_dir):
    pid = upload_bears(client, admin, data_dir)
    started = client.post(f"/api/v1/projects/{pid}/trainings", headers=admin,
                          json={"epochs": 0, **TINY})
    assert started.status_code == 202, started.text
    job = run(client, started.json()["id"])
    assert job.status == "succeeded", job.error
    model_id = job.result["model_id"]
    model = client.get(f"/api/v1/models/{model_id}", headers=admin).json()
    metrics = model["metrics"]

    # live curves: the job's detail carries every history row as it was reported
    assert job.detail["history"] == metrics["history"]
    assert [row["phase"] for row in job.detail["history"]] == ["frozen"] * 8

    # "none of these" threshold, calibrated out of sample, in metrics and model.json; the
    # feature bank it compares with is a file of the version like the weights
    assert 0 < metrics["unknown_threshold"] < 1
    assert metrics["unknown_score"] == "familiarity"
    meta = json.loads(client.get(f"/api/v1/models/{model_id}/files/model.json",
                                 headers=admin).content)
    assert meta["unknown_threshold"] == metrics["unknown_threshold"]
    assert model["files"]["features.npy"] == f"/api/v1/models/{model_id}/files/features.npy"
    bank = client.get(model["files"]["features.npy"], headers=admin)
    assert bank.status_code == 200 and len(bank.content) > meta["novelty"]["rows"] * 1000
    assert all(isinstance(row["image_id"], int) for row in metrics["top_losses"])

    answer = client.get(f"/api/v1/models/{model_id}/predictions?sort=loss&limit=10",
                        headers=admin)
    assert answer.status_code == 200, answer.text
    page = answer.json()
    with client.app.state.session_factory() as session:
        images = {image.id: image for image in session.query(Image)}
        given = {i: image.label.name for i, image in images.items()}
    assert page["total"] == len(images) == 60
    rows = page["predictions"]
    assert len(rows) == 10
    losses = [row["loss"] for row in rows]
    assert losses == sorted(losses, reverse=True)
    for row in rows:
        assert row["given_label"] == given[row["image_id"]]
        assert row["predicted_label"] == max(row["probabilities"], key=row["probabilities"].get)
        assert math.isclose(row["loss"], -math.log(row["probabilities"][row["given_label"]]),
                            rel_tol=1e-3, abs_tol=1e-5)
        assert row["confidence"] == pytest.approx(max(row["probabilities"].values()), abs=1e-6)
    everything = client.get(f"/api/v1/models/{model_id}/predictions?limit=500",
                            headers=admin).json()["predictions"]
    assert {row["image_id"] for row in everything} == set(images)
    assert sum(row["in_validation"] for row in everything) == metrics["valid_count"]
    wrong = sum(row["predicted_label"] != row["given_label"] for row in everything)
    assert wrong / len(everything) <= 0.3
    second = client.get(f"/api/v1/models/{model_id}/predictions?limit=10&offset=10",
                        headers=admin).json()["predictions"]
    assert second[0]["loss"] <= rows[-1]["loss"]
    assert client.get(f"/api/v1/models/{model_id}/predictions?sort=colour",
                      headers=admin).status_code == 422
    assert client.get(f"/api/v1/models/{model_id}/predictions",
                      headers=other_user).status_code == 404


def test_lr_find_job_returns_the_curve_and_a_suggestion(client, admin, data_dir):
    pid = upload_bears(client, admin, data_dir, every=12)
    started = client.post(f"/api/v1/projects/{pid}/lr-find", headers=admin, json={})
    assert started.status_code == 202, started.text
    assert started.json()["kind"] == "lr_find"
    job = run(client, started.json()["id"], training.run_lr_find)
    assert job.status == "succeeded", job.error
    lrs, losses = job.result["lrs"], job.result["losses"]
    assert len(lrs) == len(losses) >= 30
    assert lrs == sorted(lrs) and lrs[0] == pytest.approx(1e-6)
    assert lrs[0] <= job.result["suggestion"] <= lrs[-1]
    assert min(losses) < losses[0]  # the sweep found learning rates that lower the loss
    viewed = client.get(f"/api/v1/jobs/{job.id}", headers=admin).json()
    assert viewed["result"]["suggestion"] == job.result["suggestion"]


def test_cancel_stops_a_running_training_within_a_batch(client, admin, data_dir):
    """Cancelled while the unfrozen phase runs, the job stops at the next batch, not at the
    end of the epoch or of the training."""
    pid = upload_bears(client, admin, data_dir, every=12)
    job_id = client.post(f"/api/v1/projects/{pid}/trainings", headers=admin,
                         json={"epochs": 3, "head_epochs": 1, **TINY}).json()["id"]
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.setdefault("job", run(client, job_id)))
    worker.start()
    deadline = time.monotonic() + 180
    while "batch" not in client.get(f"/api/v1/jobs/{job_id}", headers=admin).json()["message"]:
        assert time.monotonic() < deadline and worker.is_alive()
        time.sleep(0.2)
    asked = time.monotonic()
    assert client.post(f"/api/v1/jobs/{job_id}/cancel", headers=admin).status_code == 200
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert outcome["job"].status == "cancelled"
    assert outcome["job"].result is None
    assert time.monotonic() - asked < 10  # one batch of 16 images plus a 0.5 s poll
    unfrozen = [row for row in outcome["job"].detail.get("history", [])
                if row["phase"] == "unfrozen"]
    assert len(unfrozen) <= 1  # at most the epoch it was asked in finished; 3 were asked for


def test_recipes_are_checked_against_the_recipe_limits():
    assert training.validated_recipe({"epochs": 2, "lr": None}) == {"epochs": 2}
    with pytest.raises(InvalidInputError, match="epochs: must be at most 50"):
        training.validated_recipe({"epochs": 99})
    with pytest.raises(InvalidInputError, match="unknown recipe keys: colour"):
        training.validated_recipe({"colour": "red"})


def test_frozen_epochs_is_still_accepted_as_rounds_of_eight_head_epochs(client, admin,
                                                                        data_dir):
    pid = upload_bears(client, admin, data_dir, every=30)
    trainings = f"/api/v1/projects/{pid}/trainings"
    old = client.post(trainings, headers=admin, json={"frozen_epochs": 2, "epochs": 0})
    assert old.status_code == 202, old.text
    with client.app.state.session_factory() as session:
        assert session.get(Job, old.json()["id"]).params == {"head_epochs": 16, "epochs": 0}
    assert training.validated_recipe({"frozen_epochs": 1}) == {"head_epochs": 8}
    for bad in ({"frozen_epochs": 1, "head_epochs": 8}, {"frozen_epochs": 51},
                {"head_epochs": 401}, {"head_epochs": 0}):
        assert client.post(trainings, headers=admin, json=bad).status_code == 422, bad
    schema = client.get("/api/v1/openapi.json").json()["components"]["schemas"]["TrainingIn"]
    assert schema["properties"]["head_epochs"]["anyOf"][0]["maximum"] == 400
    assert schema["properties"]["frozen_epochs"]["deprecated"] is True


def test_groups_join_duplicate_groups_and_near_phashes():
    images = [
        Image(id=1, phash="0000000000000000", duplicate_group="d1"),
        Image(id=2, phash="ffffffffffffffff", duplicate_group="d1"),
        Image(id=3, phash="0000000000000001", duplicate_group=None),
        Image(id=4, phash="00000000ffffffff", duplicate_group=None),
        Image(id=5, phash="f0f0f0f0f0f0f0f0", duplicate_group="d2"),
    ]
    groups = training.near_duplicate_groups(images)
    assert groups[0] == groups[1] == groups[2]
    assert len({groups[0], groups[3], groups[4]}) == 3


def test_heartbeat_keeps_a_silent_step_fresh(client, admin):
    factory = client.app.state.session_factory
    pid = client.post("/api/v1/projects", json={"name": "p"}, headers=admin).json()["id"]
    with session_scope(factory) as session:
        job = Job(project_id=pid, kind="training", params={}, status="running")
        session.add(job)
        session.flush()
        job_id = job.id
    beats = []
    with training.heartbeat(factory, job_id, every=0.1):
        for _ in range(3):
            time.sleep(0.25)
            with factory() as session:
                beats.append(session.get(Job, job_id).heartbeat_at)
    assert None not in beats and beats[0] < beats[1] < beats[2]


def test_a_version_appears_only_whole_and_a_failed_commit_leaves_no_files(
        client, admin, data_dir, monkeypatch):
    from app.ml import export
    from app.models import ModelVersion

    state = client.app.state
    pid = upload_bears(client, admin, data_dir, every=20)
    real_export = export.export_model
    rows_while_exporting = []

    def watched_export(**kwargs):
        with state.session_factory() as session:  # no row points at the files yet
            rows_while_exporting.append(session.query(ModelVersion).count())
        return real_export(**kwargs)

    monkeypatch.setattr(export, "export_model", watched_export)

    def broken_rows(*args):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(training, "_prediction_rows", broken_rows)
    started = client.post(f"/api/v1/projects/{pid}/trainings", headers=admin,
                          json={"epochs": 0, **TINY})
    job = run(client, started.json()["id"])
    assert job.status == "failed" and "went away" in job.error
    assert rows_while_exporting == [0]
    with state.session_factory() as session:
        assert session.query(ModelVersion).count() == 0
    assert [key for key, _ in state.storage.list_keys() if key.startswith("models/")] == []
