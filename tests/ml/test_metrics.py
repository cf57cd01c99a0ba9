import numpy as np

from app.ml.metrics import classification_metrics, unknown_threshold


def test_metrics_count_the_confusion_and_rank_the_worst_first():
    probabilities = np.array([[0.9, 0.1], [0.3, 0.7], [0.8, 0.2], [0.4, 0.6]])
    actual = np.array([0, 1, 1, 0])
    metrics = classification_metrics(probabilities, actual, ["cat", "dog"], list("abcd"))
    assert metrics["confusion_matrix"] == [[1, 1], [1, 1]]
    assert metrics["error_rate"] == 0.5 and metrics["valid_count"] == 4
    assert metrics["per_class"]["cat"] == {"precision": 0.5, "recall": 0.5, "support": 2}
    assert [row["key"] for row in metrics["top_losses"]] == ["c", "d", "b", "a"]
    assert metrics["top_losses"][0] == {"key": "c", "actual": "dog", "predicted": "cat",
                                        "confidence": 0.8, "loss": round(-np.log(0.2), 5)}


def test_unknown_threshold_rejects_few_correct_predictions():
    rng = np.random.default_rng(0)
    top = rng.uniform(0.6, 1.0, 200)
    probabilities = np.stack([top, 1 - top], axis=1)
    actual = np.zeros(200, dtype=int)
    calibrated = unknown_threshold(probabilities, actual)
    assert calibrated["unknown_score"] == "max_probability"
    assert 0.6 < calibrated["unknown_threshold"] < 0.63
    assert calibrated["unknown_reject_rate"] <= 0.03
    assert (top < calibrated["unknown_threshold"]).mean() <= 0.03
