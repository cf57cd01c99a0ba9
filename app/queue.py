"""Enqueue work by task name; the web never imports the workers."""

from celery import Celery

from app.config import Settings

TRAIN_TASK = "kodiak.train"
SEARCH_TASK = "kodiak.search"
IMPORT_TASK = "kodiak.url_import"
LR_FIND_TASK = "kodiak.lr_find"
TASK_OF_KIND = {"training": TRAIN_TASK, "lr_find": LR_FIND_TASK, "search": SEARCH_TASK,
                "url_import": IMPORT_TASK}
QUEUE_OF = {TRAIN_TASK: "train", SEARCH_TASK: "gather", IMPORT_TASK: "gather",
            LR_FIND_TASK: "train"}


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
    return config


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
