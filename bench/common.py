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


def machine_info() -> dict:
    """The machine a benchmark ran on, recorded in every result: the CPU model, the cores this
    process may use, and the instruction sets that decide which precision is fast here (bf16
    runs at full speed only with AVX512-BF16 or AMX; most laptops have neither), so a figure
    is never read as holding on a kind of CPU it did not run on."""
    import platform

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                  if line.startswith("model name")), platform.processor() or platform.machine())
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines()
                      if line.startswith("flags")), []))
    has = {name: name in flags for name in ("avx2", "avx512f", "avx512_bf16", "amx_bf16")}
    kind = ("AMX" if has["amx_bf16"] else "AVX512-BF16" if has["avx512_bf16"]
            else "AVX-512 without bf16" if has["avx512f"] else "AVX2" if has["avx2"] else "other")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": model,
        "cores": cores,
        "bf16_support": kind,
        "cpu_flags": has,
        "gpu": None,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load_average_at_start": round(os.getloadavg()[0], 2),
    }


def describe(info: dict) -> str:
    """machine_info() in one line, for printing beside the figures."""
    return (f"{info['cpu']}, {info['cores']} cores, bf16: {info['bf16_support']}, "
            f"{info['os']}, Python {info['python']}, load {info['load_average_at_start']}")
