"""Enqueue work by task name; the web never imports the workers."""

from celery import Celery
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

from app.config import Settings

TRAIN_TASK = "kodiak.train"
SEARCH_TASK = "kodiak.search"
IMPORT_TASK = "kodiak.url_import"
LR_FIND_TASK = "kodiak.lr_find"
ORGANIZE_TASK = "kodiak.organize"  # label assist: embed (torch), cluster, suggest
TASK_OF_KIND = {"training": TRAIN_TASK, "lr_find": LR_FIND_TASK, "search": SEARCH_TASK,
                "url_import": IMPORT_TASK, "organize": ORGANIZE_TASK}
QUEUE_OF = {TRAIN_TASK: "train", SEARCH_TASK: "gather", IMPORT_TASK: "gather",
            LR_FIND_TASK: "train", ORGANIZE_TASK: "train"}


def celery_config(settings: Settings) -> dict:
    """Celery settings shared by the producer (web) and the workers."""
    config = {
        "broker_url": settings.resolved_broker_url(),
        "task_ignore_result": True,
        "result_backend": None,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": "gather",
        "task_routes": {name: {"queue": queue} for name, queue in QUEUE_OF.items()},
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        # A job's state lives in the database: a running job goes on when the broker goes
        # away, and its worker takes new jobs once the broker is back (RedisTransport).
        "worker_cancel_long_running_tasks_on_connection_loss": False,
    }
    if config["broker_url"].startswith("filesystem://"):
        folder = settings.broker_folder()
        for sub in ("out", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        config["broker_transport_options"] = {
            "data_folder_in": str(folder / "out"),
            "data_folder_out": str(folder / "out"),
            "processed_folder": str(folder / "processed"),
            # kombu's default is `control` in the working directory (the repository)
            "control_folder": str(folder / "control"),
            "store_processed": False,
            "polling_interval": 0.5,
        }
    else:
        # Above the longest training run, so a running job is not redelivered.
        config["broker_transport_options"] = {"visibility_timeout": 6 * 3600}
    if config["broker_url"].startswith("redis://"):
        config["broker_transport"] = RedisTransport
    return config


class _RedisQoS(kombu_redis.QoS):
    """Redis's unacknowledged messages, minus a crash when Redis goes away.

    After losing the broker, Celery (5.7) collects the connection and then closes it: closing
    restores the unacknowledged messages (a running job's, with acks_late), and the running job
    acks its message when it ends, both through a transport that is gone by then; either
    AttributeError stops the worker for good, so nothing takes jobs once Redis is back. With
    the transport gone there is no Redis to reach: forget the message here (Redis, if it kept
    it, restores it after visibility_timeout, and a job's claim is exactly-once).
    """

    def _gone(self) -> bool:
        connection = self.channel.connection
        return connection is None or connection.client is None

    def restore_unacked(self, client=None):
        if self._gone():
            self._delivered.clear()
            return None
        return super().restore_unacked(client)

    def ack(self, delivery_tag):
        if self._gone():
            return virtual.QoS.ack(self, delivery_tag)  # the local state only
        return super().ack(delivery_tag)


class _RedisChannel(kombu_redis.Channel):
    QoS = _RedisQoS


class RedisTransport(kombu_redis.Transport):
    """kombu's Redis transport whose workers survive a Redis restart (see _RedisQoS)."""

    Channel = _RedisChannel


_producers: dict[tuple[str, str], Celery] = {}


def _producer(settings: Settings) -> Celery:
    key = (settings.resolved_broker_url(), str(settings.broker_folder()))
    if key not in _producers:
        app = Celery("kodiak-producer")
        app.conf.update(celery_config(settings))
        _producers[key] = app
    return _producers[key]


def enqueue(settings: Settings, task: str, *args: int) -> None:
    """Send `task` with id arguments to its queue (call after the commit)."""
    producer = _producer(settings)
    producer.send_task(task, args=list(args), queue=QUEUE_OF[task])
