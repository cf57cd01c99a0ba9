"""fastai's lr_find for the head on cached frozen features, and its valley suggestion."""

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from app.ml.backbones import HEAD_DROP_RATE
from app.ml.head import extract_features
from app.ml.prepare import prepare
from app.ml.preprocess import to_chw
from app.ml.progress import ProgressCallback, Reporter
from app.ml.recipe import Recipe
from app.ml.split import Sample


def lr_find(
    *,
    samples: list[Sample],
    labels: list[str],
    read_bytes: Callable[[str], bytes],
    recipe: Recipe,
    progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: str | None = None,
    threads: int | None = None,
    start_lr: float = 1e-6,
    end_lr: float = 1.0,
    steps: int = 100,
) -> dict:
    """An exponential learning-rate sweep of a new head, the smoothed loss curve, and the
    valley suggestion for recipe.lr: {lrs, losses, suggestion}."""
    report = Reporter(progress, should_stop)
    n_train = len(samples) - round(len(samples) * recipe.valid_pct)
    report.plan(frozen=n_train, sweep=0.05 * n_train)
    run = prepare(samples=samples, labels=labels, read_bytes=read_bytes, recipe=recipe,
                  report=report, device=device, threads=threads)
    count = len(run.train_pos)
    features = extract_features(
        run.model, lambda i: to_chw(run.crops[run.train_pos[i]], run.pre), count, run.device,
        on_batch=lambda done: report("frozen", 0.9 * done / count,
                                     f"frozen features {done}/{count}", epoch=0))
    targets = run.targets[run.train_pos].to(run.device)
    head = nn.Linear(features.shape[1], len(labels)).to(run.device)
    optimizer = torch.optim.AdamW(head.parameters(), lr=start_lr, weight_decay=0.01)
    generator = torch.Generator().manual_seed(recipe.seed)
    lrs, losses = [], []
    smooth, best = 0.0, float("inf")
    for step in range(steps):
        lr = start_lr * (end_lr / start_lr) ** (step / (steps - 1))
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = torch.randint(len(features), (recipe.batch_size,), generator=generator)
        batch = batch.to(run.device)
        with torch.enable_grad():
            dropped = F.dropout(features[batch], p=HEAD_DROP_RATE, training=True)
            loss = F.cross_entropy(head(dropped), targets[batch],
                                   label_smoothing=recipe.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        smooth = 0.98 * smooth + 0.02 * loss.item()
        value = smooth / (1 - 0.98 ** (step + 1))
        if not math.isfinite(value) or value > 4 * best:
            break
        best = min(best, value)
        lrs.append(lr)
        losses.append(value)
        report("sweep", (step + 1) / steps, f"lr_find step {step + 1}/{steps}, lr {lr:.2e}")
    report.done()
    return {"lrs": [float(f"{v:.4g}") for v in lrs], "losses": [round(v, 5) for v in losses],
            "suggestion": float(f"{valley(lrs, losses):.3g}")}


def valley(lrs: list[float], losses: list[float]) -> float:
    """fastai's valley: the learning rate two thirds down the longest falling run of the loss."""
    if len(losses) < 2:
        return lrs[0] if lrs else 1e-3
    n = len(losses)
    run = [1] * n
    max_start = max_end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and run[i] < run[j] + 1:
                run[i] = run[j] + 1
            if run[max_end] < run[i]:
                max_end, max_start = i, i - run[i]
    sections = (max_end - max_start) / 3
    return float(lrs[max_start + int(sections) + int(sections / 2)])
