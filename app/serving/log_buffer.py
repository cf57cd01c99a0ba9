"""The prediction log, kept in memory and written in one transaction every so often."""

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from app.models import Deployment, PredictionLog
from app.storage import Storage

log = logging.getLogger(__name__)


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

    def __init__(self, *, factory: sessionmaker[Session], storage: Storage,
                 flush_s: float, max_rows: int = 500) -> None:
        self.factory = factory
        self.storage = storage
        self.flush_s = flush_s
        self.max_rows = max_rows
        self._rows: list[LogEntry] = []
        self._lock = threading.Lock()
        # A flush that finds the rows taken by another waits for that one's commit, so a
        # reader that flushes first sees every row logged before it.
        self._writing = threading.Lock()
        self._last_flush = time.monotonic()

    def add(self, entries: list[LogEntry]) -> bool:
        """Queue rows; True when the caller should flush now."""
        with self._lock:
            self._rows.extend(entries)
            due = time.monotonic() - self._last_flush >= self.flush_s
            return due or len(self._rows) >= self.max_rows

    def flush(self) -> int:
        """Write the queued rows (and images, where the deployment keeps them)."""
        with self._writing:
            with self._lock:
                rows, self._rows = self._rows, []
                self._last_flush = time.monotonic()
            if not rows:
                return 0
            return self._write(rows)

    def _write(self, rows: list[LogEntry]) -> int:
        session = self.factory()
        try:
            live = set(session.scalars(select(Deployment.id).where(
                Deployment.id.in_({r.deployment_id for r in rows}))))
            values = []
            for row in rows:
                if row.deployment_id not in live:
                    continue
                key = None
                if row.image is not None:
                    key = f"predictions/{row.deployment_id}/{uuid.uuid4().hex}.jpg"
                    self.storage.put(key, row.image)
                values.append({
                    "deployment_id": row.deployment_id, "model_id": row.model_id,
                    "label": row.label, "confidence": row.confidence, "unknown": row.unknown,
                    "latency_ms": row.latency_ms, "source": row.source, "image_key": key,
                    "created_at": row.created_at,
                })
            if values:  # one executemany, not an ORM object per row: it shares the web's GIL
                session.execute(insert(PredictionLog), values)
            session.commit()
        except Exception:
            session.rollback()
            log.exception("could not write %d prediction log rows", len(rows))
            return 0
        finally:
            session.close()
        return len(rows)
