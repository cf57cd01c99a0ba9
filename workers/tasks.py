"""Tasks: open a session, call one service. They may run twice (acks_late): services check."""

from functools import cache

from app.config import get_settings
from app.db import make_engine, make_session_factory
from app.queue import IMPORT_TASK, LR_FIND_TASK, ORGANIZE_TASK, SEARCH_TASK, TRAIN_TASK
from app.services import gather_pipeline, label_assist, training
from app.storage import open_storage
from workers.celery_app import app


@cache
def _resources():
    settings = get_settings()
    factory = make_session_factory(make_engine(settings.resolved_database_url()))
    return settings, factory, open_storage(settings.resolved_storage_url(), settings)


@app.task(name=TRAIN_TASK)
def train(job_id: int) -> None:
    settings, factory, storage = _resources()
    training.run_training(factory=factory, storage=storage, settings=settings, job_id=job_id)
    label_assist.organize_after(factory=factory, settings=settings, job_id=job_id)


@app.task(name=SEARCH_TASK)
def gather_search(job_id: int) -> None:
    settings, factory, storage = _resources()
    gather_pipeline.run_gathering(factory=factory, storage=storage, settings=settings,
                                  job_id=job_id)
    label_assist.organize_after(factory=factory, settings=settings, job_id=job_id)


@app.task(name=IMPORT_TASK)
def gather_url_import(job_id: int) -> None:
    settings, factory, storage = _resources()
    gather_pipeline.run_gathering(factory=factory, storage=storage, settings=settings,
                                  job_id=job_id)
    label_assist.organize_after(factory=factory, settings=settings, job_id=job_id)


@app.task(name=LR_FIND_TASK)
def lr_find(job_id: int) -> None:
    settings, factory, storage = _resources()
    training.run_lr_find(factory=factory, storage=storage, settings=settings, job_id=job_id)


@app.task(name=ORGANIZE_TASK)
def organize(job_id: int) -> None:
    settings, factory, storage = _resources()
    label_assist.run_organize(factory=factory, storage=storage, settings=settings,
                              job_id=job_id)
