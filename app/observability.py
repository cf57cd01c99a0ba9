"""What the system is doing: logs that carry request and job ids, Prometheus metrics."""

import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.models import Job

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
job_id: ContextVar[int | None] = ContextVar("job_id", default=None)

REQUESTS = Counter("kodiak_http_requests", "HTTP requests answered",
                   ["method", "route", "status"])
LATENCY = Histogram("kodiak_http_request_duration_seconds", "Time to answer an HTTP request",
                    ["method", "route"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
PREDICTIONS = Counter("kodiak_predictions", "Prediction requests answered, per deployment",
                      ["deployment", "status"])
RATE_LIMITED = Counter("kodiak_rate_limited", "Requests refused with 429", ["route"])


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request and job ids."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if (rid := request_id.get()) is not None:
            entry["request_id"] = rid
        if (jid := job_id.get()) is not None:
            entry["job_id"] = jid
        for name in ("method", "path", "route", "status", "duration_ms", "client"):
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """Plain lines for a terminal, with the ids in brackets when there are any."""

    def format(self, record: logging.LogRecord) -> str:
        ids = " ".join(f"{name}={value}" for name, value in
                       (("request", request_id.get()), ("job", job_id.get())) if value)
        line = super().format(record)
        return f"{line} [{ids}]" if ids else line


def configure_logging(settings: Settings) -> None:
    """Route every logger (uvicorn's and Celery's too) through one handler on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    for name in ("uvicorn", "uvicorn.error", "celery"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # The app logs one line per request itself, with its id and route.
    logging.getLogger("uvicorn.access").disabled = True


@contextmanager
def job_context(id_: int) -> Iterator[None]:
    """Every log line inside carries this job's id."""
    token = job_id.set(id_)
    try:
        yield
    finally:
        job_id.reset(token)


class SystemCollector(Collector):
    """Gauges read at scrape time: jobs by kind and state, messages waiting per queue."""

    def __init__(self, *, factory: sessionmaker[Session], settings: Settings) -> None:
        self.factory = factory
        self.settings = settings

    def collect(self):
        jobs = GaugeMetricFamily("kodiak_jobs", "Jobs by kind and state", labels=["kind", "status"])
        with self.factory() as session:
            counts = session.execute(select(Job.kind, Job.status, func.count())
                                     .group_by(Job.kind, Job.status))
            for kind, status, count in counts:
                jobs.add_metric([kind, status], count)
        yield jobs
        depth = GaugeMetricFamily("kodiak_queue_depth", "Messages waiting in a queue",
                                  labels=["queue"])
        for queue, count in queue_depths(self.settings).items():
            depth.add_metric([queue], count)
        yield depth


def queue_depths(settings: Settings) -> dict[str, int]:
    """Messages waiting per queue, read from the broker (Redis or the filesystem transport)."""
    queues = ("gather", "train")
    url = settings.resolved_broker_url()
    try:
        if url.startswith("redis"):
            import redis

            client = redis.Redis.from_url(url, socket_timeout=2)
            try:
                return {queue: int(client.llen(queue)) for queue in queues}
            finally:
                client.close()
        if url.startswith("filesystem"):
            folder = Path(settings.broker_folder()) / "out"
            names = [path.name for path in folder.glob("*.msg")] if folder.is_dir() else []
            return {queue: sum(name.endswith(f".{queue}.msg") for name in names)
                    for queue in queues}
    except Exception:  # a broker that does not answer must not break the scrape
        logging.getLogger(__name__).warning("queue depth unavailable", exc_info=True)
    return {}
