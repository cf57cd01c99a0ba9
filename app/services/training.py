"""Training and lr_find jobs: started by the web, run by a `train` worker."""

import logging
import math
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import session_scope
from app.ml import near_duplicates
from app.ml.recipe import Recipe, TrainingCancelled, checked
from app.ml.split import Sample
from app.models import Image, ImagePrediction, Job, Label, ModelVersion, Project, utcnow
from app.queue import LR_FIND_TASK, TRAIN_TASK
from app.services.errors import InvalidInputError
from app.services.jobs import JobCancelled, JobReporter, create_job, submit_job
from app.storage import Storage

log = logging.getLogger(__name__)
PREDICTION_SORTS = {
    "loss": ImagePrediction.loss.desc(),
    "confidence": ImagePrediction.confidence.asc(),
    "image": ImagePrediction.image_id.asc(),
}


def trainable_images(*, session: Session, project: Project) -> list[Image]:
    """Active, labelled images in id order (the order the seeded split sees)."""
    query = (
        select(Image)
        .where(Image.project_id == project.id, Image.status == "active")
        .where(Image.label_id.is_not(None))
        .order_by(Image.id)
    )
    return list(session.scalars(query))


def check_trainable(images: list[Image], labels: list[Label]) -> None:
    """At least two labels with two images each, or a message saying what is missing."""
    counts = {label.id: 0 for label in labels}
    for image in images:
        counts[image.label_id] = counts.get(image.label_id, 0) + 1
    ready = [label for label in labels if counts[label.id] >= 2]
    if len(ready) < 2:
        raise InvalidInputError(
            "training needs at least two labels with at least two active images each; have "
            + ", ".join(f"{label.name}: {counts[label.id]}" for label in labels)
        )


def start_training(*, session: Session, settings: Settings, project: Project, recipe: dict):
    """Create a training job, commit, then enqueue it."""
    return _start(session=session, settings=settings, project=project, recipe=recipe,
                  kind="training", task=TRAIN_TASK)


def start_lr_find(*, session: Session, settings: Settings, project: Project, recipe: dict):
    """Create an lr_find job (a learning-rate sweep of the head), commit, then enqueue it."""
    return _start(session=session, settings=settings, project=project, recipe=recipe,
                  kind="lr_find", task=LR_FIND_TASK)


def validated_recipe(recipe: dict) -> dict:
    """The fields given, checked against the Recipe's limits (API, forms and retrains)."""
    try:
        return checked(recipe)
    except ValueError as exc:
        raise InvalidInputError(f"invalid training recipe: {exc}") from exc


def _start(*, session, settings, project, recipe, kind, task):
    recipe = validated_recipe(recipe)
    check_trainable(trainable_images(session=session, project=project), project.labels)
    job = create_job(session=session, project=project, kind=kind, params=recipe)
    return submit_job(session=session, settings=settings, job=job, task=task)


def near_duplicate_groups(images: list[Image]) -> list[str]:
    """A group id per image, `g<id of its first image>`: images sharing a duplicate_group (set
    at upload) or near-duplicates (app.ml.near_duplicates, as at upload) share one."""
    firsts = near_duplicates.groups([near_duplicates.parse(image.phash) for image in images],
                                    joined=[image.duplicate_group for image in images])
    return [f"g{images[first].id}" for first in firsts]


@dataclass
class _Dataset:
    samples: list
    labels: list[str]
    image_ids: list[int]


def _load_dataset(factory: sessionmaker[Session], project_id: int) -> _Dataset:
    with session_scope(factory) as session:
        project = session.get(Project, project_id)
        images = trainable_images(session=session, project=project)
        check_trainable(images, project.labels)
        used = {image.label_id for image in images}
        label_rows = [label for label in project.labels if label.id in used]
        index_of = {label.id: i for i, label in enumerate(label_rows)}
        groups = near_duplicate_groups(images)
        samples = [
            Sample(key=image.storage_key, label=index_of[image.label_id], group=group)
            for image, group in zip(images, groups, strict=True)
        ]
        return _Dataset(samples=samples, labels=[label.name for label in label_rows],
                        image_ids=[image.id for image in images])


