from collections import Counter

import numpy as np

from app.ml.split import Sample, fold_assignment, split_samples


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


def test_folds_keep_groups_together_and_balance_sizes():
    groups = [f"g{i // 3}" for i in range(30)] + [None] * 20
    folds = fold_assignment(groups, folds=5, seed=3)
    assert folds == fold_assignment(groups, folds=5, seed=3)
    for i in range(0, 30, 3):
        assert len(set(folds[i:i + 3])) == 1
    sizes = np.bincount(folds)
    assert len(sizes) == 5 and sizes.max() - sizes.min() <= 3
    assert fold_assignment(["a", "a"], folds=5, seed=0) == [0, 0]
