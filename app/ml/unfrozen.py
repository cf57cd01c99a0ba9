"""The unfrozen phase (fastai's fine_tune second half): all layers train on augmented images,
with discriminative learning rates and a one-cycle schedule."""

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from app.ml.device import autocast, autocast_dtype, to_device
from app.ml.head import FEATURE_BATCH
from app.ml.metrics import history_row
from app.ml.prepare import Prepared
from app.ml.preprocess import to_chw

MICRO_BATCH = 8  # BatchNorm stays in eval mode, so splitting a batch changes nothing


def fit_unfrozen(run: Prepared) -> torch.Tensor:
    """recipe.epochs epochs of the whole model; the last epoch's validation logits."""
    recipe, model, device = run.recipe, run.model, run.device
    started_phase = time.perf_counter()
    groups = discriminative_groups(model, recipe.unfrozen_lr)
    optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
    steps = math.ceil(len(run.train_pos) / recipe.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[g["lr"] for g in groups], total_steps=recipe.epochs * steps,
        pct_start=0.25)
    scaler = (torch.amp.GradScaler("cuda")
              if autocast_dtype(device, training=True) == torch.float16 else None)
    valid_targets = run.targets[run.valid_pos].to(device)
    logits = None
    for epoch in range(recipe.epochs):
        started = time.perf_counter()
        model.train()
        freeze_batchnorm(model)
        order = torch.randperm(len(run.train_pos)).tolist()
        losses = []
        for step in range(steps):
            chosen = [run.train_pos[i] for i in order[step * recipe.batch_size:
                                                       (step + 1) * recipe.batch_size]]
            loss = _step(run, chosen, optimizer, scaler)
            schedule.step()
            losses.append(loss)
            run.report("unfrozen", (epoch + (step + 1) / steps) / recipe.epochs,
                       f"unfrozen epoch {epoch + 1}/{recipe.epochs}, batch {step + 1}/{steps}, "
                       f"loss {loss:.3f}", epoch=epoch + 1)
        model.eval()
        logits = predict_logits(model, [to_chw(run.crops[p], run.pre) for p in run.valid_pos],
                                device)
        row = history_row("unfrozen", epoch + 1, losses, logits, valid_targets,
                          label_smoothing=recipe.label_smoothing, started=started)
        run.history.append(row)
        run.report("unfrozen", (epoch + 1) / recipe.epochs,
                   f"unfrozen epoch {epoch + 1}/{recipe.epochs} done, error "
                   f"{row['error_rate']:.3f}", epoch=epoch + 1, history=row)
    run.speed["unfrozen"] = recipe.epochs * len(run.train_pos) / (
        time.perf_counter() - started_phase)
    return logits


def _step(run: Prepared, chosen: list[int], optimizer, scaler) -> float:
    """One optimizer step on a batch of augmented images, in micro-batches (bounds activation
    memory); the batch's loss."""
    optimizer.zero_grad(set_to_none=True)
    loss = torch.zeros(())
    for start in range(0, len(chosen), MICRO_BATCH):
        part = chosen[start:start + MICRO_BATCH]
        batch = torch.from_numpy(np.stack([to_chw(run.augment(run.images[p]), run.pre)
                                           for p in part]))
        batch = to_device(batch, run.device)
        with autocast(run.device, training=True):
            part_loss = F.cross_entropy(run.model(batch).float(),
                                        run.targets[part].to(run.device),
                                        label_smoothing=run.recipe.label_smoothing)
        part_loss = part_loss * (len(part) / len(chosen))
        (scaler.scale(part_loss) if scaler else part_loss).backward()
        loss = loss + part_loss.detach().cpu()
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return loss.item()


def predict_logits(model: nn.Module, views: list[np.ndarray],
                   device: torch.device) -> torch.Tensor:
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(views), FEATURE_BATCH):
            batch = torch.from_numpy(np.stack(views[start:start + FEATURE_BATCH]))
            chunks.append(model(to_device(batch, device)).float())
    return torch.cat(chunks)


def discriminative_groups(model: nn.Module, top_lr: float) -> list[dict]:
    """Parameter groups from the stem up to the head, learning rates rising geometrically."""
    stages = [[model.conv_stem, model.bn1], *[[block] for block in model.blocks],
              [model.conv_head, model.bn2], [model.get_classifier()]]
    low = top_lr / 100
    ratio = (top_lr / low) ** (1 / (len(stages) - 1))
    return [
        {"params": [p for module in stage for p in module.parameters()], "lr": low * ratio**i}
        for i, stage in enumerate(stages)
    ]


def freeze_batchnorm(model: nn.Module) -> None:
    """Keep BatchNorm statistics from ImageNet: small noisy batches only hurt them."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
