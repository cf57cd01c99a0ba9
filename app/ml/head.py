"""The frozen phase: the pretrained body runs once per view of each image, then linear heads
train on the cached features: the model's own head, and K-fold heads whose predictions for
the training images are out of sample; and the bank of the training photos' embeddings that
"none of these" compares a new photo with (app.ml.novelty)."""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from app.ml.backbones import HEAD_DROP_RATE, imagenet_head
from app.ml.device import autocast, single_thread, to_device
from app.ml.metrics import history_row
from app.ml.novelty import SCORE, TEMPERATURE, Bank
from app.ml.prepare import Prepared
from app.ml.preprocess import to_chw
from app.ml.recipe import Recipe
from app.ml.split import fold_assignment

FEATURE_BATCH = 32
OOS_FOLDS = 5


@dataclass
class FrozenFeatures:
    """The body's pre-logits features. Training rows come in n_views blocks of n_train (eval
    crops first, then augmented views), so row i is training image i % n_train."""

    train: torch.Tensor
    train_targets: torch.Tensor
    valid: torch.Tensor
    valid_targets: torch.Tensor
    # the eval crops' embeddings ("none of these"), when the body graph gave them in one pass
    train_embedding: np.ndarray | None = None
    valid_embedding: np.ndarray | None = None


def frozen_features(run: Prepared) -> FrozenFeatures:
    """Features of every training view and of each validation image's eval crop."""
    started = time.perf_counter()
    n_train, n_valid = len(run.train_pos), len(run.valid_pos)
    total = n_train * run.n_views + n_valid

    def train_view(i: int) -> np.ndarray:
        position = run.train_pos[i % n_train]
        image = run.crops[position] if i < n_train else run.augment(run.images[position])
        return to_chw(image, run.pre)

    def on_batch(done: int) -> None:
        run.report("frozen", 0.9 * done / total, f"frozen features {done}/{total}", epoch=0)

    if run.body_onnx is not None:
        train, train_emb = onnx_features(run, train_view, n_train * run.n_views, on_batch)
        valid, valid_emb = onnx_features(
            run, lambda i: to_chw(run.crops[run.valid_pos[i]], run.pre), n_valid,
            lambda done: on_batch(n_train * run.n_views + done))
        train_emb = train_emb[:n_train]
    else:
        train = extract_features(run.model, train_view, n_train * run.n_views, run.device,
                                 on_batch=on_batch)
        valid = extract_features(run.model, lambda i: to_chw(run.crops[run.valid_pos[i]],
                                                             run.pre),
                                 n_valid, run.device, fp32=True,
                                 on_batch=lambda done: on_batch(n_train * run.n_views + done))
        train_emb = valid_emb = None
    run.speed["frozen"] = total / (time.perf_counter() - started)
    return FrozenFeatures(train=train.to(run.device), valid=valid.to(run.device),
                          train_targets=run.targets[run.train_pos].repeat(run.n_views)
                          .to(run.device),
                          valid_targets=run.targets[run.valid_pos].to(run.device),
                          train_embedding=train_emb, valid_embedding=valid_emb)


def onnx_features(run: Prepared, make_view: Callable[[int], np.ndarray], count: int,
                  on_batch: Callable[[int], None]) -> tuple[torch.Tensor, np.ndarray]:
    """Features and embeddings of views 0..count-1 from the body's cached graph, fp32."""
    from app.ml.body import BODY_OUTPUTS, session

    body = session(run.body_onnx, run.threads)
    features, embeddings = [], []
    for start in range(0, count, FEATURE_BATCH):
        stop = min(start + FEATURE_BATCH, count)
        batch = np.stack([make_view(i) for i in range(start, stop)])
        feature, embedding = body.run(list(BODY_OUTPUTS), {"input": batch})
        features.append(feature)
        embeddings.append(embedding)
        on_batch(stop)
    if not features:
        return torch.zeros(0, 0), np.zeros((0, 0), np.float32)
    return torch.from_numpy(np.concatenate(features)), np.concatenate(embeddings)


def extract_features(model: nn.Module, make_view: Callable[[int], np.ndarray], count: int,
                     device: torch.device, *, fp32: bool = False,
                     on_batch: Callable[[int], None] | None = None) -> torch.Tensor:
    """Pre-logits features of views 0..count-1, FEATURE_BATCH at a time."""
    chunks = []
    for start in range(0, count, FEATURE_BATCH):
        stop = min(start + FEATURE_BATCH, count)
        batch = torch.from_numpy(np.stack([make_view(i) for i in range(start, stop)]))
        batch = to_device(batch, device)
        with torch.inference_mode(), autocast(device, enabled=not fp32):
            chunks.append(model.forward_head(model.forward_features(batch), pre_logits=True))
        if on_batch:
            on_batch(stop)
    return torch.cat(chunks).float()


def fit_head(run: Prepared, features: FrozenFeatures) -> torch.Tensor:
    """Train the model's own head on the cached features; its validation logits."""
    head, epochs = run.model.get_classifier(), run.recipe.head_epochs

    def on_epoch(epoch: int, losses: list[float], started: float) -> None:
        with torch.inference_mode():
            logits = head(features.valid)
        row = history_row("frozen", epoch + 1, losses, logits, features.valid_targets,
                          label_smoothing=run.recipe.label_smoothing, started=started)
        run.history.append(row)
        run.report("frozen", 0.9 + 0.1 * (epoch + 1) / epochs,
                   f"head epoch {epoch + 1}/{epochs}, loss {row['train_loss']:.3f}, "
                   f"error {row['error_rate']:.3f}", epoch=epoch + 1, history=row)

    train_head(head, features.train, features.train_targets, run.recipe, on_epoch)
    with torch.no_grad():
        return head(features.valid).float()