@contextmanager
def heartbeat(factory: sessionmaker[Session], job_id: int, *, every: float) -> Iterator[None]:
    """Keep the job's heartbeat fresh from a thread while a step reports no progress (decoding,
    ONNX export); a killed worker takes the thread with it, so its job still goes stale."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            try:
                with session_scope(factory) as session:
                    job = session.get(Job, job_id)
                    if job is None or job.status != "running":
                        return
                    job.heartbeat_at = utcnow()
            except Exception:  # a missed beat is retried; the job's own work decides its fate
                log.warning("heartbeat of job %s failed", job_id, exc_info=True)

    thread = threading.Thread(target=beat, name=f"heartbeat-{job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def _live_progress(reporter: JobReporter):
    """A train_classifier progress callback that also publishes the curves so far."""
    history: list[dict] = []

    def progress(fraction: float, message: str, extra: dict) -> None:
        phase = extra.get("phase")
        if "history" in extra:
            history.append(extra["history"])
            reporter.update_detail(history=list(history), phase=phase)
        elif phase != reporter.detail.get("phase"):
            reporter.update_detail(phase=phase)
        reporter.progress(fraction, message)

    return progress


def run_training(
    *, factory: sessionmaker[Session], storage: Storage, settings: Settings, job_id: int
) -> None:
    """Train, export and record a model version and its out-of-sample predictions."""
    reporter = JobReporter(factory, job_id)
    job = reporter.claim(stale_seconds=settings.job_stale_seconds)
    if job is None:
        return
    with _outcome(reporter, "training"), heartbeat(factory, job_id,
                                                    every=_beat_interval(settings)):
        # torch is imported here, in the worker only (the web process never loads it),
        # under the heartbeat: a first import can outlast a short stale window.
        from app.ml.export import export_model
        from app.ml.train import train_classifier

        recipe = Recipe.from_dict(job.params)
        data = _load_dataset(factory, job.project_id)
        reporter.progress(0.0, f"training on {len(data.samples)} images of "
                          f"{len(data.labels)} labels")
        result = train_classifier(
            samples=data.samples,
            labels=data.labels,
            read_bytes=storage.read,
            recipe=recipe,
            progress=_live_progress(reporter),
            should_stop=reporter.should_stop,
            threads=settings.worker_threads,
            body_cache=body_cache_dir(settings),
        )
        image_id_of = {s.key: i for s, i in zip(data.samples, data.image_ids, strict=True)}
        metrics = dict(result.metrics)
        metrics["top_losses"] = [
            {**{k: v for k, v in row.items() if k != "key"},
             "image_id": image_id_of.get(row.get("key"))}
            for row in metrics.get("top_losses", [])
        ]
        metrics["skipped"] = [image_id_of.get(key) for key in metrics.get("skipped", [])]
        result.metrics = metrics
        dataset = {
            "image_ids": data.image_ids,
            "valid_image_ids": [data.image_ids[i] for i in result.valid_indices],
            "labels": data.labels,
        }
        reporter.update_detail(phase="export")
        reporter.progress(0.99, "exporting the model (safetensors, ONNX)")
        # Export and upload first, under a fresh prefix no row points at yet; then one short
        # transaction records the version, its predictions and the job's outcome. A version
        # is never visible half written, and SQLite's write lock is held for milliseconds.
        prefix = f"models/{job.project_id}/{uuid.uuid4().hex}"
        try:
            with tempfile.TemporaryDirectory() as tmp:
                export_model(result=result, out_dir=Path(tmp), backbone=recipe.backbone,
                             recipe=recipe.to_dict(), dataset=dataset)
                for path in sorted(Path(tmp).iterdir()):
                    storage.put_file(f"{prefix}/{path.name}", path)
            with session_scope(factory) as session:
                model = ModelVersion(
                    project_id=job.project_id, job_id=job_id, backbone=recipe.backbone,
                    labels=data.labels, metrics=metrics, recipe=recipe.to_dict(),
                    storage_prefix=prefix,
                )
                session.add(model)
                session.flush()
                session.add_all(_prediction_rows(model.id, data, result))
                error_rate = metrics.get("error_rate", 0.0)
                reporter.finish(
                    status="succeeded",
                    message=f"done: error rate {error_rate:.1%} in {result.seconds:.0f} s",
                    result={"model_id": model.id},
                    session=session,
                )
        except BaseException:
            storage.delete_prefix(prefix)  # no row points at it: nothing is left behind
            raise


def body_cache_dir(settings: Settings) -> Path:
    """Where a train worker keeps the frozen bodies' ONNX graphs (app.ml.body): beside the
    installed packages they derive from, else under the home."""
    from app.ml.body import shared_cache_dir

    return shared_cache_dir() or (settings.home / "cache" / "bodies").resolve()


def warm_up(*, settings: Settings) -> None:
    """Import torch and export the default backbone's body graph if it is not cached yet, so
    a train worker's first training waits for neither (about 5 s and 20-40 s on 2 cores)."""
    from app.ml.body import body_onnx
    from app.ml.recipe import Recipe

    body_onnx(Recipe().backbone, body_cache_dir(settings))


