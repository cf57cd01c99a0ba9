"""How good a model is on its validation images: error rate, per-class figures, the confusion
matrix and top losses, a row per epoch for the curves, and the "none of these" threshold."""

import math
import time

import numpy as np
import torch
import torch.nn.functional as F

TOP_LOSSES = 16
UNKNOWN_REJECT_PCT = 0.03  # share of correct validation predictions the threshold may reject
UNKNOWN_SCORE = "max_probability"


def classification_metrics(probabilities: np.ndarray, actual: np.ndarray, labels: list[str],
                           keys: list[str]) -> dict:
    """Error rate, accuracy, confusion matrix (rows actual), per-class precision and recall,
    and the TOP_LOSSES validation images the model got most wrong."""
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


def history_row(phase: str, epoch: int, losses: list[float], logits: torch.Tensor,
                targets: torch.Tensor, *, label_smoothing: float, started: float) -> dict:
    """One epoch's point on the training curves (started: its time.perf_counter())."""
    valid_loss = F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)
    error = (logits.argmax(1) != targets).float().mean()
    return {
        "phase": phase,
        "epoch": epoch,
        "train_loss": round(float(np.mean(losses)), 5),
        "valid_loss": round(valid_loss.item(), 5),
        "error_rate": round(error.item(), 5),
        "seconds": round(time.perf_counter() - started, 2),
    }
