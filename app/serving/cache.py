"""Loaded classifiers, one per model version, kept while they are used."""

import threading
from collections import OrderedDict

from app.ml.predict import Classifier
from app.models import ModelVersion
from app.storage import Storage


class ModelCache:
    """Loaded classifiers keyed by model version; least recently used evicted first.

    Eviction keeps at most `size` versions and at most `max_bytes` of ONNX graphs. A version
    requested by several threads at once is loaded once (the others wait for it).
    """

    def __init__(
        self, storage: Storage, *, size: int, threads: int | None,
        max_bytes: int | None = None,
    ) -> None:
        self.storage = storage
        self.size = size
        self.threads = threads
        self.max_bytes = max_bytes
        self.loads = 0
        self._models: OrderedDict[int, tuple[Classifier, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[int, threading.Lock] = {}

    def get(self, model: ModelVersion) -> Classifier:
        """The loaded classifier of a model version (loading it on first use)."""
        with self._lock:
            found = self._hit(model.id)
            if found is not None:
                return found
            loading = self._loading.setdefault(model.id, threading.Lock())
        with loading:
            with self._lock:
                found = self._hit(model.id)
                if found is not None:
                    return found
            model_dir = self.storage.local_dir(model.storage_prefix)
            classifier = Classifier.load(model_dir, threads=self.threads)
            nbytes = (model_dir / "model.onnx").stat().st_size
            with self._lock:
                self.loads += 1
                self._models[model.id] = (classifier, nbytes)
                self._evict()
                self._loading.pop(model.id, None)
            return classifier

    def cached_ids(self) -> list[int]:
        """Model ids in the cache, least recently used first."""
        with self._lock:
            return list(self._models)

    def _hit(self, model_id: int) -> Classifier | None:
        entry = self._models.get(model_id)
        if entry is None:
            return None
        self._models.move_to_end(model_id)
        return entry[0]

    def _evict(self) -> None:
        def too_big() -> bool:
            total = sum(nbytes for _, nbytes in self._models.values())
            return self.max_bytes is not None and total > self.max_bytes

        while len(self._models) > 1 and (len(self._models) > self.size or too_big()):
            self._models.popitem(last=False)