def run_lr_find(
    *, factory: sessionmaker[Session], storage: Storage, settings: Settings, job_id: int
) -> None:
    """Sweep the head's learning rate; the job's result is {lrs, losses, suggestion}."""
    reporter = JobReporter(factory, job_id)
    job = reporter.claim(stale_seconds=settings.job_stale_seconds)
    if job is None:
        return
    with _outcome(reporter, "lr_find"):
        with heartbeat(factory, job_id, every=_beat_interval(settings)):
            from app.ml.lr_find import lr_find

            recipe = Recipe.from_dict(job.params)
            data = _load_dataset(factory, job.project_id)
            found = lr_find(samples=data.samples, labels=data.labels, read_bytes=storage.read,
                            recipe=recipe, progress=_live_progress(reporter),
                            should_stop=reporter.should_stop, threads=settings.worker_threads)
        reporter.finish(status="succeeded", result=found,
                        message=f"suggested learning rate {found['suggestion']:.2g}")


@contextmanager
def _outcome(reporter: JobReporter, what: str) -> Iterator[None]:
    """Record how a worker job ended: cancelled, failed with a readable error, or crashed."""
    try:
        yield
    except (TrainingCancelled, JobCancelled):
        reporter.finish(status="cancelled", message="cancelled")
    except (InvalidInputError, ValueError) as exc:
        reporter.finish(status="failed", message="failed", error=str(exc))
    except Exception as exc:
        log.exception("%s job %s failed", what, reporter.job_id)
        reporter.finish(status="failed", message="failed", error=f"{type(exc).__name__}: {exc}")


def _beat_interval(settings: Settings) -> float:
    return max(0.5, min(30.0, settings.job_stale_seconds / 4))


def _prediction_rows(model_id: int, data: _Dataset, result) -> list[ImagePrediction]:
    """One ImagePrediction per image that has an out-of-sample prediction."""
    valid = set(result.valid_indices)
    rows = []
    for index, probabilities in enumerate(result.oos_probabilities):
        if probabilities is None:
            continue
        given = data.samples[index].label
        best = max(range(len(probabilities)), key=probabilities.__getitem__)
        rows.append(ImagePrediction(
            model_id=model_id,
            image_id=data.image_ids[index],
            given_label=data.labels[given],
            predicted_label=data.labels[best],
            confidence=round(probabilities[best], 6),
            loss=round(-math.log(max(probabilities[given], 1e-12)), 6),
            probabilities={label: round(p, 6) for label, p in
                           zip(data.labels, probabilities, strict=True)},
            in_validation=index in valid,
        ))
    return rows


def list_predictions(
    *, session: Session, model: ModelVersion, sort: str = "loss", limit: int = 50,
    offset: int = 0,
) -> tuple[list[ImagePrediction], int]:
    """A model's out-of-sample predictions, highest loss first by default, and their count."""
    if sort not in PREDICTION_SORTS:
        raise InvalidInputError(f"sort must be one of {', '.join(PREDICTION_SORTS)}")
    query = select(ImagePrediction).where(ImagePrediction.model_id == model.id)
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    rows = session.scalars(query.order_by(PREDICTION_SORTS[sort], ImagePrediction.id)
                           .limit(limit).offset(offset))
    return list(rows), total
