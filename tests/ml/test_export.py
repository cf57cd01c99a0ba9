import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from safetensors.torch import load_file

from app.ml.export import load_torch_model
from app.ml.head import Concepts
from app.ml.images import decode_rgb
from app.ml.preprocess import preprocess_batch, probe_input


def test_version_folder_is_complete(exported, trained):
    out, meta = exported
    assert {p.name for p in out.iterdir()} == {"weights.safetensors", "model.onnx", "model.json",
                                             "features.npy"}
    assert json.loads((out / "model.json").read_text()) == meta
    assert meta["format_version"] == 1 and meta["labels"] == trained.labels
    # the default recipe's graph: the cached frozen body with the trained head attached
    assert meta["onnx"]["exporter"] == "cached body + head"
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


def test_onnx_serves_the_pytorch_embedding_and_the_bank_holds_it(exported, trained, small_bears):
    out, meta = exported
    samples, _ = small_bears
    assert meta["onnx"]["outputs"] == ["logits", "probabilities", "embedding"]
    bank = np.load(out / "features.npy", allow_pickle=False)
    assert bank.dtype == np.float16 and bank.shape == (len(trained.train_indices), 1000)
    reference = meta["novelty"]["reference"]
    assert meta["novelty"]["rows"] == len(bank) == len(reference)
    assert reference == sorted(reference)

    keys = [samples[i].key for i in trained.train_indices[:6] + trained.valid_indices[:6]]
    images = [decode_rgb(Path(k).read_bytes(), draft_size=256) for k in keys]
    batch = preprocess_batch(images, trained_pre(meta))
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_probs, onnx_embedding = session.run(["probabilities", "embedding"], {"input": batch})
    model, concepts = load_torch_model(out), Concepts.of_backbone(meta["backbone"])
    with torch.inference_mode():
        features = model.forward_head(model.forward_features(torch.from_numpy(batch)),
                                      pre_logits=True)
        expected = concepts(features).numpy()
        probs = torch.softmax(model.get_classifier()(features), 1).numpy()
    assert np.abs(onnx_embedding - expected).max() < 1e-4
    assert np.abs(onnx_probs - probs).max() < 1e-4
    assert np.allclose(np.linalg.norm(onnx_embedding, axis=1), 1, atol=1e-5)
    # each training photo finds itself in the bank (stored float16, embedded under bf16)
    own = (onnx_embedding[:6] @ bank.astype(np.float32).T)[np.arange(6), np.arange(6)]
    assert own.min() > 0.98
