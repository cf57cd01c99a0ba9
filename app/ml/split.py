"""Which images train and which validate, and the folds for out-of-sample predictions: seeded,
and never separating a near-duplicate group."""

import random
from dataclasses import dataclass


@dataclass
class Sample:
    key: str
    label: int
    group: str | None = None


def split_samples(
    samples: list[Sample], *, valid_pct: float, seed: int
) -> tuple[list[int], list[int]]:
    """Seeded split, stratified per label, that never lets a group straddle both sides."""
    units = _units([sample.group for sample in samples])
    label_units: dict[int, list[str]] = {}
    for unit, members in units.items():
        for label in dict.fromkeys(samples[i].label for i in members):
            label_units.setdefault(label, []).append(unit)
    totals = {label: 0 for label in label_units}
    for sample in samples:
        totals[sample.label] += 1
    rng = random.Random(seed)
    side: dict[str, str] = {}
    in_valid = dict.fromkeys(totals, 0)
    for label in sorted(label_units):
        candidates = label_units[label]
        rng.shuffle(candidates)
        total = totals[label]
        target = max(1, round(total * valid_pct)) if total >= 2 else 0
        for unit in candidates:
            if unit in side:
                continue
            size = sum(samples[i].label == label for i in units[unit])
            fits = in_valid[label] + size <= target or in_valid[label] == 0
            if in_valid[label] < target and fits and total - in_valid[label] - size >= 1:
                side[unit] = "valid"
                for i in units[unit]:
                    in_valid[samples[i].label] += 1
            else:
                side[unit] = "train"
    valid = sorted(i for unit, members in units.items() if side[unit] == "valid" for i in members)
    train = sorted(i for unit, members in units.items() if side[unit] == "train" for i in members)
    return train, valid


def fold_assignment(groups: list[str | None], *, folds: int, seed: int) -> list[int]:
    """A fold per item, seeded and balanced in size, never splitting a group across folds."""
    order = list(_units(groups).values())
    random.Random(seed).shuffle(order)
    count = max(1, min(folds, len(order)))
    sizes = [0] * count
    assignment = [0] * len(groups)
    for members in order:
        fold = sizes.index(min(sizes))
        sizes[fold] += len(members)
        for index in members:
            assignment[index] = fold
    return assignment


def _units(groups: list[str | None]) -> dict[str, list[int]]:
    """Indices that must stay together: a group's members, or an ungrouped item alone."""
    units: dict[str, list[int]] = {}
    for index, group in enumerate(groups):
        units.setdefault(f"g:{group}" if group is not None else f"i:{index}", []).append(index)
    return units
