"""The owner of the prediction runtime, with the web app's lifetime.

The app's lifespan builds it (`from_settings`), starts it before the first request and stops
it after the last. Between the two, `app.services.predictions` predicts over it: images are
decoded and preprocessed on a small decode pool (which bounds the images decoded at once),
then a per-model `MicroBatcher` gathers the inputs of concurrent requests into one pass on
the single inference thread (a request that finds it idle decodes there, in the same trip).
"""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.services.downloader import Client, DownloadPolicy, make_client, policy_from_settings
from app.serving.batcher import MicroBatcher
from app.serving.cache import ModelCache
from app.serving.log_buffer import LogEntry, PredictionLogBuffer
from app.storage import Storage

MIN_FLUSH_INTERVAL_S = 0.1  # the background writer's cadence when every row is due at once


class Serving:
    """The web process's prediction machinery: model cache, batchers, prediction log, and
    the guarded HTTP client that fetches images sent by URL."""

    def __init__(self, *, cache: ModelCache, log: PredictionLogBuffer, max_batch: int,
                 max_pixels: int, download_policy: DownloadPolicy,
                 pixels_per_request: int, decode_threads: int) -> None:
        self.cache = cache
        self.log = log
        self.max_batch = max_batch
        self.max_pixels = max_pixels
        self.pixels_per_request = pixels_per_request  # decoded, all images of one request
        self.decode_threads = decode_threads
        self.decoder: ThreadPoolExecutor | None = None
        # Bounds the images decoded at once: the decode pool's threads and a lone request
        # decoding on the inference thread each take a slot.
        self.decode_slots = threading.BoundedSemaphore(max(1, decode_threads))
        self.download_policy = download_policy
        self.batchers: dict[int, MicroBatcher] = {}
        self.executor: ThreadPoolExecutor | None = None
        self.http: Client | None = None
        self._writer: asyncio.Task | None = None
        self._flushing: asyncio.Task | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, factory: sessionmaker[Session],
                      storage: Storage) -> "Serving":
        """The runtime these settings describe (not started)."""
        cache = ModelCache(storage, size=settings.model_cache_size,
                           threads=settings.inference_threads,
                           max_bytes=settings.model_cache_mb * 2**20)
        log = PredictionLogBuffer(factory=factory, storage=storage,
                                  flush_s=settings.prediction_log_flush_s)
        return cls(cache=cache, log=log, max_batch=settings.batch_max_size,
                   max_pixels=settings.max_image_pixels,
                   download_policy=policy_from_settings(settings),
                   pixels_per_request=settings.predict_pixels_per_request,
                   decode_threads=settings.predict_decode_threads)

    async def start(self) -> None:
        """Open the inference thread and the download client; write the log in the background."""
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self.decoder = ThreadPoolExecutor(max_workers=max(1, self.decode_threads),
                                          thread_name_prefix="decode")
        self.http = make_client(self.download_policy)
        self._writer = asyncio.create_task(self._write_log_every(
            max(self.log.flush_s, MIN_FLUSH_INTERVAL_S)))

    async def stop(self) -> None:
        """Write what is left of the log, then release the thread and the connections."""
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        if self._flushing is not None:
            await asyncio.gather(self._flushing, return_exceptions=True)
        await asyncio.to_thread(self.log.flush)
        if self.http is not None:
            await self.http.aclose()
        if self.executor is not None:
            self.executor.shutdown(wait=False)
        if self.decoder is not None:
            self.decoder.shutdown(wait=False)

    def batcher(self, model_id: int) -> MicroBatcher:
        """The micro-batcher of a model version (made on first use)."""
        if model_id not in self.batchers:
            self.batchers[model_id] = MicroBatcher(executor=self.executor,
                                                   max_batch=self.max_batch)
        return self.batchers[model_id]

    def record(self, entries: list[LogEntry]) -> None:
        """Add rows to the prediction log; write them in the background once they are due."""
        if self.log.add(entries) and (self._flushing is None or self._flushing.done()):
            self._flushing = asyncio.create_task(asyncio.to_thread(self.log.flush))

    async def _write_log_every(self, seconds: float) -> None:
        while True:  # rows logged after the last request still reach the database
            await asyncio.sleep(seconds)
            await asyncio.to_thread(self.log.flush)
