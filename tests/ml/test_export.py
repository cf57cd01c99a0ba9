import json

import numpy as np
import onnx
import torch
from safetensors.torch import load_file

from app.ml.export import load_torch_model
from app.ml.preprocess import probe_input


def test_version_folder_is_complete(exported, trained):
    out, meta = exported
    assert {p.name for p in out.iterdir()} == {"weights.safetensors", "model.onnx", "model.json"}
    assert json.loads((out / "model.json").read_text()) == meta
    assert meta["format_version"] == 1 and meta["labels"] == trained.labels
    assert meta["preprocessing"] == trained.preprocessing.to_dict()
    assert meta["metrics"]["error_rate"] == trained.metrics["error_rate"]
    graph = onnx.load(str(out / "model.onnx"))
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 18
    assert len(load_file(str(out / "weights.safetensors"))) == len(trained.model.state_dict())


def test_load_torch_model_reproduces_the_probe(exported):
    out, meta = exported
    model = load_torch_model(out)
    with torch.inference_mode():
        probs = torch.softmax(model(torch.from_numpy(probe_input(trained_pre(meta)))), 1)
    assert np.abs(probs.numpy()[0] - np.array(meta["probe"]["probabilities"])).max() < 1e-5


def trained_pre(meta):
    from app.ml.preprocess import Preprocessing

    return Preprocessing.from_dict(meta["preprocessing"])
