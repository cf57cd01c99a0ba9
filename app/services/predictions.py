"""Predictions from deployed models: ONNX Runtime on CPU, loaded once per version."""

import threading
from collections import OrderedDict

from app.ml.images import ImageRejected, decode_rgb
from app.ml.predict import Classifier
from app.models import ModelVersion
from app.services.errors import InvalidInputError
from app.storage import LocalStorage


class ModelCache:
    """Loaded classifiers keyed by model version, least recently used evicted first."""

    def __init__(self, storage: LocalStorage, *, size: int, threads: int | None) -> None:
        self.storage = storage
        self.size = size
        self.threads = threads
        self._models: OrderedDict[int, Classifier] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model: ModelVersion) -> Classifier:
        with self._lock:
            if model.id in self._models:
                self._models.move_to_end(model.id)
                return self._models[model.id]
            classifier = Classifier.load(
                self.storage.local_dir(model.storage_prefix), threads=self.threads
            )
            self._models[model.id] = classifier
            while len(self._models) > self.size:
                self._models.popitem(last=False)
            return classifier


def predict_images(
    *, cache: ModelCache, model: ModelVersion, images: list[bytes], max_pixels: int
) -> list[dict]:
    """Label, confidence and probabilities for each image."""
    classifier = cache.get(model)
    draft = classifier.preprocessing.resize  # decode exactly as training did
    try:
        decoded = [decode_rgb(data, max_pixels=max_pixels, draft_size=draft) for data in images]
    except ImageRejected as exc:
        raise InvalidInputError(f"cannot read the image: {exc}") from exc
    answers = classifier.predict(decoded)
    for answer in answers:
        answer["model_id"] = model.id
        answer["unknown"] = False
    return answers
