"""Training jobs: started by the web, run by a `train` worker."""

import logging
import tempfile
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import session_scope
from app.ml.images import dhash_distance
from app.models import Image, Label, ModelVersion, Project
from app.queue import TRAIN_TASK, enqueue
from app.services.errors import InvalidInputError
from app.services.jobs import JobCancelled, JobReporter, create_job
from app.storage import LocalStorage

log = logging.getLogger(__name__)
NEAR_DUPLICATE_DISTANCE = 5


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
    check_trainable(trainable_images(session=session, project=project), project.labels)
    job = create_job(session=session, project=project, kind="training", params=recipe)
    session.commit()
    enqueue(settings, TRAIN_TASK, job.id)
    return job


def near_duplicate_groups(images: list[Image]) -> list[str]:
    """A group id per image: images within a small perceptual-hash distance share one."""
    parent = list(range(len(images)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, a in enumerate(images):
        for j in range(i):
            b = images[j]
            if a.phash and b.phash and dhash_distance(a.phash, b.phash) <= NEAR_DUPLICATE_DISTANCE:
                parent[root(i)] = root(j)
    return [f"g{images[root(i)].id}" for i in range(len(images))]


def run_training(
    *, factory: sessionmaker[Session], storage: LocalStorage, settings: Settings, job_id: int
) -> None:
    """Train, export and record a model version for a claimed training job."""
    reporter = JobReporter(factory, job_id)
    job = reporter.claim(stale_seconds=settings.job_stale_seconds)
    if job is None:
        return
    # torch is imported here, in the worker only: the web process never loads it.
    from app.ml.export import export_model
    from app.ml.train import Recipe, Sample, TrainingCancelled, train_classifier

    try:
        recipe = Recipe.from_dict(job.params)
        with session_scope(factory) as session:
            project = session.get(Project, job.project_id)
            images = trainable_images(session=session, project=project)
            check_trainable(images, project.labels)
            used = sorted({image.label_id for image in images})
            label_rows = [label for label in project.labels if label.id in used]
            labels = [label.name for label in label_rows]
            index_of = {label.id: i for i, label in enumerate(label_rows)}
            groups = near_duplicate_groups(images)
            samples = [
                Sample(key=image.storage_key, label=index_of[image.label_id], group=group)
                for image, group in zip(images, groups, strict=True)
            ]
            image_id_of = {image.storage_key: image.id for image in images}
        reporter.progress(0.0, f"training on {len(samples)} images of {len(labels)} labels")
        result = train_classifier(
            samples=samples,
            labels=labels,
            read_bytes=storage.read,
            recipe=recipe,
            progress=reporter.progress,
            should_stop=reporter.should_stop,
            threads=settings.worker_threads,
        )
        metrics = dict(result.metrics)
        for row in metrics.get("top_losses", []):
            row["image_id"] = image_id_of.get(row.pop("key", None))
        dataset = {
            "image_ids": [image_id_of[s.key] for s in samples],
            "valid_image_ids": [image_id_of[samples[i].key] for i in result.valid_indices],
            "labels": labels,
        }
        result.metrics = metrics
        reporter.progress(0.99, "exporting the model (safetensors, ONNX)")
        with session_scope(factory) as session:
            model = ModelVersion(
                project_id=job.project_id,
                job_id=job_id,
                backbone=recipe.backbone,
                labels=labels,
                metrics=metrics,
                recipe=recipe.to_dict(),
                storage_prefix="",
            )
            session.add(model)
            session.flush()
            prefix = f"models/{job.project_id}/{model.id}"
            with tempfile.TemporaryDirectory() as tmp:
                export_model(
                    result=result,
                    out_dir=Path(tmp),
                    backbone=recipe.backbone,
                    recipe=recipe.to_dict(),
                    dataset=dataset,
                )
                for path in Path(tmp).iterdir():
                    storage.put_file(f"{prefix}/{path.name}", path)
            model.storage_prefix = prefix
            error_rate = metrics.get("error_rate", 0.0)
            reporter.finish(
                status="succeeded",
                message=f"done: error rate {error_rate:.1%} in {result.seconds:.0f} s",
                result={"model_id": model.id},
                session=session,
            )
    except (TrainingCancelled, JobCancelled):
        reporter.finish(status="cancelled", message="cancelled")
    except InvalidInputError as exc:
        reporter.finish(status="failed", message="failed", error=str(exc))
    except Exception as exc:
        log.exception("training job %s failed", job_id)
        reporter.finish(status="failed", message="failed", error=f"{type(exc).__name__}: {exc}")
