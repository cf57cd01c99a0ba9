"""fastai's fine_tune recipe, built for speed on CPU: a head on cached frozen features, then
optionally all layers with discriminative learning rates and a one-cycle schedule."""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from app.ml.head import OOS_FOLDS, fit_head, frozen_features, out_of_sample, photo_bank
from app.ml.metrics import classification_metrics
from app.ml.novelty import Bank
from app.ml.prepare import Prepared, prepare
from app.ml.preprocess import Preprocessing
from app.ml.progress import ProgressCallback, Reporter
from app.ml.recipe import Recipe
from app.ml.split import Sample
from app.ml.unfrozen import fit_unfrozen


@dataclass
class TrainResult:
    model: nn.Module
    labels: list[str]
    preprocessing: Preprocessing
    metrics: dict
    train_indices: list[int]
    valid_indices: list[int]
    valid_probabilities: list[list[float]]
    seconds: float
    skipped: list[str] = field(default_factory=list)
    oos_probabilities: list[list[float] | None] = field(default_factory=list)
    bank: Bank | None = None  # the training photos' embeddings, calibrated (app.ml.novelty)
    body_onnx: Path | None = None  # the frozen body's cached graph, when the body stayed frozen


def train_classifier(
    *,
    samples: list[Sample],
    labels: list[str],
    read_bytes: Callable[[str], bytes],
    recipe: Recipe,
    progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: str | None = None,
    threads: int | None = None,
    body_cache: Path | None = None,
) -> TrainResult:
    """Fine-tune recipe.backbone on samples; return the fp32 CPU model, its metrics, an
    out-of-sample prediction for every image (K-fold heads for training images, the final
    model for validation images) and the bank of training photos "none of these" uses.
    body_cache: where the frozen body's ONNX graphs are kept (app.ml.body); with it, a CPU
    training whose body stays frozen runs the body in ONNX Runtime and exports no graph."""
    started = time.perf_counter()
    report = Reporter(progress, should_stop)
    report.plan(**_phase_costs(len(samples), recipe))
    run = prepare(samples=samples, labels=labels, read_bytes=read_bytes, recipe=recipe,
                  report=report, device=device, threads=threads, body_cache=body_cache)
    features = frozen_features(run)  # the body runs once per view of each image
    valid_logits = fit_head(run, features)  # the new head learns, the body stays frozen
    train_oos = out_of_sample(run, features)  # K-fold heads on the same features
    if recipe.epochs:
        valid_logits = fit_unfrozen(run)  # then all layers, discriminative learning rates
    bank, unknown = photo_bank(run, features)  # what the model has seen, calibrated
    run.model = run.model.to("cpu", memory_format=torch.contiguous_format).float().eval()
    probabilities = torch.softmax(valid_logits.detach().cpu().double(), dim=1).numpy()
    actual = run.targets[run.valid_pos].numpy()
    metrics = classification_metrics(probabilities, actual, run.labels, run.keys(run.valid_pos))
    metrics.update(
        train_count=len(run.train_pos),
        history=run.history,
        images_per_second={k: round(v, 1) for k, v in run.speed.items()},
        skipped=run.skipped,
        oos_folds=OOS_FOLDS,
        **unknown,
    )
    report.done()
    return _result(run, metrics, probabilities, train_oos, bank,
                   seconds=time.perf_counter() - started)


def _phase_costs(n_samples: int, recipe: Recipe) -> dict[str, float]:
    """Each phase's rough cost in image passes, for one progress fraction across them (on
    the bears with the body in ONNX Runtime: decoding 1.2-2 s, the body 4.7 s, the fold
    heads 0.4-0.8 s)."""
    n_views, n_valid = 1 + recipe.augment_views, round(n_samples * recipe.valid_pct)
    n_train = n_samples - n_valid
    return {"decode": 0.3 * n_samples,
            "frozen": n_train * n_views + n_valid,
            "folds": 0.015 * n_train * n_views * recipe.head_epochs,
            "unfrozen": recipe.epochs * (3 * n_train + n_valid),
            "bank": (n_train + n_valid) if recipe.epochs else 0.0}


def _result(run: Prepared, metrics: dict, probabilities: np.ndarray, train_oos: np.ndarray,
            bank: Bank, *, seconds: float) -> TrainResult:
    """The result, positions mapped back to sample indices."""
    oos: list[list[float] | None] = [None] * len(run.samples)
    for rows, positions in ((train_oos, run.train_pos), (probabilities, run.valid_pos)):
        for row, position in zip(rows, positions, strict=True):
            oos[run.kept[position]] = row.astype(float).tolist()
    return TrainResult(
        model=run.model,
        labels=run.labels,
        preprocessing=run.pre,
        metrics=metrics,
        train_indices=[run.kept[p] for p in run.train_pos],
        valid_indices=[run.kept[p] for p in run.valid_pos],
        valid_probabilities=probabilities.astype(float).tolist(),
        seconds=seconds,
        skipped=run.skipped,
        oos_probabilities=oos,
        bank=bank,
        body_onnx=run.body_onnx,
    )
