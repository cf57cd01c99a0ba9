import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from app.ml import predict as predict_module
from app.ml.export import load_torch_model
from app.ml.images import decode_rgb
from app.ml.predict import Classifier, ModelLoadError, prepare_batch, session_options
from app.ml.preprocess import Preprocessing, preprocess_batch


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


def test_prepare_batch_is_preprocess_batch_written_in_place(small_bears):
    samples, _ = small_bears
    images = [decode_rgb(Path(s.key).read_bytes(), draft_size=256) for s in samples[:6]]
    images.append(images[0].convert("L"))  # a grey photo is made RGB as preprocess does
    for pre in (Preprocessing(), Preprocessing(mean=(0.485, 0.456, 0.406),
                                               std=(0.229, 0.224, 0.225))):
        expected = preprocess_batch(images, pre)
        got = prepare_batch(images, pre)
        assert got.dtype == np.float32 and got.flags.c_contiguous
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() < 1e-6
    assert prepare_batch([], Preprocessing()).shape == (0, 3, 224, 224)


def test_large_batches_run_in_slices_with_the_same_answers(exported, small_bears,
                                                           monkeypatch):
    classifier = Classifier.load(exported[0], threads=1)
    samples, _ = small_bears
    images = [decode_rgb(Path(s.key).read_bytes(), draft_size=256) for s in samples[:5]]
    batch = classifier.prepare(images)
    whole = classifier.scores(batch)
    rows_per_call = []
    real_run = classifier.session.run

    class Recording:
        def run(self, names, feeds):
            rows_per_call.append(len(feeds["input"]))
            return real_run(names, feeds)

    monkeypatch.setattr(predict_module, "MAX_RUN_ROWS", 2)
    classifier.session = Recording()
    sliced = classifier.scores(batch)
    assert rows_per_call == [2, 2, 1]
    assert np.abs(sliced[0] - whole[0]).max() < 1e-6
    assert (sliced[1] is None) == (whole[1] is None)
    if whole[1] is not None:
        assert np.abs(sliced[1] - whole[1]).max() < 1e-6


def test_session_options_use_the_cores_one_operator_at_a_time():
    options = session_options()
    assert options.intra_op_num_threads == len(os.sched_getaffinity(0))
    assert options.inter_op_num_threads == 1
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.enable_cpu_mem_arena  # bounded by MAX_RUN_ROWS
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert session_options(3).intra_op_num_threads == 3
