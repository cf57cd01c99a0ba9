"""What the benchmarks share: where the repository and the photos are, and the bears.

The benchmarks run as scripts (`python bench/train.py`), so they import this as `common`;
it puts the repository on sys.path for their `app` and `tests` imports.
"""

import csv
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("KODIAK_DATA_DIR", REPO.parent / "shared" / "data")).resolve()
BEARS = DATA / "bears"
RESULTS = REPO / "bench" / "results"


def bear_labels() -> list[str]:
    """The bear classes: the folders of bears/, sorted."""
    return sorted(p.name for p in BEARS.iterdir() if p.is_dir())


def bear_photos(label: str | None = None) -> list[Path]:
    """One class's photos, or every class's in class order; sorted by name within a class."""
    labels = [label] if label else bear_labels()
    return [path for name in labels for path in sorted((BEARS / name).glob("*.jpg"))]


def bear_samples(*, every: int = 1):
    """(samples, labels): every n-th photo of each class with its near-duplicate group from
    bears/review_notes.csv (the groups the split keeps on one side)."""
    from app.ml.train import Sample  # torch: only in the processes that train

    labels = bear_labels()
    with open(BEARS / "review_notes.csv", newline="") as f:
        groups = {row["file"]: row["group"] for row in csv.DictReader(f) if row["group"]}
    samples = [
        Sample(key=str(path), label=i, group=groups.get(f"{label}/{path.name}"))
        for i, label in enumerate(labels)
        for path in bear_photos(label)[::every]
    ]
    return samples, labels
