"""Predictions from deployed models: ONNX Runtime on CPU, loaded once per version, batched.

The web process calls `Serving.predict`: images are decoded and preprocessed in a worker
thread per request, then a per-model `MicroBatcher` gathers the inputs of concurrent
requests into one ONNX Runtime call on a single inference thread.
"""

import asyncio
import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.ml.images import ImageRejected, decode_rgb
from app.ml.predict import Classifier
from app.models import Deployment, Image, Label, ModelVersion, PredictionLog
from app.services.downloader import DownloadError, DownloadPolicy, download, make_client
from app.services.errors import InvalidInputError
from app.storage import LocalStorage, StorageError

log = logging.getLogger(__name__)


class ModelCache:
    """Loaded classifiers keyed by model version; least recently used evicted first.

    Eviction keeps at most `size` versions and at most `max_bytes` of ONNX graphs. A version
    requested by several threads at once is loaded once (the others wait for it).
    """

    def __init__(
        self, storage: LocalStorage, *, size: int, threads: int | None,
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


class MicroBatcher:
    """Concurrent requests for one model share one forward pass.

    A batch runs as soon as the inference thread is free. It waits (at most max_wait_s
    after its first item, up to max_batch items) only while other requests for the same
    model are still being decoded, so a lone request is never delayed.
    """

    def __init__(self, *, executor: ThreadPoolExecutor, max_batch: int, max_wait_s: float):
        self.executor = executor
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.incoming = 0
        self.forward_passes = 0
        self.items = 0
        self._queue: list[tuple[Classifier, np.ndarray, asyncio.Future]] = []
        self._arrived: asyncio.Event | None = None
        self._drain: asyncio.Task | None = None

    async def submit(self, classifier: Classifier, inputs: np.ndarray) -> np.ndarray:
        """Probabilities for `inputs` (N x C x H x W), computed in a shared batch."""
        future = asyncio.get_running_loop().create_future()
        self._queue.append((classifier, inputs, future))
        if self._arrived is None:
            self._arrived = asyncio.Event()
        self._arrived.set()
        if self._drain is None or self._drain.done():
            self._drain = asyncio.create_task(self._run())
        return await future

    def _queued_rows(self) -> int:
        return sum(len(inputs) for _, inputs, _ in self._queue)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            deadline = loop.time() + self.max_wait_s
            while self.incoming > 0 and self._queued_rows() < self.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    break
            taken, rows = [], 0
            while self._queue and (not taken or rows + len(self._queue[0][1]) <= self.max_batch):
                item = self._queue.pop(0)
                taken.append(item)
                rows += len(item[1])
            classifier = taken[0][0]
            batch = np.concatenate([inputs for _, inputs, _ in taken])
            try:
                probs = await loop.run_in_executor(self.executor, classifier.forward, batch)
            except Exception as exc:  # hand the failure to every waiting request
                for _, _, future in taken:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.forward_passes += 1
            self.items += len(batch)
            start = 0
            for _, inputs, future in taken:
                if not future.done():
                    future.set_result(probs[start:start + len(inputs)])
                start += len(inputs)


@dataclass
class LogEntry:
    deployment_id: int
    model_id: int
    label: str
    confidence: float
    unknown: bool
    latency_ms: float
    source: str
    image: bytes | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class PredictionLogBuffer:
    """Prediction log rows kept in memory and written in one transaction every so often."""

    def __init__(self, *, factory: sessionmaker[Session], storage: LocalStorage,
                 flush_s: float, max_rows: int = 500) -> None:
        self.factory = factory
        self.storage = storage
        self.flush_s = flush_s
        self.max_rows = max_rows
        self._rows: list[LogEntry] = []
        self._lock = threading.Lock()
        self._last_flush = time.monotonic()

    def add(self, entries: list[LogEntry]) -> bool:
        """Queue rows; True when the caller should flush now."""
        with self._lock:
            self._rows.extend(entries)
            due = time.monotonic() - self._last_flush >= self.flush_s
            return due or len(self._rows) >= self.max_rows

    def flush(self) -> int:
        """Write the queued rows (and images, where the deployment keeps them)."""
        with self._lock:
            rows, self._rows = self._rows, []
            self._last_flush = time.monotonic()
        if not rows:
            return 0
        session = self.factory()
        try:
            live = set(session.scalars(select(Deployment.id).where(
                Deployment.id.in_({r.deployment_id for r in rows}))))
            for row in rows:
                if row.deployment_id not in live:
                    continue
                key = None
                if row.image is not None:
                    key = f"predictions/{row.deployment_id}/{uuid.uuid4().hex}.jpg"
                    self.storage.put(key, row.image)
                session.add(PredictionLog(
                    deployment_id=row.deployment_id, model_id=row.model_id, label=row.label,
                    confidence=row.confidence, unknown=row.unknown, latency_ms=row.latency_ms,
                    source=row.source, image_key=key, created_at=row.created_at,
                ))
            session.commit()
        except Exception:
            session.rollback()
            log.exception("could not write %d prediction log rows", len(rows))
            return 0
        finally:
            session.close()
        return len(rows)


class Serving:
    """The web process's prediction machinery: model cache, batchers, prediction log."""

    def __init__(self, *, cache: ModelCache, factory: sessionmaker[Session],
                 storage: LocalStorage, max_batch: int, max_wait_ms: float,
                 max_pixels: int, log_flush_s: float, download_policy: DownloadPolicy) -> None:
        self.cache = cache
        self.download_policy = download_policy
        self._http = None
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.max_pixels = max_pixels
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self.batchers: dict[int, MicroBatcher] = {}
        self.log = PredictionLogBuffer(factory=factory, storage=storage, flush_s=log_flush_s)
        self._flushing: asyncio.Task | None = None

    async def fetch(self, url: str) -> bytes:
        """The image at a URL, through the downloader's SSRF guard and size and time limits."""
        if self._http is None:
            self._http = make_client(self.download_policy)
        try:
            return (await download(self._http, url, policy=self.download_policy)).data
        except DownloadError as exc:
            raise InvalidInputError(f"cannot download the image at that URL: {exc}") from exc

    def batcher(self, model_id: int) -> MicroBatcher:
        if model_id not in self.batchers:
            self.batchers[model_id] = MicroBatcher(
                executor=self.executor, max_batch=self.max_batch, max_wait_s=self.max_wait_s
            )
        return self.batchers[model_id]

    async def predict(
        self, *, deployment: Deployment, images: list[bytes], top_k: int | None,
        source: str = "file",
    ) -> list[dict]:
        """Answers for `images` from the deployment's current model version, logged."""
        started = time.perf_counter()
        model = deployment.model
        batcher = self.batcher(model.id)
        batcher.incoming += 1
        try:
            classifier, inputs = await asyncio.to_thread(self._prepare, model, images)
        finally:
            batcher.incoming -= 1
        probs = await batcher.submit(classifier, inputs)
        threshold = unknown_threshold(deployment=deployment, model=model)
        answers = [shape_answer(labels=classifier.labels, row=row, model_id=model.id,
                                threshold=threshold, top_k=top_k) for row in probs]
        latency_ms = (time.perf_counter() - started) * 1000 / len(images)
        entries = [
            LogEntry(deployment_id=deployment.id, model_id=model.id, label=a["label"],
                     confidence=a["confidence"], unknown=a["unknown"], latency_ms=latency_ms,
                     source=source, image=data if deployment.log_images else None)
            for a, data in zip(answers, images, strict=True)
        ]
        if self.log.add(entries) and (self._flushing is None or self._flushing.done()):
            self._flushing = asyncio.create_task(asyncio.to_thread(self.log.flush))
        return answers

    def _prepare(self, model: ModelVersion, images: list[bytes]) -> tuple[Classifier, np.ndarray]:
        classifier = self.cache.get(model)
        draft = classifier.preprocessing.resize  # decode exactly as training did
        try:
            decoded = [decode_rgb(data, max_pixels=self.max_pixels, draft_size=draft)
                       for data in images]
        except ImageRejected as exc:
            raise InvalidInputError(f"cannot read the image: {exc}") from exc
        return classifier, classifier.prepare(decoded)

    async def aclose(self) -> None:
        """Flush the prediction log and release threads and connections (at shutdown)."""
        await asyncio.to_thread(self.log.flush)
        if self._http is not None:
            await self._http.aclose()
        self.executor.shutdown(wait=False)


def unknown_threshold(*, deployment: Deployment, model: ModelVersion) -> float | None:
    """The deployment's own threshold, else the one calibrated at training time, else none."""
    if deployment.threshold is not None:
        return deployment.threshold
    value = (model.metrics or {}).get("unknown_threshold")
    return float(value) if isinstance(value, int | float) else None


def shape_answer(*, labels: list[str], row: np.ndarray, model_id: int,
                 threshold: float | None, top_k: int | None) -> dict:
    """One prediction: the top label, its confidence, probabilities sorted high to low."""
    order = np.argsort(-row, kind="stable")
    if top_k is not None:
        order = order[:top_k]
    best = int(order[0])
    confidence = float(row[best])
    return {
        "label": labels[best],
        "confidence": confidence,
        "probabilities": {labels[int(i)]: float(row[int(i)]) for i in order},
        "model_id": model_id,
        "unknown": threshold is not None and confidence < threshold,
        "threshold": threshold,
    }


def log_summary(*, session: Session, deployment: Deployment, days: int = 30) -> dict:
    """Counts per label, unknown rate, mean confidence and latency p50/p95, overall and per day."""
    since = datetime.now(UTC) - timedelta(days=days)
    rows = session.execute(
        select(PredictionLog.created_at, PredictionLog.label, PredictionLog.confidence,
               PredictionLog.unknown, PredictionLog.latency_ms, PredictionLog.model_id)
        .where(PredictionLog.deployment_id == deployment.id, PredictionLog.created_at >= since)
        .order_by(PredictionLog.created_at)
    ).all()
    by_day: dict[str, list] = {}
    for row in rows:
        by_day.setdefault(row.created_at.date().isoformat(), []).append(row)
    return {
        "slug": deployment.slug,
        "days": days,
        **_summarise(rows),
        "per_day": [{"day": day, **_summarise(day_rows)} for day, day_rows in by_day.items()],
    }


def _summarise(rows: list) -> dict:
    if not rows:
        return {"count": 0, "labels": {}, "unknown_rate": None, "mean_confidence": None,
                "latency_p50_ms": None, "latency_p95_ms": None, "model_ids": []}
    labels: dict[str, int] = {}
    for row in rows:
        key = "unknown" if row.unknown else row.label
        labels[key] = labels.get(key, 0) + 1
    latency = np.array([row.latency_ms for row in rows])
    return {
        "count": len(rows),
        "labels": dict(sorted(labels.items(), key=lambda kv: -kv[1])),
        "unknown_rate": sum(row.unknown for row in rows) / len(rows),
        "mean_confidence": float(np.mean([row.confidence for row in rows])),
        "latency_p50_ms": float(np.percentile(latency, 50)),
        "latency_p95_ms": float(np.percentile(latency, 95)),
        "model_ids": sorted({row.model_id for row in rows}),
    }


def example_images(*, session: Session, storage: LocalStorage, deployment: Deployment,
                   per_label: int) -> list[Image]:
    """A few images of each label for the demo page: validation images where known."""
    model = deployment.model
    valid_ids: list[int] = []
    try:
        meta = json.loads(storage.read(f"{model.storage_prefix}/model.json"))
        valid_ids = list((meta.get("dataset") or {}).get("valid_image_ids") or [])
    except (StorageError, ValueError, OSError):
        pass
    chosen: list[Image] = []
    for name in model.labels:
        query = (select(Image).join(Label, Image.label_id == Label.id)
                 .where(Image.project_id == deployment.project_id, Label.name == name,
                        Image.status == "active"))
        if valid_ids:
            query = query.where(Image.id.in_(valid_ids))
        chosen.extend(session.scalars(query.order_by(Image.id).limit(per_label)))
    return chosen
