"""The Celery application of the workers (queues `gather` and `train`)."""

import logging
import threading
import time

from celery import Celery
from celery.signals import (
    setup_logging,
    task_postrun,
    task_prerun,
    worker_process_init,
    worker_ready,
    worker_shutdown,
)

from app.config import get_settings
from app.queue import QUEUE_OF, TRAIN_TASK, celery_config

settings = get_settings()
log = logging.getLogger(__name__)
app = Celery("kodiak", include=["workers.tasks"])
app.conf.update(celery_config(settings))


@worker_process_init.connect
def _limit_threads(**_kwargs) -> None:
    """PyTorch in a worker uses only the cores the worker owns."""
    if settings.worker_threads:
        import torch

        torch.set_num_threads(settings.worker_threads)


_sweeper_stop = threading.Event()


@worker_ready.connect
def _start_sweeper(**_kwargs) -> None:
    """Each worker sweeps the job table now and then: silent running jobs fail, queued jobs
    the broker lost are sent again (see `app.services.jobs.sweep`)."""
    from app.db import make_engine, make_session_factory
    from app.services.jobs import sweep_forever

    factory = make_session_factory(make_engine(settings.resolved_database_url()))
    threading.Thread(target=sweep_forever, name="kodiak-sweeper", daemon=True,
                     kwargs={"factory": factory, "settings": settings,
                             "stop": _sweeper_stop}).start()


@worker_ready.connect
def _warm_up_training(sender=None, **_kwargs) -> None:
    """A worker on the train queue imports torch and exports the default body graph while
    it waits for its first training (app.services.training.warm_up), in the background."""
    consumer = getattr(sender, "task_consumer", None)
    queues = {queue.name for queue in getattr(consumer, "queues", [])}
    if QUEUE_OF[TRAIN_TASK] not in queues:
        return

    def warm_up() -> None:
        started = time.perf_counter()
        from app.services.training import warm_up

        try:
            warm_up(settings=settings)
        except Exception:  # the first training will try again, and say why if it fails
            log.warning("training warm-up failed", exc_info=True)
        else:
            log.info("training warm-up done in %.1f s", time.perf_counter() - started)

    threading.Thread(target=warm_up, name="kodiak-warm-up", daemon=True).start()


@worker_shutdown.connect
def _stop_sweeper(**_kwargs) -> None:
    _sweeper_stop.set()


@setup_logging.connect
def _logging(**_kwargs) -> None:
    """The same log lines as the web (JSON with KODIAK_LOG_FORMAT=json), with job ids."""
    from app.observability import configure_logging

    configure_logging(settings)


_job_tokens: dict[str, object] = {}


@task_prerun.connect
def _job_id_in_logs(task_id=None, args=None, **_kwargs) -> None:
    from app.observability import job_id

    if args and isinstance(args[0], int):
        _job_tokens[task_id] = job_id.set(args[0])


@task_postrun.connect
def _job_id_out_of_logs(task_id=None, **_kwargs) -> None:
    from app.observability import job_id

    if (token := _job_tokens.pop(task_id, None)) is not None:
        job_id.reset(token)
