import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from app.ml.export import load_torch_model
from app.ml.images import decode_rgb
from app.ml.predict import Classifier, ModelLoadError
from app.ml.preprocess import preprocess_batch


def validation_images(trained, small_bears):
    samples, _ = small_bears
    return [decode_rgb(Path(samples[i].key).read_bytes(), draft_size=256)
            for i in trained.valid_indices]


def test_onnx_matches_torch_on_real_validation_images(exported, trained, small_bears):
    out, _ = exported
    classifier = Classifier.load(out, threads=1)
    images = validation_images(trained, small_bears)
    probs = classifier.predict_proba(images)
    with torch.inference_mode():
        batch = torch.from_numpy(preprocess_batch(images, classifier.preprocessing))
        expected = torch.softmax(load_torch_model(out)(batch), 1).numpy()
    assert probs.shape == (len(images), 3)
    assert np.abs(probs - expected).max() < 1e-4
    assert np.abs(probs - np.array(trained.valid_probabilities)).max() < 1e-4


def test_predict_shapes_a_result(exported, data_dir):
    classifier = Classifier.load(exported[0])
    image = decode_rgb((data_dir / "bears" / "teddy" / "0002.jpg").read_bytes())
    [result] = classifier.predict([image])
    assert result["label"] in classifier.labels
    assert set(result["probabilities"]) == set(classifier.labels)
    assert result["confidence"] == max(result["probabilities"].values())
    assert abs(sum(result["probabilities"].values()) - 1) < 1e-5
    assert classifier.predict_proba([]).shape == (0, 3)


def test_load_refuses_a_model_whose_probe_disagrees(exported, tmp_path):
    tampered = tmp_path / "tampered"
    shutil.copytree(exported[0], tampered)
    meta = json.loads((tampered / "model.json").read_text())
    probs = meta["probe"]["probabilities"]
    meta["probe"]["probabilities"] = [probs[0] - 1e-3, probs[1] + 1e-3, *probs[2:]]
    (tampered / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="probe"):
        Classifier.load(tampered)


def test_load_refuses_a_missing_graph(exported, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(exported[0], broken)
    (broken / "model.onnx").write_bytes(b"not onnx")
    with pytest.raises(ModelLoadError):
        Classifier.load(broken)
