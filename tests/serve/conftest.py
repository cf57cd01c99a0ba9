"""A small bear model trained once per session, and helpers to deploy it in an app."""

from pathlib import Path

import pytest

from app.db import session_scope
from app.models import ModelVersion
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, api_key
from tests.ml.conftest import TINY, bear_samples, body_cache, read_bytes

_TRAINED: dict[Path, tuple] = {}


def train_bear_model(data_dir: Path, out: Path) -> tuple:
    """(folder, model.json, TrainResult, samples): a head-only model on 1 in 10 bear photos.

    Memoised per process, so the serve and browser tests share one training (~40 s here).
    """
    if data_dir not in _TRAINED:
        from app.ml.export import export_model
        from app.ml.train import Recipe, train_classifier

        samples, labels = bear_samples(data_dir, every=10)
        result = train_classifier(samples=samples, labels=labels, read_bytes=read_bytes,
                                  recipe=Recipe(epochs=0, **TINY), body_cache=body_cache())
        meta = export_model(result=result, out_dir=out, backbone="efficientnet_lite0",
                            recipe={"epochs": 0}, dataset={"images": len(samples)})
        _TRAINED[data_dir] = (out, meta, result, samples)
    return _TRAINED[data_dir]


@pytest.fixture(scope="session")
def bear_model(data_dir, tmp_path_factory):
    return train_bear_model(data_dir, tmp_path_factory.mktemp("bear-model"))


def add_model_version(app, *, project_id: int, model_dir: Path, meta: dict,
                      metrics: dict | None = None) -> int:
    """Record an exported model folder as a new version of a project, as training does."""
    factory, storage = app.state.session_factory, app.state.storage
    with session_scope(factory) as session:
        model = ModelVersion(project_id=project_id, backbone="efficientnet_lite0",
                             labels=meta["labels"],
                             metrics=meta["metrics"] if metrics is None else metrics,
                             recipe={}, storage_prefix="")
        session.add(model)
        session.flush()
        prefix = f"models/{project_id}/{model.id}"
        for path in Path(model_dir).iterdir():
            storage.put_file(f"{prefix}/{path.name}", path)
        model.storage_prefix = prefix
        return model.id


def make_project(client, headers, labels) -> int:
    created = client.post("/api/v1/projects", json={"name": "bears", "labels": labels},
                          headers=headers)
    assert created.status_code == 201, created.text
    return created.json()["id"]


def deploy(client, headers, model_id: int, slug: str, **extra) -> dict:
    created = client.post(f"/api/v1/models/{model_id}/deployments",
                          json={"slug": slug, **extra}, headers=headers)
    assert created.status_code == 201, created.text
    return created.json()


def deploy_bears(client, bear_model: tuple, slug: str = "bears") -> dict[str, str]:
    """The bear model recorded in a new project and deployed publicly as `slug`; answers the
    admin's API-key headers."""
    model_dir, meta, _, _ = bear_model
    admin = api_key(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    project_id = make_project(client, admin, meta["labels"])
    model_id = add_model_version(client.app, project_id=project_id, model_dir=model_dir,
                                 meta=meta)
    deploy(client, admin, model_id, slug, public=True)
    return admin
