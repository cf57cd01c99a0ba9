"""Serve a model version with ONNX Runtime on CPU; never imports torch.

model.onnx takes `input` (float32 NCHW, prepare_batch's output) and returns `logits`,
`probabilities` (softmax already applied) and, in versions with a feature bank
(`features.npy`), the photo's `embedding` from the same pass; predict_proba returns the
probabilities, forward adds each photo's familiarity with the training photos
(app.ml.novelty).
"""

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from app.ml.novelty import Bank, unit_rows
from app.ml.preprocess import Preprocessing, center_crop, probe_input

PROBE_TOLERANCE = 1e-4
# Rows per ONNX Runtime call: a larger batch runs in slices. More rows per call cost more
# CPU per image here (Lite0 at 224 px on 2 cores: ~11 ms for 1 or 2 rows, 12.5-13.5 ms for
# 4 or 8, their activations outgrowing the cache), and the memory arena keeps what the
# largest call needed.
MAX_RUN_ROWS = 2


class ModelLoadError(RuntimeError):
    """A model folder is missing, malformed, or its graph disagrees with its probe."""


class Classifier:
    """A loaded model version: load once, predict many."""

    def __init__(self, *, session: ort.InferenceSession, meta: dict, bank: Bank | None = None):
        self.session = session
        self.meta = meta
        self.labels: list[str] = list(meta["labels"])
        self.preprocessing = Preprocessing.from_dict(meta["preprocessing"])
        self.bank = bank  # what the model has seen; None for versions made before banks

    @property
    def nbytes(self) -> int:
        """Memory the bank takes (the ONNX graph is counted by its file)."""
        return 0 if self.bank is None else self.bank.embeddings.nbytes

    @classmethod
    def load(cls, model_dir: Path, *, threads: int | None = None) -> "Classifier":
        """Open model.onnx, check it against model.json's probe, or raise ModelLoadError."""
        model_dir = Path(model_dir)
        try:
            meta = json.loads((model_dir / "model.json").read_text())
            session = ort.InferenceSession(
                str(model_dir / "model.onnx"), sess_options=session_options(threads),
                providers=["CPUExecutionProvider"],
            )
            classifier = cls(session=session, meta=meta, bank=_bank(model_dir, meta))
            expected = np.asarray(meta["probe"]["probabilities"], dtype=np.float64)
            got, embedding = classifier._run(probe_input(classifier.preprocessing))
        except Exception as exc:  # onnxruntime raises its own unrelated exception types
            raise ModelLoadError(f"cannot load model from {model_dir}: {exc}") from exc
        if got[0].shape != expected.shape or np.abs(got[0] - expected).max() > PROBE_TOLERANCE:
            raise ModelLoadError(f"model.onnx in {model_dir} disagrees with its probe")
        if embedding is not None and embedding.shape[1] != classifier.bank.embeddings.shape[1]:
            raise ModelLoadError(f"the feature bank in {model_dir} does not fit its model")
        return classifier

    def predict_proba(self, images: list[Image.Image]) -> np.ndarray:
        """Class probabilities, N x len(labels), in labels order."""
        if not images:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return self._run(self.prepare(images))[0]

    def prepare(self, images: list[Image.Image]) -> np.ndarray:
        """The model's input for these images (float32 NCHW), so forward can run elsewhere."""
        return prepare_batch(images, self.preprocessing)

    def scores(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Class probabilities and (versions with a bank) each photo's similarity with the
        training photos, for a prepared batch: one ONNX Runtime call."""
        probabilities, embedding = self._run(batch)
        if embedding is None:
            return probabilities, None
        # a row at a time: an answer never depends on the batch it was computed in
        return probabilities, np.concatenate([self.bank.similarity(row[None])
                                              for row in embedding])

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """One row per image of a prepared batch: its class probabilities, then (versions
        with a bank) its familiarity with the training photos; `split` takes them apart.
        One array, so a micro-batch is cut into requests by rows."""
        probabilities, near = self.scores(batch)
        if near is None:
            return probabilities
        familiarity = self.bank.familiarity(near).astype(probabilities.dtype)
        return np.column_stack([probabilities, familiarity])

    def split(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """forward's rows as (probabilities, familiarities or None without a bank)."""
        n = len(self.labels)
        return rows[:, :n], (rows[:, n] if rows.shape[1] > n else None)

    def predict(self, images: list[Image.Image]) -> list[dict]:
        """Top label, its confidence, all probabilities and (versions with a bank) the
        similarity and familiarity with the training photos, for each image."""
        if not images:
            return []
        probabilities, near = self.scores(self.prepare(images))
        results = []
        for i, row in enumerate(probabilities):
            best = int(row.argmax())
            results.append({
                "label": self.labels[best],
                "confidence": float(row[best]),
                "probabilities": {label: float(p) for label, p in zip(self.labels, row,
                                                                      strict=True)},
                **({} if near is None else {
                    "similarity": float(near[i]),
                    "familiarity": float(self.bank.familiarity(near[i:i + 1])[0])}),
            })
        return results

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities, and the embedding when there is a bank to compare it with."""
        names = ["probabilities"] if self.bank is None else ["probabilities", "embedding"]
        batch = np.asarray(batch, dtype=np.float32)
        if len(batch) > MAX_RUN_ROWS:
            parts = [self._run(batch[i:i + MAX_RUN_ROWS])
                     for i in range(0, len(batch), MAX_RUN_ROWS)]
            return (np.concatenate([p[0] for p in parts]),
                    None if self.bank is None else np.concatenate([p[1] for p in parts]))
        out = self.session.run(names, {"input": batch})
        return out[0], (out[1] if self.bank is not None else None)


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """ONNX Runtime's options for serving: full graph optimisation, operators run one after
    another (`threads` of them, default the cores this process may use, split each one)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
    options.inter_op_num_threads = 1
    # A web process also decodes images on these cores: idle ORT threads must sleep, not
    # spin (spinning halved throughput on a busy 2-core machine). The memory arena stays on
    # (the default): without it every call maps and faults in its activations afresh, a
    # quarter more CPU per image under load; _run's slices bound what it keeps.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def prepare_batch(images: list[Image.Image], pre: Preprocessing) -> np.ndarray:
    """preprocess_batch() written straight into one float32 NCHW array: each crop's uint8
    channels scaled and shifted in place (x / 255 - mean) / std as one multiply-add, no
    float HWC copy, no transpose, no stack (a tenth of the time; equal within 1e-6)."""
    size = pre.input_size
    batch = np.empty((len(images), 3, size, size), dtype=np.float32)
    std = np.asarray(pre.std, dtype=np.float64)
    scale = (1 / (255 * std)).astype(np.float32)
    shift = (-np.asarray(pre.mean, dtype=np.float64) / std).astype(np.float32)
    for out, image in zip(batch, images, strict=True):
        pixels = np.asarray(center_crop(image, pre))
        for c in range(3):
            np.multiply(pixels[:, :, c], scale[c], out=out[c])
            out[c] += shift[c]
    return batch


def _bank(model_dir: Path, meta: dict) -> Bank | None:
    """The version's feature bank, or None for versions made before it (or without one)."""
    novelty = meta.get("novelty")
    if not novelty or "embedding" not in meta.get("onnx", {}).get("outputs", []):
        return None
    name = Path(novelty["bank"]).name  # a file of the folder, never a path elsewhere
    embeddings = np.load(model_dir / name, allow_pickle=False)
    if embeddings.ndim != 2 or not len(embeddings):
        raise ValueError(f"{name} is not a feature bank")
    return Bank(embeddings=unit_rows(embeddings), neighbours=int(novelty["neighbours"]),
                reference=np.asarray(novelty["reference"], dtype=np.float32))
