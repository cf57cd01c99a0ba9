"""The K-fold heads on cached features, on synthetic features that make any leak visible: each
image (or group) has a feature of its own and a random label, which a head can only know by
having trained on that image (or group)."""

import numpy as np
import pytest
import torch

from app.ml.head import fold_probabilities, train_head
from app.ml.recipe import Recipe
from app.ml.split import fold_assignment

RECIPE = Recipe(lr=0.1, head_epochs=20, label_smoothing=0.0)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices: one thread is many times faster than several fighting over a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def memorable(units: int, per_unit: int, views: int, seed: int = 0):
    """Features: a one-hot per unit (an image or a near-duplicate group), repeated for each
    view in blocks of n_train rows; a random label per unit."""
    rng = np.random.default_rng(seed)
    n_train = units * per_unit
    unit_of = np.arange(n_train) // per_unit
    labels = torch.from_numpy(rng.integers(0, 3, units)[unit_of])
    features = torch.eye(units)[unit_of].float().mul(10).repeat(views, 1)
    return features, labels.repeat(views), unit_of


def given_label_probability(probabilities: np.ndarray, targets: torch.Tensor) -> float:
    n_train = len(probabilities)
    return float(probabilities[np.arange(n_train), targets[:n_train].numpy()].mean())


def test_a_head_memorises_what_it_sees():
    torch.manual_seed(0)
    features, targets, _ = memorable(units=150, per_unit=1, views=2)
    head = torch.nn.Linear(features.shape[1], 3)
    train_head(head, features, targets, RECIPE)
    with torch.no_grad():
        seen = torch.softmax(head(features), dim=1).numpy()
    assert given_label_probability(seen, targets) > 0.9


def test_every_view_of_a_held_out_image_is_left_out():
    torch.manual_seed(0)
    features, targets, _ = memorable(units=150, per_unit=1, views=3)
    folds = fold_assignment([None] * 150, folds=5, seed=0)
    oos = fold_probabilities(features, targets, folds, n_classes=3, recipe=RECIPE)
    assert oos.shape == (150, 3) and np.allclose(oos.sum(1), 1)
    assert given_label_probability(oos, targets) < 0.45  # chance is 1/3


def test_group_folds_hide_near_duplicates_and_image_folds_would_leak():
    torch.manual_seed(0)
    features, targets, unit_of = memorable(units=75, per_unit=2, views=2)
    groups = [f"g{unit}" for unit in unit_of]
    by_group = fold_assignment(groups, folds=5, seed=0)
    by_image = fold_assignment([None] * len(groups), folds=5, seed=0)
    assert any(by_image[i] != by_image[i + 1] for i in range(0, len(groups), 2))
    kept_apart = fold_probabilities(features, targets, by_group, n_classes=3, recipe=RECIPE)
    leaked = fold_probabilities(features, targets, by_image, n_classes=3, recipe=RECIPE)
    assert given_label_probability(kept_apart, targets) < 0.45
    assert given_label_probability(leaked, targets) > 0.7


def test_on_fold_reports_each_fold():
    features, targets, _ = memorable(units=10, per_unit=1, views=1)
    calls = []
    fold_probabilities(features, targets, fold_assignment([None] * 10, folds=5, seed=0),
                       n_classes=3, recipe=Recipe(head_epochs=1),
                       on_fold=lambda k, count: calls.append((k, count)))
    assert calls == [(k, 5) for k in range(5)]
