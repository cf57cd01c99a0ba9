"""The Celery application of the workers (queues `gather` and `train`)."""

import threading

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
from app.queue import celery_config

settings = get_settings()
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
