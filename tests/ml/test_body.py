import numpy as np
import onnx
import pytest
import torch

from app.ml import body
from app.ml.head import extract_features, onnx_features
from app.ml.prepare import prepare
from app.ml.preprocess import to_chw
from app.ml.progress import Reporter
from app.ml.recipe import Recipe
from tests.ml.conftest import TINY, body_cache, read_bytes


def test_the_body_graph_is_exported_once_and_then_reused(monkeypatch):
    path = body.body_onnx("efficientnet_lite0", body_cache())
    made = path.stat().st_mtime_ns

    def no_export(*_args, **_kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(body, "export_graph", no_export)
    assert body.body_onnx("efficientnet_lite0", body_cache()) == path
    assert path.stat().st_mtime_ns == made
    assert torch.__version__.replace("+", "_") in path.name and "lite0" in path.name
    graph = onnx.load(str(path))
    assert [o.name for o in graph.graph.output] == list(body.BODY_OUTPUTS)


def test_a_missing_graph_is_exported_whole_or_not_at_all(tmp_path, monkeypatch):
    def broken(_module, _size, path, _outputs):
        path.write_bytes(b"half a graph")
        raise RuntimeError("exporter died")

    monkeypatch.setattr(body, "export_graph", broken)
    with pytest.raises(RuntimeError, match="exporter died"):
        body.body_onnx("efficientnet_lite0", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_onnx_runtime_features_match_the_torch_body(small_bears):
    samples, labels = small_bears
    recipe = Recipe(epochs=0, **TINY)
    run = prepare(samples=samples[:24], labels=labels, read_bytes=read_bytes, recipe=recipe,
                  report=Reporter(None, None), body_cache=body_cache())
    assert run.body_onnx is not None
    views = lambda i: to_chw(run.crops[i], run.pre)  # noqa: E731
    done = []
    features, embeddings = onnx_features(run, views, len(run.crops), done.append)
    expected = extract_features(run.model, views, len(run.crops), run.device, fp32=True)
    assert done[-1] == len(run.crops)
    assert features.shape == expected.shape == (len(run.crops), 1280)
    assert torch.abs(features - expected).max() < 1e-3 * max(1.0, expected.abs().max().item())
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1, atol=1e-5)


def test_the_body_stays_in_torch_when_it_will_change(small_bears):
    samples, labels = small_bears
    unfrozen = prepare(samples=samples[:12], labels=labels, read_bytes=read_bytes,
                       recipe=Recipe(epochs=1, **TINY), report=Reporter(None, None),
                       body_cache=body_cache())
    other_size = prepare(samples=samples[:12], labels=labels, read_bytes=read_bytes,
                         recipe=Recipe(epochs=0, image_size=160, **TINY),
                         report=Reporter(None, None), body_cache=body_cache())
    assert unfrozen.body_onnx is None and other_size.body_onnx is None
