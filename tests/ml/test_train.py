import json
from collections import Counter

import numpy as np
import pytest

from app.ml.train import (
    Recipe,
    Sample,
    TrainingCancelled,
    fold_assignment,
    split_samples,
    train_classifier,
    unknown_threshold,
    valley,
)
from tests.ml.conftest import TINY, read_bytes


def labelled(counts, groups=None):
    samples = [Sample(key=f"{label}-{i}", label=label)
               for label, n in enumerate(counts) for i in range(n)]
    for index, group in (groups or {}).items():
        samples[index].group = group
    return samples


def test_split_is_stratified_deterministic_and_covers_every_label():
    samples = labelled([50, 30, 2, 1])
    train, valid = split_samples(samples, valid_pct=0.2, seed=1)
    assert sorted(train + valid) == list(range(len(samples)))
    per_label = Counter(samples[i].label for i in valid)
    assert per_label == {0: 10, 1: 6, 2: 1}
    assert (train, valid) == split_samples(samples, valid_pct=0.2, seed=1)
    assert valid != split_samples(samples, valid_pct=0.2, seed=2)[1]


def test_groups_never_straddle():
    groups = {i: f"g{i // 4}" for i in range(0, 40)}
    samples = labelled([40, 20], groups)
    for seed in range(10):
        train, valid = split_samples(samples, valid_pct=0.2, seed=seed)
        sides = {}
        for side, indices in (("train", train), ("valid", valid)):
            for i in indices:
                if samples[i].group:
                    assert sides.setdefault(samples[i].group, side) == side
        assert {samples[i].label for i in valid} == {0, 1}
        assert 6 <= len(valid) <= 16


def test_recipe_validation():
    assert Recipe.from_dict(Recipe().to_dict()) == Recipe()
    with pytest.raises(ValueError, match="colour"):
        Recipe.from_dict({"colour": "red", "epochs": 1})
    for bad in ({"epochs": 51}, {"lr": 0}, {"valid_pct": 0.6}, {"epochs": True},
                {"batch_size": "32"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            Recipe.from_dict(bad)


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
    assert not trained.model.training


def test_same_seed_gives_identical_metrics(trained, small_bears):
    samples, labels = small_bears
    again = train_classifier(samples=samples, labels=labels, read_bytes=read_bytes,
                             recipe=Recipe(epochs=0, **TINY))
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
        recipe=Recipe(epochs=1, **TINY), progress=lambda *args: calls.append(args),
    )
    assert result.metrics["error_rate"] <= 0.34
    assert [row["phase"] for row in result.metrics["history"]][-1] == "unfrozen"
    assert result.metrics["images_per_second"]["unfrozen"] > 0
    fractions = [c[0] for c in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    unfrozen = [c for c in calls if c[2]["phase"] == "unfrozen"]
    assert any("batch 1/" in c[1] for c in unfrozen)
    assert any("history" in c[2] for c in unfrozen)


def test_should_stop_cancels_within_a_batch(small_bears):
    samples, labels = small_bears
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(TrainingCancelled):
        train_classifier(samples=samples, labels=labels, read_bytes=read_bytes,
                         recipe=Recipe(epochs=0, **TINY), should_stop=stop)
    assert len(calls) == 4


def test_every_image_gets_an_out_of_sample_prediction(trained, small_bears):
    samples, labels = small_bears
    oos = trained.oos_probabilities
    assert len(oos) == len(samples) and all(row is not None for row in oos)
    assert all(abs(sum(row) - 1) < 1e-6 and len(row) == len(labels) for row in oos)
    for index, row in zip(trained.valid_indices, trained.valid_probabilities, strict=True):
        assert oos[index] == row  # validation images: the final model never saw them
    train = trained.train_indices
    predicted = np.array([oos[i] for i in train]).argmax(1)
    error = (predicted != np.array([samples[i].label for i in train])).mean()
    assert error <= 0.34
    assert trained.metrics["oos_folds"] == 5


def test_folds_keep_groups_together_and_balance_sizes():
    groups = [f"g{i // 3}" for i in range(30)] + [None] * 20
    folds = fold_assignment(groups, folds=5, seed=3)
    assert folds == fold_assignment(groups, folds=5, seed=3)
    for i in range(0, 30, 3):
        assert len(set(folds[i:i + 3])) == 1
    sizes = np.bincount(folds)
    assert len(sizes) == 5 and sizes.max() - sizes.min() <= 3
    assert fold_assignment(["a", "a"], folds=5, seed=0) == [0, 0]


def test_unknown_threshold_rejects_few_correct_predictions():
    rng = np.random.default_rng(0)
    top = rng.uniform(0.6, 1.0, 200)
    probabilities = np.stack([top, 1 - top], axis=1)
    actual = np.zeros(200, dtype=int)
    calibrated = unknown_threshold(probabilities, actual)
    assert calibrated["unknown_score"] == "max_probability"
    assert 0.6 < calibrated["unknown_threshold"] < 0.63
    assert calibrated["unknown_reject_rate"] <= 0.03
    assert (top < calibrated["unknown_threshold"]).mean() <= 0.03


def test_valley_picks_a_rate_on_the_falling_slope():
    lrs = [10 ** (-6 + 6 * i / 99) for i in range(100)]
    losses = [1.1 - 0.8 / (1 + np.exp(-(i - 50) / 6)) if i < 85 else 0.3 + (i - 85) * 0.2
              for i in range(100)]
    suggestion = valley(lrs, losses)
    assert lrs[40] <= suggestion <= lrs[70]
