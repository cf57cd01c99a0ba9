"""Serve a model version with ONNX Runtime on CPU; never imports torch.

model.onnx takes `input` (float32 NCHW, preprocess_batch's output) and returns `logits` and
`probabilities` (softmax already applied); predict_proba returns the probabilities.
"""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from app.ml.preprocess import Preprocessing, preprocess_batch, probe_input

PROBE_TOLERANCE = 1e-4


class ModelLoadError(RuntimeError):
    """A model folder is missing, malformed, or its graph disagrees with its probe."""


class Classifier:
    """A loaded model version: load once, predict many."""

    def __init__(self, *, session: ort.InferenceSession, meta: dict):
        self.session = session
        self.meta = meta
        self.labels: list[str] = list(meta["labels"])
        self.preprocessing = Preprocessing.from_dict(meta["preprocessing"])

    @classmethod
    def load(cls, model_dir: Path, *, threads: int | None = None) -> "Classifier":
        """Open model.onnx, check it against model.json's probe, or raise ModelLoadError."""
        model_dir = Path(model_dir)
        try:
            meta = json.loads((model_dir / "model.json").read_text())
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            # A web process also decodes images on these cores: idle ORT threads must sleep,
            # not spin; and no arena that keeps the largest batch's activations for good.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.enable_cpu_mem_arena = False
            if threads:
                options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
            session = ort.InferenceSession(
                str(model_dir / "model.onnx"), sess_options=options,
                providers=["CPUExecutionProvider"],
            )
            classifier = cls(session=session, meta=meta)
            expected = np.asarray(meta["probe"]["probabilities"], dtype=np.float64)
        except Exception as exc:  # onnxruntime raises its own unrelated exception types
            raise ModelLoadError(f"cannot load model from {model_dir}: {exc}") from exc
        got = classifier._run(probe_input(classifier.preprocessing))[0]
        if got.shape != expected.shape or np.abs(got - expected).max() > PROBE_TOLERANCE:
            raise ModelLoadError(f"model.onnx in {model_dir} disagrees with its probe")
        return classifier

    def predict_proba(self, images: list[Image.Image]) -> np.ndarray:
        """Class probabilities, N x len(labels), in labels order."""
        if not images:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return self._run(preprocess_batch(images, self.preprocessing))

    def prepare(self, images: list[Image.Image]) -> np.ndarray:
        """The model's input for these images (float32 NCHW), so forward can run elsewhere."""
        return preprocess_batch(images, self.preprocessing)

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities for a prepared batch: one ONNX Runtime call."""
        return self._run(batch)

    def predict(self, images: list[Image.Image]) -> list[dict]:
        """Top label, its confidence and all probabilities for each image."""
        results = []
        for row in self.predict_proba(images):
            best = int(row.argmax())
            results.append({
                "label": self.labels[best],
                "confidence": float(row[best]),
                "probabilities": {label: float(p) for label, p in zip(self.labels, row,
                                                                      strict=True)},
            })
        return results

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(["probabilities"], {"input": batch.astype(np.float32)})[0]
