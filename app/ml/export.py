"""Write a trained model as a version folder: safetensors weights, ONNX graph, model.json,
and features.npy (the bank of training photos' embeddings "none of these" compares with)."""

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import helper, numpy_helper
from safetensors.torch import load_file, save_file
from torch import nn

from app.ml.backbones import create_model
from app.ml.body import OPSET, export_graph, load_graph
from app.ml.head import Concepts
from app.ml.novelty import TEMPERATURE, Bank
from app.ml.preprocess import probe_input
from app.ml.train import TrainResult

FORMAT_VERSION = 1
OUTPUTS = ("logits", "probabilities", "embedding")  # the embedding: versions with a bank
PROBE_TOLERANCE = 1e-4
BANK_FILE = "features.npy"


class ExportError(RuntimeError):
    """The exported ONNX graph does not reproduce the PyTorch model."""


class Served(nn.Module):
    """The graph that model.onnx holds: input NCHW -> (logits, probabilities), and the
    photo's embedding (app.ml.novelty) when `concepts` is given, from the same pass."""

    def __init__(self, model: nn.Module, concepts: nn.Module | None = None):
        super().__init__()
        self.model = model
        self.concepts = concepts
        self.outputs = OUTPUTS if concepts is not None else OUTPUTS[:2]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        logits = self.model.get_classifier()(features)
        if self.concepts is None:
            return logits, torch.softmax(logits, dim=1)
        return logits, torch.softmax(logits, dim=1), self.concepts(features)


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
    if result.body_onnx is not None:  # the body stayed frozen: its cached graph plus the head
        served = Served(model).eval()
        outputs = OUTPUTS if result.bank is not None else OUTPUTS[:2]
        exporter = attach_head(result.body_onnx, model.get_classifier(), out_dir / "model.onnx",
                               outputs=outputs)
    else:
        served = Served(model, None if result.bank is None else
                        Concepts.of_backbone(backbone)).eval()
        outputs = served.outputs
        exporter = export_graph(served, pre.input_size, out_dir / "model.onnx", outputs)
    with torch.inference_mode():
        expected = [t.numpy() for t in served(torch.from_numpy(probe))]
    got = _run_onnx(out_dir / "model.onnx", probe, outputs)
    # probabilities and embedding (logits may differ more in absolute terms, not in effect;
    # an attached head's embedding is the cached body's, checked when that was exported)
    difference = max(float(np.abs(a - b).max()) for a, b in zip(got[1:], expected[1:],
                                                                 strict=False))
    if difference > PROBE_TOLERANCE:
        raise ExportError(f"ONNX and PyTorch disagree on the probe by {difference:.2e}")
    probe_probs = expected[1]
    if result.bank is not None:
        np.save(out_dir / BANK_FILE, result.bank.embeddings.astype(np.float16),
                allow_pickle=False)

    meta = {
        "format_version": FORMAT_VERSION,
        "backbone": backbone,
        "labels": list(result.labels),
        "preprocessing": pre.to_dict(),
        "metrics": result.metrics,
        # "none of these" when the unknown score is below it (app.ml.novelty: the familiarity
        # with the training photos; versions without a bank: the top class probability)
        "unknown_threshold": result.metrics.get("unknown_threshold"),
        "unknown_score": result.metrics.get("unknown_score", "max_probability"),
        **({} if result.bank is None else {"novelty": _novelty(result.bank)}),
        "recipe": recipe,
        "dataset": dataset,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "onnx": {"exporter": exporter, "opset": OPSET, "input": "input",
                 "outputs": list(outputs)},
        "probe": {"function": "probe_input", "probabilities": probe_probs[0].tolist(),
                  "tolerance": PROBE_TOLERANCE},
    }
    (out_dir / "model.json").write_text(json.dumps(meta, indent=2))
    return meta


def _novelty(bank: Bank) -> dict:
    """model.json's description of the bank: its file, neighbour and reference."""
    return {"bank": BANK_FILE, "rows": len(bank.embeddings), "neighbours": bank.neighbours,
            "embedding": f"sqrt(softmax(imagenet_logits / {TEMPERATURE}))",
            "reference": [round(float(x), 6) for x in bank.reference]}


def load_torch_model(model_dir: Path) -> nn.Module:
    """Rebuild the PyTorch model of a version folder (no downloads, no pickle), in eval mode."""
    meta = json.loads((Path(model_dir) / "model.json").read_text())
    model = create_model(meta["backbone"], num_classes=len(meta["labels"]), pretrained=False)
    model.load_state_dict(load_file(str(Path(model_dir) / "weights.safetensors")), strict=True)
    return model.eval()


def attach_head(body_path: Path, head: nn.Linear, path: Path, *,
                outputs: tuple[str, ...]) -> str:
    """Write the cached body graph with head on its features (Gemm, then Softmax) as one
    self-contained model.onnx whose outputs are `outputs`; the exporter's name."""
    graph_model = onnx.ModelProto()
    graph_model.CopyFrom(load_graph(Path(body_path)))
    graph = graph_model.graph
    weight = head.weight.detach().float().cpu().numpy()
    bias = head.bias.detach().float().cpu().numpy()
    graph.initializer.extend([numpy_helper.from_array(weight, "kodiak_head_weight"),
                              numpy_helper.from_array(bias, "kodiak_head_bias")])
    graph.node.extend([
        helper.make_node("Gemm", ["features", "kodiak_head_weight", "kodiak_head_bias"],
                         ["logits"], name="kodiak_head", transB=1),
        helper.make_node("Softmax", ["logits"], ["probabilities"], name="kodiak_softmax",
                         axis=1),
    ])
    embedding = next(o for o in graph.output if o.name == "embedding")
    n_classes = weight.shape[0]
    kept = [helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, ["batch", n_classes])
            for name in ("logits", "probabilities")]
    if "embedding" in outputs:
        kept.append(embedding)
    del graph.output[:]
    graph.output.extend(kept)
    onnx.save(graph_model, str(path))
    return "cached body + head"


def _run_onnx(path: Path, batch: np.ndarray, outputs: tuple[str, ...]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(list(outputs), {"input": batch})