def out_of_sample(run: Prepared, features: FrozenFeatures) -> np.ndarray:
    """Each training image's probabilities from a head fitted without its fold."""
    folds = fold_assignment(run.groups(run.train_pos), folds=OOS_FOLDS, seed=run.recipe.seed)

    def on_fold(k: int, count: int) -> None:
        run.report("folds", (k + 1) / count, f"out-of-sample predictions: fold {k + 1}/{count}")

    return fold_probabilities(features.train, features.train_targets, folds,
                              n_classes=len(run.labels), recipe=run.recipe, on_fold=on_fold)


def fold_probabilities(features: torch.Tensor, targets: torch.Tensor, folds: list[int], *,
                       n_classes: int, recipe: Recipe,
                       on_fold: Callable[[int, int], None] | None = None) -> np.ndarray:
    """K-fold heads on cached features (folds: one per training image, whose views are rows
    i % len(folds)): every view of a held-out image is left out, and its first view (the eval
    crop) is predicted."""
    n_train, count = len(folds), max(folds) + 1
    row_fold = torch.tensor(folds)[torch.arange(len(features)) % n_train].to(features.device)
    eval_fold = torch.tensor(folds).to(features.device)
    out = np.zeros((n_train, n_classes))
    for k in range(count):
        head = nn.Linear(features.shape[1], n_classes).to(features.device)
        if count > 1:
            keep = row_fold != k
            train_head(head, features[keep], targets[keep], recipe)
        else:  # one group only: nothing to hold out, the in-sample head is all there is
            train_head(head, features, targets, recipe)
        with torch.inference_mode():
            held = eval_fold == k
            logits = head(features[:n_train][held]).double()
            out[held.cpu().numpy()] = torch.softmax(logits, dim=1).cpu().numpy()
        if on_fold:
            on_fold(k, count)
    return out


def train_head(head: nn.Module, features: torch.Tensor, targets: torch.Tensor, recipe: Recipe,
               on_epoch: Callable[[int, list[float], float], None] | None = None) -> None:
    """recipe.head_epochs passes over the cached features: AdamW with a one-cycle schedule,
    dropout as the head's own. on_epoch(epoch, batch losses, its start time)."""
    steps = math.ceil(len(features) / recipe.batch_size)
    optimizer = torch.optim.AdamW(head.parameters(), lr=recipe.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr,
                                                   total_steps=recipe.head_epochs * steps)
    with single_thread(features.device):
        _head_epochs(head, features, targets, recipe, steps, optimizer, schedule, on_epoch)


def _head_epochs(head, features, targets, recipe, steps, optimizer, schedule, on_epoch):
    for epoch in range(recipe.head_epochs):
        started = time.perf_counter()
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
            on_epoch(epoch, losses, started)


class Concepts(nn.Module):
    """Pre-logits features -> the photo's embedding: the square root of the backbone's own
    ImageNet class probabilities at TEMPERATURE (unit length; app.ml.novelty)."""

    def __init__(self, imagenet: nn.Module, temperature: float = TEMPERATURE):
        super().__init__()
        self.imagenet = imagenet
        self.temperature = temperature

    @classmethod
    def of_backbone(cls, name: str) -> "Concepts":
        return cls(imagenet_head(name)).eval()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(torch.softmax(self.imagenet(features) / self.temperature, dim=1))


def photo_bank(run: Prepared, features: FrozenFeatures) -> tuple[Bank, dict]:
    """The bank of the training photos' embeddings, calibrated on the bank without each
    photo's fold (the out-of-sample folds), and the calibration's figures for the metrics.
    After an unfrozen phase the body has changed, so the photos are embedded again."""
    n_train, n_valid = len(run.train_pos), len(run.valid_pos)
    train, valid = features.train[:n_train], features.valid  # eval crops, rows in order
    if run.recipe.epochs:
        run.model.eval()
        crops = [run.crops[p] for p in [*run.train_pos, *run.valid_pos]]
        fresh = extract_features(
            run.model, lambda i: to_chw(crops[i], run.pre), len(crops), run.device, fp32=True,
            on_batch=lambda done: run.report("bank", done / len(crops),
                                             f"embedding the photos {done}/{len(crops)}"))
        train, valid = fresh[:n_train], fresh[n_train:n_train + n_valid]
    if features.train_embedding is not None and not run.recipe.epochs:
        train_emb, valid_emb = features.train_embedding, features.valid_embedding
    else:
        concepts = Concepts.of_backbone(run.recipe.backbone).to(run.device)
        with torch.inference_mode():
            train_emb = concepts(train.float()).cpu().numpy()
            valid_emb = concepts(valid.float()).cpu().numpy()
    folds = fold_assignment(run.groups(run.train_pos), folds=OOS_FOLDS, seed=run.recipe.seed)
    bank = Bank.build(train_emb, labels=run.targets[run.train_pos].numpy(),
                      folds=np.asarray(folds), seed=run.recipe.seed)
    calibrated = bank.calibration()
    valid_familiarity = bank.familiarity(bank.similarity(valid_emb))
    return bank, {
        "unknown_score": SCORE,
        **calibrated,  # the threshold on familiarity, and the share of training photos below
        "unknown_valid_reject_rate": round(float(
            (valid_familiarity < calibrated["unknown_threshold"]).mean()), 5) if n_valid else 0.0,
        "unknown_neighbours": bank.neighbours,
        "unknown_bank_rows": len(bank.embeddings),
    }
