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


def test_a_familiarity_score_decides_and_says_why():
    row = np.array([0.05, 0.95], dtype=np.float32)
    far = shape_answer(labels=["a", "b"], row=row, model_id=5, threshold=0.03, top_k=None,
                       score="familiarity", familiarity=0.0)
    assert far["unknown"] is True and far["answer"] is None and far["label"] == "b"
    assert far["unknown_reason"] == ("unlike the photos it was trained on: familiarity 0.0%, "
                                     "threshold 3.0%")
    near = shape_answer(labels=["a", "b"], row=row, model_id=5, threshold=0.03, top_k=None,
                        score="familiarity", familiarity=0.4)
    assert near["answer"] == "b" and near["unknown_reason"] is None
    unsure = shape_answer(labels=["a", "b"], row=row, model_id=5, threshold=0.99, top_k=None)
    assert unsure["unknown_reason"] == "not sure enough: confidence 95.0%, threshold 99.0%"


def test_the_score_follows_the_model_version():
    from app.services.deployments import unknown_score

    assert unknown_score(ModelVersion(metrics={"unknown_score": "familiarity"})) == "familiarity"
    assert unknown_score(ModelVersion(metrics={"unknown_score": "max_probability"})) \
        == "max_probability"
    assert unknown_score(ModelVersion(metrics=None)) == "max_probability"
