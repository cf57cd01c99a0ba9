"""Open-set rejection by what the model has seen ("none of these"), free of torch.

A photo's embedding is the square root of the backbone's own ImageNet class probabilities
(at temperature TEMPERATURE), a unit vector; the dot product of two of them is their
Bhattacharyya coefficient, 1 for the same concepts and 0 for none in common. A photo's
similarity is that coefficient with its k-th nearest photo of the bank (the model's training
photos; k = NEIGHBOURS, fewer for small labels). Calibration is out of sample: each training
photo is compared with the bank without its own fold (near-duplicate groups stay in one
fold), and those similarities, sorted, are the reference. A photo's familiarity is the share
of the reference at or below its similarity, so a threshold on it says how many genuine
photos may be rejected: REJECT_PCT by default, an owner's own share otherwise.
bench/unknown.py compares this score with the others tried (pooled features, class means,
Mahalanobis, energy, top probability).
"""

import math
from dataclasses import dataclass

import numpy as np

SCORE = "familiarity"  # model.json's and the metrics' `unknown_score` for this rule
NEIGHBOURS = 20
TEMPERATURE = 0.5  # sharpens the ImageNet probabilities before the square root
REJECT_PCT = 0.03  # share of known photos, out of sample, the threshold may reject
MAX_BANK_ROWS = 4096  # 1000 float16 each on disk: 8 MB at most, 16 MB loaded, ~2 ms a photo
FEW_ROWS = 64  # up to this many embeddings (a request's), products skip BLAS's thread pool


def neighbours_for(labels: np.ndarray, *, most: int = NEIGHBOURS) -> int:
    """The neighbour to compare with: NEIGHBOURS, or fewer when a label has few photos (a
    genuine photo's k-th nearest must still be of its own label, out of sample too)."""
    counts = np.unique(np.asarray(labels), return_counts=True)[1]
    return int(np.clip(counts.min() // 5 if len(counts) else 1, 1, most))


def similarity(embeddings: np.ndarray, bank: np.ndarray, *,
               neighbours: int = NEIGHBOURS) -> np.ndarray:
    """Each embedding's similarity with its `neighbours`-th nearest row of the bank."""
    if not len(bank):
        return np.zeros(len(embeddings), dtype=np.float32)
    k = min(neighbours, len(bank))
    embeddings = np.asarray(embeddings, dtype=np.float32)
    bank = np.asarray(bank, dtype=np.float32)
    if len(embeddings) <= FEW_ROWS:  # waking BLAS's threads costs ms on a busy machine
        dots = np.einsum("ij,kj->ik", embeddings, bank)
    else:  # calibration: many rows, where BLAS pays
        dots = embeddings @ bank.T
    kth = np.partition(dots, len(bank) - k, axis=1)[:, len(bank) - k]
    return np.clip(kth, 0.0, 1.0)


def leave_fold_out_similarity(bank: np.ndarray, folds: np.ndarray, *,
                              neighbours: int = NEIGHBOURS) -> np.ndarray:
    """Each bank row's similarity with the bank without its fold: out of sample, so a photo
    never matches itself or its near-duplicates. The bank seen is smaller by one fold, so
    the neighbour taken is scaled down with it (the k-th of n ~ the k(n-m)/n-th of n-m)."""
    folds = np.asarray(folds)
    out = np.zeros(len(bank), dtype=np.float32)
    for fold in np.unique(folds):
        held, rest = folds == fold, folds != fold
        if not rest.any():  # one fold only: nothing to compare with, nothing to reject
            out[held] = 1.0
            continue
        k = max(1, round(neighbours * rest.sum() / len(bank)))
        out[held] = similarity(bank[held], bank[rest], neighbours=k)
    return out


def calibrate(scores: np.ndarray, *, reject_pct: float = REJECT_PCT) -> dict:
    """The largest threshold (5 decimals, never rounded up) below which at most reject_pct
    of these known photos' scores fall, and the share it rejects."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64))
    if not len(ordered):
        return {"unknown_threshold": 0.0, "unknown_reject_rate": 0.0}
    allowed = int(math.floor(reject_pct * len(ordered)))
    threshold = max(math.floor(float(ordered[allowed]) * 1e5) / 1e5, 0.0)
    return {"unknown_threshold": threshold,
            "unknown_reject_rate": round(float((ordered < threshold).mean()), 5)}


@dataclass(frozen=True)
class Bank:
    """What a model has seen: its training photos' embeddings (unit rows), the neighbour
    compared with, and the reference: each photo's similarity with the bank without its
    fold, sorted."""

    embeddings: np.ndarray
    neighbours: int
    reference: np.ndarray

    @classmethod
    def build(cls, embeddings: np.ndarray, *, labels: np.ndarray, folds: np.ndarray,
              seed: int = 0, max_rows: int = MAX_BANK_ROWS) -> "Bank":
        """The bank of these training photos (at most max_rows, stored as float16 rows) with
        its leave-fold-out reference."""
        rows = bank_rows(labels, max_rows=max_rows, seed=seed)
        bank = unit_rows(np.asarray(embeddings)[rows].astype(np.float16))  # as served
        k = neighbours_for(np.asarray(labels)[rows])
        held_out = leave_fold_out_similarity(bank, np.asarray(folds)[rows], neighbours=k)
        return cls(embeddings=bank, neighbours=k, reference=np.sort(held_out))

    def similarity(self, embeddings: np.ndarray) -> np.ndarray:
        return similarity(embeddings, self.embeddings, neighbours=self.neighbours)

    def familiarity(self, similarities: np.ndarray) -> np.ndarray:
        """The share of the reference at or below each similarity: of the training photos,
        how many were no more like the others (0: stranger than every one of them; 1: as
        like them as the most typical). A threshold t then rejects about t of new genuine
        photos, and a reference photo is rejected exactly when a similarity threshold at the
        same rank would reject it."""
        values = np.asarray(similarities, dtype=self.reference.dtype)
        at_most = np.searchsorted(self.reference, values, side="right")
        return (at_most / max(len(self.reference), 1)).astype(np.float32)

    def calibration(self, *, reject_pct: float = REJECT_PCT) -> dict:
        """The familiarity threshold that rejects at most reject_pct of the training photos
        out of sample, and the share it rejects."""
        return calibrate(self.familiarity(self.reference), reject_pct=reject_pct)


def bank_rows(labels: np.ndarray, *, max_rows: int = MAX_BANK_ROWS, seed: int = 0) -> np.ndarray:
    """Indices of the photos the bank keeps: all of them, or a seeded sample of max_rows
    with every label kept in proportion (sorted)."""
    labels = np.asarray(labels)
    if len(labels) <= max_rows:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    kept = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        share = max(1, max_rows * len(members) // len(labels))
        kept.append(rng.choice(members, size=share, replace=False))
    return np.sort(np.concatenate(kept))


def unit_rows(embeddings: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, float32 (stored float16 bank rows drift a little)."""
    rows = np.asarray(embeddings, dtype=np.float32)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
