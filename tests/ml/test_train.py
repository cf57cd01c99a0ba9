import json
import re

import numpy as np
import pytest
import torch

from app.ml.images import decode_rgb
from app.ml.preprocess import center_crop, to_chw
from app.ml.recipe import Recipe, TrainingCancelled
from app.ml.train import train_classifier
from tests.ml.conftest import TINY, body_cache, read_bytes


def test_head_only_training_beats_chance_and_reports(trained, small_bears):
    samples, labels = small_bears
    metrics = trained.metrics
    json.dumps(metrics)
    assert metrics["error_rate"] <= 0.34  # chance is 0.67 with three labels
    assert metrics["valid_count"] == len(trained.valid_indices) >= 9
    assert metrics["train_count"] + metrics["valid_count"] == len(samples)
    assert sum(map(sum, metrics["confusion_matrix"])) == metrics["valid_count"]
    assert set(metrics["per_class"]) == set(labels)
    assert len(trained.valid_probabilities) == metrics["valid_count"]
    assert metrics["top_losses"][0]["loss"] >= metrics["top_losses"][-1]["loss"]
    assert {row["phase"] for row in metrics["history"]} == {"frozen"}
    # head_epochs is what the curves show: one row per pass over the cached features
    assert [row["epoch"] for row in metrics["history"]] == list(range(1, Recipe().head_epochs + 1))
    assert not trained.model.training


def test_same_seed_gives_identical_metrics(trained, small_bears):
    samples, labels = small_bears
    again = train_classifier(samples=samples, labels=labels, read_bytes=read_bytes,
                             recipe=Recipe(epochs=0, **TINY), body_cache=body_cache())
    strip = [{k: v for k, v in row.items() if k != "seconds"}
             for row in again.metrics["history"]]
    assert strip == [{k: v for k, v in row.items() if k != "seconds"}
                     for row in trained.metrics["history"]]
    assert again.valid_probabilities == trained.valid_probabilities
    assert again.oos_probabilities == trained.oos_probabilities
    assert again.metrics["unknown_threshold"] == trained.metrics["unknown_threshold"]


def test_unfrozen_epoch_reports_progress_per_batch(small_bears):
    samples, labels = small_bears
    calls = []
    result = train_classifier(
        samples=samples, labels=labels, read_bytes=read_bytes,
        recipe=Recipe(epochs=1, head_epochs=3, **TINY), progress=lambda *args: calls.append(args),
    )
    assert result.metrics["error_rate"] <= 0.34
    assert [row["phase"] for row in result.metrics["history"]] == ["frozen"] * 3 + ["unfrozen"]
    assert result.metrics["images_per_second"]["unfrozen"] > 0
    fractions = [c[0] for c in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    unfrozen = [c for c in calls if c[2]["phase"] == "unfrozen"]
    assert any("batch 1/" in c[1] for c in unfrozen)
    assert any("history" in c[2] for c in unfrozen)


def test_should_stop_cancels_within_a_batch(small_bears):
    """Asked to stop after the first unfrozen batch, training stops before the second."""
    samples, labels = small_bears
    messages = []

    def stop():
        return any("unfrozen epoch 1/2, batch 1/" in m for m in messages)

    with pytest.raises(TrainingCancelled, match="unfrozen"):
        train_classifier(samples=samples, labels=labels, read_bytes=read_bytes,
                         recipe=Recipe(epochs=2, head_epochs=1, image_size=64, **TINY),
                         should_stop=stop,
                         progress=lambda fraction, message, extra: messages.append(message))
    unfrozen = [m for m in messages if m.startswith("unfrozen")]
    assert len(unfrozen) == 1
    batches = int(re.search(r"batch 1/(\d+)", unfrozen[0]).group(1))
    assert batches >= 2  # so stopping before the second batch is stopping within the epoch


def test_should_stop_is_asked_from_the_first_phase(small_bears):
    samples, labels = small_bears
    with pytest.raises(TrainingCancelled, match="decode"):
        train_classifier(samples=samples, labels=labels, read_bytes=read_bytes,
                         recipe=Recipe(**TINY), should_stop=lambda: True)


def test_every_image_gets_an_out_of_sample_prediction(trained, small_bears):
    samples, labels = small_bears
    oos = trained.oos_probabilities
    assert len(oos) == len(samples) and all(row is not None for row in oos)
    assert all(abs(sum(row) - 1) < 1e-6 and len(row) == len(labels) for row in oos)
    assert sorted(trained.train_indices + trained.valid_indices) == list(range(len(samples)))
    final = final_model_probabilities(trained, samples)
    for index in trained.valid_indices:  # validation images: the final model never saw them
        assert np.allclose(oos[index], final[index], atol=1e-4)
    # training images: a fold's head that never saw them, not the final model that did
    differ = [not np.allclose(oos[i], final[i], atol=1e-3) for i in trained.train_indices]
    assert all(differ)
    train = trained.train_indices
    predicted = np.array([oos[i] for i in train]).argmax(1)
    error = (predicted != np.array([samples[i].label for i in train])).mean()
    assert error <= 0.34
    assert trained.metrics["oos_folds"] == 5


def final_model_probabilities(result, samples) -> dict[int, np.ndarray]:
    """The returned model's probabilities for each image's eval crop, computed here afresh."""
    pre = result.preprocessing
    views = [to_chw(center_crop(decode_rgb(read_bytes(s.key), draft_size=pre.resize), pre), pre)
             for s in samples]
    with torch.inference_mode():
        logits = result.model(torch.from_numpy(np.stack(views))).double()
    return dict(enumerate(torch.softmax(logits, dim=1).numpy()))
