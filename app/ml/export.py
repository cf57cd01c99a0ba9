"""Write a trained model as a version folder: safetensors weights, ONNX graph, model.json."""

import json
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from app.ml.backbones import create_model
from app.ml.preprocess import Preprocessing, probe_input
from app.ml.train import TrainResult

FORMAT_VERSION = 1
OPSET = 18
PROBE_TOLERANCE = 1e-4


class ExportError(RuntimeError):
    """The exported ONNX graph does not reproduce the PyTorch model."""


class WithSoftmax(nn.Module):
    """The graph that model.onnx holds: input NCHW -> (logits, probabilities)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(x)
        return logits, torch.softmax(logits, dim=1)


def export_model(
    *, result: TrainResult, out_dir: Path, backbone: str, recipe: dict, dataset: dict
) -> dict:
    """Write weights.safetensors, model.onnx and model.json to out_dir; return model.json."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = result.model.to("cpu", memory_format=torch.contiguous_format).float().eval()
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / "weights.safetensors"))

    pre = result.preprocessing
    probe = probe_input(pre)
    with torch.inference_mode():
        probe_probs = torch.softmax(model(torch.from_numpy(probe)), dim=1).numpy()
    exporter = _export_onnx(model, pre, out_dir / "model.onnx")
    onnx_probs = _run_onnx(out_dir / "model.onnx", probe)
    difference = float(np.abs(onnx_probs - probe_probs).max())
    if difference > PROBE_TOLERANCE:
        raise ExportError(f"ONNX and PyTorch disagree on the probe by {difference:.2e}")

    meta = {
        "format_version": FORMAT_VERSION,
        "backbone": backbone,
        "labels": list(result.labels),
        "preprocessing": pre.to_dict(),
        "metrics": result.metrics,
        # "none of these" when the top class probability is below it (calibrated on validation)
        "unknown_threshold": result.metrics.get("unknown_threshold"),
        "unknown_score": result.metrics.get("unknown_score", "max_probability"),
        "recipe": recipe,
        "dataset": dataset,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "onnx": {"exporter": exporter, "opset": OPSET, "input": "input",
                 "outputs": ["logits", "probabilities"]},
        "probe": {"function": "probe_input", "probabilities": probe_probs[0].tolist(),
                  "tolerance": PROBE_TOLERANCE},
    }
    (out_dir / "model.json").write_text(json.dumps(meta, indent=2))
    return meta


def load_torch_model(model_dir: Path) -> nn.Module:
    """Rebuild the PyTorch model of a version folder (no downloads, no pickle), in eval mode."""
    meta = json.loads((Path(model_dir) / "model.json").read_text())
    model = create_model(meta["backbone"], num_classes=len(meta["labels"]), pretrained=False)
    model.load_state_dict(load_file(str(Path(model_dir) / "weights.safetensors")), strict=True)
    return model.eval()


def _export_onnx(model: nn.Module, pre: Preprocessing, path: Path) -> str:
    wrapped = WithSoftmax(model).eval()
    example = (torch.zeros(2, 3, pre.input_size, pre.input_size),)
    names = {"input_names": ["input"], "output_names": ["logits", "probabilities"]}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                wrapped, example, dynamo=True, opset_version=OPSET, external_data=False,
                dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
                verbose=False, **names,
            )
        program.save(str(path), external_data=False)
        return "dynamo"
    except Exception as exc:  # the classic exporter is the documented fallback
        warnings.warn(f"dynamo ONNX export failed ({exc!r}); using the classic exporter",
                      stacklevel=2)
        torch.onnx.export(
            wrapped, example, str(path), dynamo=False, opset_version=OPSET,
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"},
                          "probabilities": {0: "batch"}},
            **names,
        )
        return "torchscript"


def _run_onnx(path: Path, batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {"input": batch})[0]
