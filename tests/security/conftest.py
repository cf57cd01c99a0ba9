"""A populated app for the authorisation matrix and the fuzzer: users A (the owner), B, a
disabled user and an admin, each with an API key; A owns a project with labels and images, a
job, a model version (a tiny ONNX graph built here, no training) and two deployments."""

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.cli import migrate
from app.db import session_scope
from app.ml.preprocess import Preprocessing, probe_input
from app.models import ApiKey, Job, ModelVersion, User, utcnow
from app.services import auth
from tests.conftest import ADMIN_EMAIL, make_settings

OWNER = {"email": "owner@example.com", "password": "owner-password"}
OTHER = {"email": "other@example.com", "password": "other-password"}
DISABLED = {"email": "disabled@example.com", "password": "disabled-password"}
LABELS = ["cat", "dog"]
METRICS_TOKEN = "metrics-token-for-tests"


def jpeg(colour: tuple[int, int, int], size: int = 64) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(out, "JPEG")
    return out.getvalue()


def dataset_zip() -> bytes:
    """A zip of label folders, as exports write and imports take."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("cat/imported.jpg", jpeg((10, 200, 30)))
    return out.getvalue()


def tiny_model(out: Path, labels: list[str]) -> dict:
    """A model folder Classifier.load accepts: mean colour -> linear -> softmax (32 px)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    pre = Preprocessing(input_size=32, resize=32)
    weights = np.linspace(-1, 1, 3 * len(labels), dtype=np.float32).reshape(3, len(labels))
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("MatMul", ["flat", "weights"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", len(labels)]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT,
                                       ["n", len(labels)])],
        [numpy_helper.from_array(weights, "weights")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(model, out / "model.onnx")
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    probe = session.run(["probabilities"], {"input": probe_input(pre)})[0][0]
    metrics = {"error_rate": 0.5, "accuracy": 0.5, "valid_count": 2, "unknown_threshold": 0.1,
               "confusion_matrix": [[1, 0], [1, 0]], "top_losses": [],
               "per_class": {label: {"precision": 0.5, "recall": 0.5, "support": 1}
                             for label in labels}}
    meta = {"backbone": "tiny", "labels": labels, "preprocessing": pre.to_dict(),
            "metrics": metrics, "probe": {"function": "probe_input",
                                          "probabilities": probe.tolist()}}
    (out / "model.json").write_text(json.dumps(meta))
    (out / "weights.safetensors").write_bytes(b"not used by the web process")
    return meta


@dataclass
class Party:
    """Who calls: an API key (Authorization header) and a browser session (cookie, CSRF)."""

    name: str
    user_id: int | None = None
    key: str | None = None
    cookie: str | None = None
    csrf: str | None = None

    def headers(self) -> dict[str, str]:
        headers = {}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        if self.csrf:
            headers["X-CSRF-Token"] = self.csrf
        return headers


@dataclass
class World:
    client: TestClient
    owner: Party
    other: Party
    admin: Party
    disabled: Party
    ids: dict = field(default_factory=dict)

    def session(self):
        return session_scope(self.client.app.state.session_factory)

    def new_cookie(self, user_id: int) -> tuple[str, str]:
        """A fresh browser session for a user (no password hashing)."""
        with self.session() as session:
            return auth.start_session(session=session, user=session.get(User, user_id), days=1)

    def new_api_key(self, user_id: int, name: str = "spare") -> tuple[int, str]:
        """A fresh API key of a user: its id, and the key."""
        with self.session() as session:
            key = auth.create_api_key(session=session, user=session.get(User, user_id),
                                      name=name)
            return session.query(ApiKey).filter_by(prefix=key[:10]).one().id, key


def _user(client: TestClient, admin_headers: dict, email: str, password: str) -> int:
    created = client.post("/api/v1/users", json={"email": email, "password": password},
                          headers=admin_headers)
    assert created.status_code == 201, created.text
    return created.json()["id"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    home = tmp_path_factory.mktemp("world")
    settings = make_settings(home, metrics_token=METRICS_TOKEN,
                             sign_in_failures_per_account=1000, sign_in_failures_per_ip=1000,
                             predict_burst_ip=1000, predict_burst_key=1000)
    migrate(settings)
    from app.web.main import create_app

    with TestClient(create_app(settings)) as client:
        parties = {}
        with session_scope(client.app.state.session_factory) as session:
            admin = session.query(User).filter_by(email=ADMIN_EMAIL).one()
            parties["admin"] = Party("admin", admin.id,
                                     auth.create_api_key(session=session, user=admin))
        admin_headers = parties["admin"].headers()
        for name, who in (("owner", OWNER), ("other", OTHER), ("disabled", DISABLED)):
            user_id = _user(client, admin_headers, **who)
            with session_scope(client.app.state.session_factory) as session:
                key = auth.create_api_key(session=session, user=session.get(User, user_id))
            parties[name] = Party(name, user_id, key)
        world = World(client, parties["owner"], parties["other"], parties["admin"],
                      parties["disabled"])
        with world.session() as session:
            session.get(User, world.disabled.user_id).disabled_at = utcnow()
        world.ids.update(_owned_objects(world, home))
        yield world


def _owned_objects(world: World, home: Path) -> dict:
    """The owner's project, images, job, model version and deployments: their ids."""
    client, headers = world.client, world.owner.headers()
    project = client.post("/api/v1/projects", json={"name": "Pets", "labels": LABELS},
                          headers=headers)
    assert project.status_code == 201, project.text
    project_id = project.json()["id"]
    image_ids = []
    for label, colour in zip(LABELS, [(200, 40, 40), (40, 40, 200)], strict=True):
        added = client.post(f"/api/v1/projects/{project_id}/images", data={"label": label},
                            files=[("files", (f"{label}.jpg", jpeg(colour)))], headers=headers)
        assert added.status_code == 201 and added.json()["added"], added.text
        image_ids.append(added.json()["added"][0]["image_id"])
    meta = tiny_model(home / "tiny-model", LABELS)
    storage = client.app.state.storage
    with world.session() as session:
        job = Job(project_id=project_id, kind="training", status="succeeded", progress=1.0,
                  finished_at=utcnow())
        session.add(job)
        session.flush()
        model = ModelVersion(project_id=project_id, job_id=job.id, backbone="tiny",
                             labels=LABELS, metrics=meta["metrics"], recipe={},
                             storage_prefix="")
        session.add(model)
        session.flush()
        model.storage_prefix = f"models/{project_id}/{model.id}"
        for path in (home / "tiny-model").iterdir():
            storage.put_file(f"{model.storage_prefix}/{path.name}", path)
        job.result = {"model_id": model.id}
        search = Job(project_id=project_id, kind="search", status="succeeded", progress=1.0,
                     finished_at=utcnow(), params={"label": "cat", "query": "cat"})
        session.add(search)
        session.flush()
        job_id, model_id, search_job_id = job.id, model.id, search.id
    for slug, public in (("owner-private", False), ("owner-public", True)):
        deployed = client.post(f"/api/v1/models/{model_id}/deployments",
                               json={"slug": slug, "public": public}, headers=headers)
        assert deployed.status_code == 201, deployed.text
    return {"project_id": project_id, "image_id": image_ids[0], "job_id": job_id,
            "search_job_id": search_job_id,
            "model_id": model_id, "slug": "owner-private", "public_slug": "owner-public",
            "user_id": world.owner.user_id}
