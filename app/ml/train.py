"""fastai's fine_tune recipe, built for speed on CPU: a head on cached frozen features, then
optionally all layers with discriminative learning rates and a one-cycle schedule."""

import math
import os
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.transforms import v2

from app.ml.backbones import HEAD_DROP_RATE, create_model, get_spec
from app.ml.images import decode_rgb
from app.ml.preprocess import Preprocessing, center_crop, resize_short_side, to_chw

HEAD_EPOCHS_PER_FROZEN_EPOCH = 8
FEATURE_BATCH = 32
MICRO_BATCH = 8  # BatchNorm stays in eval mode, so splitting a batch changes nothing
TOP_LOSSES = 16
OOS_FOLDS = 5
UNKNOWN_REJECT_PCT = 0.03  # share of correct validation predictions the threshold may reject
UNKNOWN_SCORE = "max_probability"


class TrainingCancelled(Exception):
    """should_stop() asked the training to stop."""


@dataclass
class Recipe:
    backbone: str = "efficientnet_lite0"
    frozen_epochs: int = 1
    epochs: int = 0
    lr: float = 2e-3
    unfrozen_lr: float = 5e-5
    batch_size: int = 32
    valid_pct: float = 0.2
    seed: int = 42
    label_smoothing: float = 0.1
    augment_views: int = 2
    image_size: int = 224

    def __post_init__(self):
        checks = {
            "backbone": isinstance(self.backbone, str) and bool(self.backbone),
            "frozen_epochs": _is_int(self.frozen_epochs) and 1 <= self.frozen_epochs <= 50,
            "epochs": _is_int(self.epochs) and 0 <= self.epochs <= 50,
            "lr": _is_number(self.lr) and 0 < self.lr <= 1,
            "unfrozen_lr": _is_number(self.unfrozen_lr) and 0 < self.unfrozen_lr <= 1,
            "batch_size": _is_int(self.batch_size) and 1 <= self.batch_size <= 1024,
            "valid_pct": _is_number(self.valid_pct) and 0 < self.valid_pct <= 0.5,
            "seed": _is_int(self.seed) and 0 <= self.seed < 2**32,
            "label_smoothing": _is_number(self.label_smoothing)
            and 0 <= self.label_smoothing < 1,
            "augment_views": _is_int(self.augment_views) and 0 <= self.augment_views <= 16,
            "image_size": _is_int(self.image_size) and 32 <= self.image_size <= 1024,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid recipe values: {', '.join(bad)}")

    def to_dict(self) -> dict:
        """JSON-ready form for model.json and job rows."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Recipe":
        """Build from user input; unknown keys and out-of-range values raise ValueError."""
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown recipe keys: {', '.join(sorted(unknown))}")
        return cls(**data)


@dataclass
class Sample:
    key: str
    label: int
    group: str | None = None


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


def split_samples(
    samples: list[Sample], *, valid_pct: float, seed: int
) -> tuple[list[int], list[int]]:
    """Seeded split, stratified per label, that never lets a group straddle both sides."""
    units: dict[str, list[int]] = {}
    for index, sample in enumerate(samples):
        unit = f"g:{sample.group}" if sample.group is not None else f"i:{index}"
        units.setdefault(unit, []).append(index)
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


def train_classifier(
    *,
    samples: list[Sample],
    labels: list[str],
    read_bytes: Callable[[str], bytes],
    recipe: Recipe,
    progress: Callable[[float, str, dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: str | None = None,
    threads: int | None = None,
) -> TrainResult:
    """Fine-tune recipe.backbone on samples; return the fp32 CPU model, its metrics and an
    out-of-sample prediction for every image (K-fold heads for training images, the final
    model for validation images)."""
    started = time.perf_counter()
    report = _Reporter(progress, should_stop)
    n_views, n_valid = 1 + recipe.augment_views, round(len(samples) * recipe.valid_pct)
    n_train_planned = len(samples) - n_valid
    report.plan(frozen=n_train_planned * n_views + n_valid,
                folds=0.02 * n_train_planned * n_views,
                unfrozen=recipe.epochs * (3 * n_train_planned + n_valid))
    data = _prepare(samples, labels, read_bytes, recipe, device, threads, report)
    target, pre, model = data.device, data.pre, data.model
    images, crops, train_pos, valid_pos = data.images, data.crops, data.train_pos, data.valid_pos
    targets = data.targets
    augment = _augmentation(pre)
    history: list[dict] = []
    speed: dict[str, float] = {}

    # Frozen phase: the body runs once per view, the head trains on cached features.
    tick = time.perf_counter()
    n_train = len(train_pos)

    def train_view(i: int) -> np.ndarray:
        position = train_pos[i % n_train]
        return to_chw(crops[position] if i < n_train else augment(images[position]), pre)

    train_features = _features(model, train_view, n_train * n_views, target, report, fp32=False)
    valid_features = _features(model, lambda i: to_chw(crops[valid_pos[i]], pre),
                               len(valid_pos), target, report, fp32=True)
    speed["frozen"] = (n_train * n_views + len(valid_pos)) / (time.perf_counter() - tick)
    head_targets = targets[train_pos].repeat(n_views).to(target)
    valid_targets = targets[valid_pos].to(target)
    _fit_head(model.get_classifier(), train_features, head_targets, valid_features,
              valid_targets, recipe, report, history)
    valid_logits = model.get_classifier()(valid_features).float()
    train_oos = _out_of_sample(train_features, head_targets, n_train,
                               [samples[data.kept[p]].group for p in train_pos],
                               len(labels), recipe, report)

    if recipe.epochs:
        tick = time.perf_counter()
        valid_logits = _fit_unfrozen(model, images, crops, train_pos, valid_pos, targets, pre,
                                     augment, recipe, target, report, history)
        speed["unfrozen"] = recipe.epochs * len(train_pos) / (time.perf_counter() - tick)

    model = model.to("cpu", memory_format=torch.contiguous_format).float().eval()
    valid_logits = valid_logits.detach().cpu().double()
    probabilities = torch.softmax(valid_logits, dim=1).numpy()
    valid_keys = [samples[data.kept[p]].key for p in valid_pos]
    metrics = _metrics(probabilities, targets[valid_pos].numpy(), labels, valid_keys)
    metrics.update(
        train_count=len(train_pos),
        history=history,
        images_per_second={k: round(v, 1) for k, v in speed.items()},
        skipped=data.skipped,
        oos_folds=OOS_FOLDS,
        **unknown_threshold(probabilities, targets[valid_pos].numpy()),
    )
    oos: list[list[float] | None] = [None] * len(samples)
    for row, position in zip(train_oos, train_pos, strict=True):
        oos[data.kept[position]] = row.astype(float).tolist()
    for row, position in zip(probabilities, valid_pos, strict=True):
        oos[data.kept[position]] = row.astype(float).tolist()
    report.done()
    return TrainResult(
        model=model,
        labels=list(labels),
        preprocessing=pre,
        metrics=metrics,
        train_indices=[data.kept[p] for p in train_pos],
        valid_indices=[data.kept[p] for p in valid_pos],
        valid_probabilities=probabilities.astype(float).tolist(),
        seconds=time.perf_counter() - started,
        skipped=data.skipped,
        oos_probabilities=oos,
    )


def lr_find(
    *,
    samples: list[Sample],
    labels: list[str],
    read_bytes: Callable[[str], bytes],
    recipe: Recipe,
    progress: Callable[[float, str, dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: str | None = None,
    threads: int | None = None,
    start_lr: float = 1e-6,
    end_lr: float = 1.0,
    steps: int = 100,
) -> dict:
    """fastai's lr_find for the head on cached frozen features: an exponential learning-rate
    sweep, the smoothed loss curve, and the valley suggestion for recipe.lr."""
    report = _Reporter(progress, should_stop)
    n_train = len(samples) - round(len(samples) * recipe.valid_pct)
    report.plan(frozen=n_train, sweep=0.05 * n_train)
    data = _prepare(samples, labels, read_bytes, recipe, device, threads, report)
    features = _features(data.model, lambda i: to_chw(data.crops[data.train_pos[i]], data.pre),
                         len(data.train_pos), data.device, report, fp32=False)
    targets = data.targets[data.train_pos].to(data.device)
    head = nn.Linear(features.shape[1], len(labels)).to(data.device)
    optimizer = torch.optim.AdamW(head.parameters(), lr=start_lr, weight_decay=0.01)
    generator = torch.Generator().manual_seed(recipe.seed)
    lrs, losses = [], []
    smooth, best = 0.0, float("inf")
    for step in range(steps):
        lr = start_lr * (end_lr / start_lr) ** (step / (steps - 1))
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = torch.randint(len(features), (recipe.batch_size,), generator=generator)
        batch = batch.to(data.device)
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


def unknown_threshold(probabilities: np.ndarray, actual: np.ndarray) -> dict:
    """A "none of these" threshold on the top class probability: the largest that rejects at
    most UNKNOWN_REJECT_PCT of the correct validation predictions."""
    top = probabilities.max(1)
    correct = np.sort(top[probabilities.argmax(1) == actual])
    if not len(correct):
        return {"unknown_threshold": 0.0, "unknown_score": UNKNOWN_SCORE,
                "unknown_reject_rate": 0.0}
    allowed = int(math.floor(UNKNOWN_REJECT_PCT * len(correct)))
    threshold = max(math.floor(float(correct[allowed]) * 1e5) / 1e5, 0.0)  # never rounds up
    return {
        "unknown_threshold": threshold,
        "unknown_score": UNKNOWN_SCORE,
        "unknown_reject_rate": round(float((correct < threshold).mean()), 5),
    }


@dataclass
class _Prepared:
    device: torch.device
    pre: Preprocessing
    model: nn.Module
    images: list
    crops: list
    kept: list[int]
    skipped: list[str]
    train_pos: list[int]
    valid_pos: list[int]
    targets: torch.Tensor


def _prepare(samples, labels, read_bytes, recipe, device, threads, report) -> _Prepared:
    """Check inputs, set threads and seeds, decode every image once, split, build the model."""
    if len(labels) < 2:
        raise ValueError("need at least two labels")
    if any(not 0 <= s.label < len(labels) for s in samples):
        raise ValueError("a sample's label is out of range")
    torch.set_num_threads(threads or owned_cores())
    _seed_everything(recipe.seed)
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    pre = _preprocessing(recipe)
    images, crops, kept, skipped = _decode_all(samples, read_bytes, pre, report)
    train_pos, valid_pos = split_samples([samples[i] for i in kept], valid_pct=recipe.valid_pct,
                                         seed=recipe.seed)
    if not train_pos or not valid_pos:
        raise ValueError("too few images to split into training and validation sets")
    model = create_model(recipe.backbone, num_classes=len(labels), pretrained=True)
    model = model.to(target, memory_format=torch.channels_last).eval()
    return _Prepared(device=target, pre=pre, model=model, images=images, crops=crops, kept=kept,
                     skipped=skipped, train_pos=train_pos, valid_pos=valid_pos,
                     targets=torch.tensor([samples[i].label for i in kept]))


def owned_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, e.g. a container's cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class _Reporter:
    """Turns phase-local progress into one 0..1 fraction and checks for cancellation."""

    def __init__(self, progress, should_stop):
        self.progress, self.should_stop = progress, should_stop
        self.weights: dict[str, float] = {}
        self.offsets: dict[str, float] = {}

    def plan(self, **phase_costs: float) -> None:
        decode = sum(phase_costs.values()) * 0.05 or 1.0
        costs = {"decode": decode, **phase_costs}
        total = sum(costs.values())
        offset = 0.0
        for phase, cost in costs.items():
            self.offsets[phase], self.weights[phase] = offset / total, cost / total
            offset += cost

    def __call__(self, phase: str, done: float, message: str, **extra) -> None:
        if self.should_stop and self.should_stop():
            raise TrainingCancelled(f"cancelled during {phase}")
        if self.progress:
            fraction = self.offsets.get(phase, 0.0) + self.weights.get(phase, 0.0) * done
            self.progress(min(fraction, 1.0), message, {"phase": phase, **extra})

    def done(self) -> None:
        if self.progress:
            self.progress(1.0, "training finished", {"phase": "done"})


def _decode_all(samples, read_bytes, pre, report):
    """Decode every image once: its eval crop (exactly what ONNX serving sees) and a short-side
    pre.resize copy for augmentation."""
    images, crops, kept, skipped = [], [], [], []
    for index, sample in enumerate(samples):
        try:
            image = decode_rgb(read_bytes(sample.key), draft_size=pre.resize)
        except ValueError:
            skipped.append(sample.key)
            continue
        crops.append(center_crop(image, pre))
        images.append(resize_short_side(image, pre))
        kept.append(index)
        if index % 32 == 31 or index == len(samples) - 1:
            report("decode", (index + 1) / len(samples),
                   f"decoding images {index + 1}/{len(samples)}", epoch=0)
    return images, crops, kept, skipped


def _features(model, make_view, count, device, report, *, fp32):
    chunks = []
    for start in range(0, count, FEATURE_BATCH):
        stop = min(start + FEATURE_BATCH, count)
        batch = torch.from_numpy(np.stack([make_view(i) for i in range(start, stop)]))
        batch = _to_device(batch, device)
        with torch.inference_mode(), _autocast(device, enabled=not fp32):
            chunks.append(model.forward_head(model.forward_features(batch), pre_logits=True))
        report("frozen", 0.9 * stop / count, f"frozen features {stop}/{count}", epoch=0)
    return torch.cat(chunks).float()


def _fit_head(head, features, targets, valid_features, valid_targets, recipe, report, history):
    epochs = recipe.frozen_epochs * HEAD_EPOCHS_PER_FROZEN_EPOCH

    def on_epoch(epoch: int, losses: list[float], tick: float) -> None:
        with torch.inference_mode():
            logits = head(valid_features)
        row = _history_row("frozen", epoch + 1, losses, logits, valid_targets, recipe, tick)
        history.append(row)
        report("frozen", 0.9 + 0.1 * (epoch + 1) / epochs,
               f"head epoch {epoch + 1}/{epochs}, loss {row['train_loss']:.3f}, "
               f"error {row['error_rate']:.3f}", epoch=epoch + 1, history=row)

    _train_head(head, features, targets, recipe, on_epoch)


def _train_head(head, features, targets, recipe, on_epoch=None):
    """AdamW with a one-cycle schedule on cached features, dropout as the head's own."""
    epochs = recipe.frozen_epochs * HEAD_EPOCHS_PER_FROZEN_EPOCH
    steps = math.ceil(len(features) / recipe.batch_size)
    optimizer = torch.optim.AdamW(head.parameters(), lr=recipe.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr,
                                                   total_steps=epochs * steps)
    for epoch in range(epochs):
        tick = time.perf_counter()
        order = torch.randperm(len(features)).to(features.device)
        losses = []
        with torch.enable_grad():
            for step in range(steps):
                batch = order[step * recipe.batch_size:(step + 1) * recipe.batch_size]
                dropped = F.dropout(features[batch], p=HEAD_DROP_RATE, training=True)
                loss = F.cross_entropy(head(dropped), targets[batch],
                                       label_smoothing=recipe.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                losses.append(loss.item())
        if on_epoch:
            on_epoch(epoch, losses, tick)


def _out_of_sample(features, targets, n_train, groups, n_classes, recipe, report):
    """Each training image's probabilities from a head fitted without its fold (K-fold over
    near-duplicate groups, on the cached features: every view of a held-out image is left out,
    and its eval view is predicted)."""
    folds = fold_assignment(groups, folds=OOS_FOLDS, seed=recipe.seed)
    count = max(folds) + 1
    row_fold = torch.tensor(folds)[torch.arange(len(features)) % n_train].to(features.device)
    eval_fold = torch.tensor(folds).to(features.device)
    out = np.zeros((n_train, n_classes))
    for k in range(count):
        head = nn.Linear(features.shape[1], n_classes).to(features.device)
        if count > 1:
            keep = row_fold != k
            _train_head(head, features[keep], targets[keep], recipe)
        else:  # one group only: nothing to hold out, the in-sample head is all there is
            _train_head(head, features, targets, recipe)
        with torch.inference_mode():
            held = eval_fold == k
            logits = head(features[:n_train][held]).double()
            out[held.cpu().numpy()] = torch.softmax(logits, dim=1).cpu().numpy()
        report("folds", (k + 1) / count, f"out-of-sample predictions: fold {k + 1}/{count}")
    return out


def fold_assignment(groups: list[str | None], *, folds: int, seed: int) -> list[int]:
    """A fold per item, seeded and balanced in size, never splitting a group across folds."""
    units: dict[str, list[int]] = {}
    for index, group in enumerate(groups):
        units.setdefault(f"g:{group}" if group is not None else f"i:{index}", []).append(index)
    order = list(units.values())
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


def _fit_unfrozen(model, images, crops, train_pos, valid_pos, targets, pre, augment, recipe, device,
                  report, history):
    groups = _discriminative_groups(model, recipe.unfrozen_lr)
    optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
    steps = math.ceil(len(train_pos) / recipe.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[g["lr"] for g in groups], total_steps=recipe.epochs * steps,
        pct_start=0.25)
    scaler = torch.amp.GradScaler("cuda") if _autocast_dtype(device) == torch.float16 else None
    valid_targets = targets[valid_pos].to(device)
    logits = None
    for epoch in range(recipe.epochs):
        tick = time.perf_counter()
        model.train()
        _freeze_batchnorm(model)
        order = torch.randperm(len(train_pos)).tolist()
        losses = []
        for step in range(steps):
            chosen = [train_pos[i] for i in order[step * recipe.batch_size:
                                                   (step + 1) * recipe.batch_size]]
            optimizer.zero_grad(set_to_none=True)
            loss = torch.zeros(())
            for start in range(0, len(chosen), MICRO_BATCH):  # bounds activation memory
                part = chosen[start:start + MICRO_BATCH]
                batch = torch.from_numpy(np.stack([to_chw(augment(images[p]), pre) for p in part]))
                batch = _to_device(batch, device)
                with _autocast(device):
                    part_loss = F.cross_entropy(model(batch).float(), targets[part].to(device),
                                                label_smoothing=recipe.label_smoothing)
                part_loss = part_loss * (len(part) / len(chosen))
                (scaler.scale(part_loss) if scaler else part_loss).backward()
                loss = loss + part_loss.detach().cpu()
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            schedule.step()
            losses.append(loss.item())
            report("unfrozen", (epoch + (step + 1) / steps) / recipe.epochs,
                   f"unfrozen epoch {epoch + 1}/{recipe.epochs}, batch {step + 1}/{steps}, "
                   f"loss {loss.item():.3f}", epoch=epoch + 1)
        model.eval()
        views = [to_chw(crops[p], pre) for p in valid_pos]
        logits = _logits(model, views, device)
        row = _history_row("unfrozen", epoch + 1, losses, logits, valid_targets, recipe, tick)
        history.append(row)
        report("unfrozen", (epoch + 1) / recipe.epochs,
               f"unfrozen epoch {epoch + 1}/{recipe.epochs} done, error "
               f"{row['error_rate']:.3f}", epoch=epoch + 1, history=row)
    return logits


def _logits(model, views, device):
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(views), FEATURE_BATCH):
            batch = torch.from_numpy(np.stack(views[start:start + FEATURE_BATCH]))
            chunks.append(model(_to_device(batch, device)).float())
    return torch.cat(chunks)


def _to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Channels-last on the device; through pinned memory, without blocking, on a GPU."""
    if device.type == "cuda":
        return batch.pin_memory().to(device, non_blocking=True, memory_format=torch.channels_last)
    return batch.to(device, memory_format=torch.channels_last)


def _discriminative_groups(model, top_lr):
    """Parameter groups from the stem up to the head, learning rates rising geometrically."""
    stages = [[model.conv_stem, model.bn1], *[[block] for block in model.blocks],
              [model.conv_head, model.bn2], [model.get_classifier()]]
    low = top_lr / 100
    ratio = (top_lr / low) ** (1 / (len(stages) - 1))
    return [
        {"params": [p for module in stage for p in module.parameters()], "lr": low * ratio**i}
        for i, stage in enumerate(stages)
    ]


def _freeze_batchnorm(model):
    """Keep BatchNorm statistics from ImageNet: small noisy batches only hurt them."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def _history_row(phase, epoch, losses, logits, targets, recipe, tick):
    valid_loss = F.cross_entropy(logits.float(), targets, label_smoothing=recipe.label_smoothing)
    error = (logits.argmax(1) != targets).float().mean()
    return {
        "phase": phase,
        "epoch": epoch,
        "train_loss": round(float(np.mean(losses)), 5),
        "valid_loss": round(valid_loss.item(), 5),
        "error_rate": round(error.item(), 5),
        "seconds": round(time.perf_counter() - tick, 2),
    }


def _metrics(probabilities, actual, labels, keys):
    predicted = probabilities.argmax(1)
    n = len(labels)
    confusion = np.zeros((n, n), dtype=int)
    np.add.at(confusion, (actual, predicted), 1)
    per_class = {}
    for i, label in enumerate(labels):
        called, support = confusion[:, i].sum(), confusion[i].sum()
        per_class[label] = {
            "precision": round(float(confusion[i, i] / called), 5) if called else 0.0,
            "recall": round(float(confusion[i, i] / support), 5) if support else 0.0,
            "support": int(support),
        }
    losses = -np.log(np.clip(probabilities[np.arange(len(actual)), actual], 1e-12, None))
    worst = np.argsort(-losses, kind="stable")[:TOP_LOSSES]
    accuracy = float((predicted == actual).mean())
    return {
        "error_rate": round(1 - accuracy, 5),
        "accuracy": round(accuracy, 5),
        "valid_count": len(actual),
        "confusion_matrix": confusion.tolist(),
        "per_class": per_class,
        "top_losses": [
            {
                "key": keys[i],
                "actual": labels[actual[i]],
                "predicted": labels[predicted[i]],
                "confidence": round(float(probabilities[i, predicted[i]]), 5),
                "loss": round(float(losses[i]), 5),
            }
            for i in worst
        ],
    }


def _augmentation(pre: Preprocessing) -> Callable[[Image.Image], Image.Image]:
    return v2.Compose([
        v2.RandomResizedCrop(pre.input_size, scale=(0.5, 1.0),
                             interpolation=v2.InterpolationMode.BICUBIC),
        v2.RandomHorizontalFlip(),
        v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
    ])


def _preprocessing(recipe: Recipe) -> Preprocessing:
    base = get_spec(recipe.backbone).preprocessing
    if recipe.image_size == base.input_size:
        return base
    resize = round(recipe.image_size * base.resize / base.input_size)
    return replace(base, input_size=recipe.image_size, resize=resize)


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and _cpu_has_fast_bf16():
        return torch.bfloat16
    return None


def _autocast(device: torch.device, *, enabled: bool = True):
    dtype = _autocast_dtype(device)
    if not enabled or dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _cpu_has_fast_bf16() -> bool:
    cpu = torch.cpu
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - third-party code may draw from the legacy global
    torch.manual_seed(seed)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
