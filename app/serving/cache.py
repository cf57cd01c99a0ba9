"""Loaded classifiers, one per model version, kept while they are used."""

import threading
from collections import OrderedDict
from datetime import datetime

from app.ml.predict import Classifier
from app.models import ModelVersion
from app.storage import Storage

Identity = tuple[int, str, datetime | None]


def identity(model: ModelVersion) -> Identity:
    """What makes a cached classifier the one of this row, not of another with its id."""
    return (model.id, model.storage_prefix, model.created_at)


class ModelCache:
    """Loaded classifiers keyed by model version; least recently used evicted first.

    Eviction keeps at most `size` versions and at most `max_bytes` of ONNX graphs and
    feature banks. A version
    requested by several threads at once is loaded once (the others wait for it). An entry
    answers only for the row it was loaded from: its id, storage prefix and creation time
    (ids are never reused, but a restored or rebuilt database must not meet a stale entry).
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
        self._models: OrderedDict[Identity, tuple[Classifier, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[Identity, threading.Lock] = {}

    def get(self, model: ModelVersion) -> Classifier:
        """The loaded classifier of a model version (loading it on first use)."""
        key = identity(model)
        with self._lock:
            found = self._hit(key)
            if found is not None:
                return found
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._lock:
                found = self._hit(key)
                if found is not None:
                    return found
            try:
                model_dir = self.storage.local_dir(model.storage_prefix)
                classifier = Classifier.load(model_dir, threads=self.threads)
                nbytes = (model_dir / "model.onnx").stat().st_size + classifier.nbytes
                with self._lock:
                    self.loads += 1
                    for replaced in [k for k in self._models if k[0] == model.id]:
                        del self._models[replaced]  # an older row under this id is gone
                    self._models[key] = (classifier, nbytes)
                    self._evict()
            finally:  # a load that failed is tried again by the next request
                with self._lock:
                    self._loading.pop(key, None)
            return classifier

    def has(self, model: ModelVersion) -> bool:
        """Whether this version is loaded (a get that will not load it)."""
        with self._lock:
            return identity(model) in self._models

    def cached_ids(self) -> list[int]:
        """Model ids in the cache, least recently used first."""
        with self._lock:
            return [key[0] for key in self._models]

    def _hit(self, key: Identity) -> Classifier | None:
        entry = self._models.get(key)
        if entry is None:
            return None
        self._models.move_to_end(key)
        return entry[0]

    def _evict(self) -> None:
        def too_big() -> bool:
            total = sum(nbytes for _, nbytes in self._models.values())
            return self.max_bytes is not None and total > self.max_bytes

        while len(self._models) > 1 and (len(self._models) > self.size or too_big()):
            self._models.popitem(last=False)
