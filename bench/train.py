"""Kodiak's training against fastai's `fine_tune(4)` on the bears, same body, same split.

Usage: python bench/train.py [--baseline-epochs 4] [--skip-baseline]
Data: $KODIAK_DATA_DIR (default ../shared/data next to the repo). Writes bench/results/train.json.

Each side runs in its own child process (its peak RSS is the worker's peak while training):
- Kodiak: `train_classifier` with the default recipe (frozen body, cached features, linear
  head, K-fold out-of-sample predictions), then once more with one unfrozen epoch for the
  unfrozen phase's images/s.
- fastai 2.8: the book's recipe (`RandomResizedCrop(224, min_scale=0.5)`, `aug_transforms()`,
  `fine_tune(4)`) on a Learner built as `vision_learner` builds one for a timm arch, around
  the same EfficientNet-Lite0 body with the same mapped ImageNet weights, normalised with
  mean/std 0.5 as those weights need.
Both use the seeded 80/20 split of `app.ml.split.split_samples` that keeps the duplicate groups
of bears/review_notes.csv on one side.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from common import BEARS, RESULTS, bear_samples

SEED, VALID_PCT = 42, 0.2


def run_kodiak(epochs: int) -> dict:
    from app.ml.train import Recipe, train_classifier

    samples, labels = bear_samples()
    tick = time.perf_counter()
    result = train_classifier(samples=samples, labels=labels,
                              read_bytes=lambda key: Path(key).read_bytes(),
                              recipe=Recipe(epochs=epochs, seed=SEED, valid_pct=VALID_PCT))
    wall = time.perf_counter() - tick
    m = result.metrics
    return {
        "wall_s": round(wall, 1),
        "error_rate": m["error_rate"],
        "errors": round(m["error_rate"] * m["valid_count"]),
        "valid_count": m["valid_count"],
        "train_count": m["train_count"],
        "images_per_second": m["images_per_second"],
        "unknown_threshold": m["unknown_threshold"],
        "valid_image_keys": sorted(samples[i].key for i in result.valid_indices),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def run_fastai(epochs: int) -> dict:
    import torch
    from fastai.vision.all import (
        CategoryBlock,
        DataBlock,
        ImageBlock,
        IndexSplitter,
        Learner,
        Normalize,
        RandomResizedCrop,
        aug_transforms,
        default_split,
        error_rate,
        parent_label,
    )
    from fastai.vision.learner import TimmBody, add_head

    from app.ml.backbones import imagenet_model
    from app.ml.split import split_samples

    torch.manual_seed(SEED)
    samples, _labels = bear_samples()
    _train, valid = split_samples(samples, valid_pct=VALID_PCT, seed=SEED)
    paths = [Path(s.key) for s in samples]
    block = DataBlock(
        blocks=(ImageBlock, CategoryBlock), get_items=lambda _: paths, get_y=parent_label,
        splitter=IndexSplitter(valid),
        item_tfms=RandomResizedCrop(224, min_scale=0.5),
        batch_tfms=[*aug_transforms(), Normalize.from_stats([0.5] * 3, [0.5] * 3)],
    )
    dls = block.dataloaders(BEARS, seed=SEED)
    timm_model = imagenet_model("efficientnet_lite0")  # the same mapped ImageNet weights
    timm_model.reset_classifier(0)
    body = TimmBody(timm_model, True, None, 3)
    model = add_head(body, timm_model.num_features, dls.c, pool=body.needs_pool)
    learn = Learner(dls, model, splitter=default_split, metrics=error_rate)
    tick = time.perf_counter()
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(epochs)
    wall = time.perf_counter() - tick
    _loss, error = learn.validate()
    return {
        "wall_s": round(wall, 1),
        "error_rate": round(float(error), 5),
        "valid_count": len(valid),
        "valid_image_keys": sorted(samples[i].key for i in valid),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def child(side: str, epochs: int) -> dict:
    """Run one side in a fresh process; its JSON answer is the last line of its output."""
    out = subprocess.run([sys.executable, __file__, "--child", side, "--epochs", str(epochs)],
                         capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"{side} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine() -> str:
    import torch

    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return (f"{model}, {len(os.sched_getaffinity(0))} cores, Linux {platform.release()}, "
            f"Python {platform.python_version()}, torch {torch.__version__}, CPU only; "
            f"load average at start {os.getloadavg()[0]:.1f} (shared machine)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", choices=["kodiak", "fastai"])
    parser.add_argument("--epochs", type=int, default=0)
    parser.add_argument("--baseline-epochs", type=int, default=4)
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()
    if args.child:
        run = run_kodiak if args.child == "kodiak" else run_fastai
        print(json.dumps(run(args.epochs)), flush=True)
        return

    described = machine()
    kodiak = child("kodiak", 0)
    print(f"kodiak (frozen body, cached features): {kodiak['wall_s']} s, error "
          f"{kodiak['error_rate']:.2%} ({kodiak['errors']}/{kodiak['valid_count']}), "
          f"{kodiak['images_per_second']} img/s, peak RSS {kodiak['peak_rss_mb']} MB", flush=True)
    unfrozen = child("kodiak", 1)
    print(f"kodiak with 1 unfrozen epoch: {unfrozen['wall_s']} s, error "
          f"{unfrozen['error_rate']:.2%}, {unfrozen['images_per_second']} img/s, "
          f"peak RSS {unfrozen['peak_rss_mb']} MB", flush=True)
    results = {
        "error_rate": kodiak["error_rate"],
        "kodiak_s": kodiak["wall_s"],
        "valid_count": kodiak["valid_count"],
        "train_count": kodiak["train_count"],
        "images_per_second_frozen": kodiak["images_per_second"]["frozen"],
        "images_per_second_unfrozen": unfrozen["images_per_second"]["unfrozen"],
        "kodiak_unfrozen_1_epoch_s": unfrozen["wall_s"],
        "kodiak_unfrozen_1_epoch_error_rate": unfrozen["error_rate"],
        "unknown_threshold": kodiak["unknown_threshold"],
        "peak_rss_mb": max(kodiak["peak_rss_mb"], unfrozen["peak_rss_mb"]),
        "split": f"seeded ({SEED}) 80/20, stratified, duplicate groups of review_notes.csv "
                 "kept on one side (app.ml.split.split_samples), the same for both",
        "machine": described,
    }
    if not args.skip_baseline:
        baseline = child("fastai", args.baseline_epochs)
        assert baseline["valid_image_keys"] == kodiak["valid_image_keys"], "splits differ"
        print(f"fastai fine_tune({args.baseline_epochs}): {baseline['wall_s']} s, error "
              f"{baseline['error_rate']:.2%}, peak RSS {baseline['peak_rss_mb']} MB", flush=True)
        results.update(
            baseline_s=baseline["wall_s"],
            baseline_error_rate=baseline["error_rate"],
            baseline=f"fastai 2.8 fine_tune({args.baseline_epochs}), RandomResizedCrop(224, "
                     "min_scale=0.5), aug_transforms(), same Lite0 body and weights",
            baseline_peak_rss_mb=baseline["peak_rss_mb"],
            ratio=round(baseline["wall_s"] / kodiak["wall_s"], 1),
        )
        print(f"ratio (fastai time / Kodiak time): {results['ratio']}x", flush=True)
    (RESULTS / "train.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
