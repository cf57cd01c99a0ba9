"""The Celery application of the workers (queues `gather` and `train`)."""

from celery import Celery
from celery.signals import worker_process_init

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
