"""Bear samples and a small trained/exported model for the ML tests (data_dir: ../conftest)."""

import csv
from pathlib import Path

import pytest


def bear_samples(data_dir: Path, *, every: int = 1):
    """(samples, labels) for the bear photos, every n-th file, groups from review_notes.csv."""
    from app.ml.split import Sample

    root = data_dir / "bears"
    labels = sorted(p.name for p in root.iterdir() if p.is_dir())
    with open(root / "review_notes.csv", newline="") as f:
        groups = {row["file"]: row["group"] for row in csv.DictReader(f) if row["group"]}
    samples = [
        Sample(key=str(path), label=i, group=groups.get(f"{label}/{path.name}"))
        for i, label in enumerate(labels)
        for path in sorted((root / label).glob("*.jpg"))[::every]
    ]
    return samples, labels


def read_bytes(key: str) -> bytes:
    return Path(key).read_bytes()


TINY = {"augment_views": 1, "batch_size": 16}


@pytest.fixture(scope="session")
def small_bears(data_dir):
    return bear_samples(data_dir, every=10)


def body_cache() -> Path:
    """The frozen bodies' graphs as a train worker keeps them (exported on first use)."""
    from app.ml.body import shared_cache_dir

    return shared_cache_dir() or Path(__file__).resolve().parents[2] / "var" / "cache" / "bodies"


@pytest.fixture(scope="session")
def trained(small_bears):
    """A head-only model on 60 bear photos, the body in ONNX Runtime from its cached graph, as
    the default recipe trains (a few seconds on 2 cores)."""
    from app.ml.recipe import Recipe
    from app.ml.train import train_classifier

    samples, labels = small_bears
    return train_classifier(samples=samples, labels=labels, read_bytes=read_bytes,
                            recipe=Recipe(epochs=0, **TINY), body_cache=body_cache())


@pytest.fixture(scope="session")
def exported(trained, tmp_path_factory):
    from app.ml.export import export_model

    out = tmp_path_factory.mktemp("model")
    meta = export_model(result=trained, out_dir=out, backbone="efficientnet_lite0",
                        recipe={"epochs": 0}, dataset={"images": 60})
    return out, meta
