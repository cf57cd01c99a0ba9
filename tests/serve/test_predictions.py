import numpy as np

from app.models import Deployment, ModelVersion
from app.services.predictions import shape_answer, unknown_threshold


def test_answers_sort_cut_to_top_k_and_flag_unknown():
    row = np.array([0.2, 0.7, 0.1], dtype=np.float32)
    answer = shape_answer(labels=["a", "b", "c"], row=row, model_id=5, threshold=0.8,
                          top_k=None)
    assert list(answer["probabilities"]) == ["b", "a", "c"]
    assert answer["label"] == "b" and answer["unknown"] is True and answer["model_id"] == 5
    top = shape_answer(labels=["a", "b", "c"], row=row, model_id=5, threshold=None, top_k=2)
    assert list(top["probabilities"]) == ["b", "a"] and top["unknown"] is False


def test_deployment_threshold_overrides_the_calibrated_one():
    model = ModelVersion(metrics={"unknown_threshold": 0.6})
    assert unknown_threshold(deployment=Deployment(threshold=None), model=model) == 0.6
    assert unknown_threshold(deployment=Deployment(threshold=0.9), model=model) == 0.9
    assert unknown_threshold(deployment=Deployment(threshold=None),
                             model=ModelVersion(metrics={})) is None
