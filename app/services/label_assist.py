"""Label assist: the inbox (a project's active images without a label), grouped by look before
any model exists and given suggestions once one does; accept suggestions in bulk with undo;
find similar images. The worker embeds (torch); everything here else is numpy over the
stored embeddings (`services/embeddings`), so the web process stays torch-free."""

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker
from threadpoolctl import threadpool_limits

from app.config import Settings
from app.db import session_scope
from app.ml.recipe import Recipe
from app.models import Image, ImagePrediction, InboxSuggestion, Job, ModelVersion, Project
from app.queue import ORGANIZE_TASK
from app.services import curation, embeddings
from app.services.errors import ConflictError, InvalidInputError, UnavailableError
from app.services.jobs import JobCancelled, JobReporter, create_job, submit_job
from app.services.training import heartbeat
from app.storage import Storage

log = logging.getLogger(__name__)
ORDERS = ("cluster", "confidence", "informative")
MAX_CLUSTERS = 60
KMEANS_DIMS = 64  # clustering and distances run on the leading principal axes (fast at 100k)
KMEANS_ITERATIONS = 30
KMEANS_RESTARTS = 4  # k-means++ starts: one unlucky start can merge two kinds into one group
CHUNK = 8192  # rows per distance block (memory stays bounded at any size)
SAMPLE = 20_000  # rows k-means tries its starts on
REFERENCES = 4096  # labelled images (at most, drawn at random) a distance is taken to
MARGIN_STEP = 0.05  # margins this close count as a tie, broken by distance to labelled images
DEFAULT_BACKBONE = embeddings.DEFAULT_BACKBONE
HEAD_KEYS = {"classifier.weight", "classifier.bias"}  # the linear head in weights.safetensors


def inbox_ids(project_id: int):
    """A select of the ids of the project's inbox: active images without a label."""
    return select(Image.id).where(Image.project_id == project_id, Image.status == "active",
                                  Image.label_id.is_(None))


# --- clustering (numpy) ----------------------------------------------------------------------


def cluster_count(n: int, n_labels: int) -> int:
    """How many groups to show: about sqrt(n / 2) (a grid of a cluster stays a screen or
    two), at least two per label, at most MAX_CLUSTERS and n."""
    if n <= 1:
        return n
    return min(n, MAX_CLUSTERS, max(2 * max(n_labels, 1), round(math.sqrt(n / 2))))


def principal_axes(points: np.ndarray, dims: int = KMEANS_DIMS, *, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray] | None:
    """(mean, leading `dims` principal axes) of the rows, from a sample of at most 5,000; None
    when the rows are already that small."""
    if points.shape[1] <= dims or len(points) <= dims:
        return None
    rng = np.random.default_rng(seed)
    sample = points[rng.choice(len(points), size=min(len(points), 5000), replace=False)]
    mean = sample.mean(axis=0)
    centred = sample - mean
    _, vectors = np.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
    return mean, np.ascontiguousarray(vectors[:, ::-1][:, :dims], dtype=np.float32)


def in_axes(points: np.ndarray, axes: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """The rows in the principal axes' coordinates (unchanged without axes)."""
    if axes is None:
        return np.ascontiguousarray(points, dtype=np.float32)
    mean, basis = axes
    return np.ascontiguousarray((points - mean) @ basis, dtype=np.float32)


def kmeans(points: np.ndarray, k: int, *, seed: int = 0, iterations: int = KMEANS_ITERATIONS,
           restarts: int = KMEANS_RESTARTS) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means from k-means++ starts, the best of `restarts` (least squared distance,
    tried on a sample of at most SAMPLE rows, then refined on all): (cluster of each row,
    distance to its centre)."""
    points = np.ascontiguousarray(points, dtype=np.float32)
    rng = np.random.default_rng(seed)
    sample = points if len(points) <= SAMPLE else points[
        rng.choice(len(points), size=SAMPLE, replace=False)]
    tries = [_lloyd(sample, _plus_plus(sample, k, np.random.default_rng(seed + run)), iterations)
             for run in range(restarts)]
    centres, _ = min(tries, key=lambda found: found[1])
    if sample is not points:
        centres, _ = _lloyd(points, centres, iterations)
    assign, dist = _nearest(points, centres)
    return assign, np.sqrt(np.maximum(dist, 0))


def _lloyd(points: np.ndarray, centres: np.ndarray,
           iterations: int) -> tuple[np.ndarray, float]:
    """Lloyd's iterations from `centres`: the final centres and their squared distance."""
    k = len(centres)
    assign = np.full(len(points), -1)
    for _ in range(iterations):
        new, dist = _nearest(points, centres)
        if np.array_equal(new, assign):
            break
        assign = new
        members = np.zeros((len(points), k), dtype=np.float32)  # sums by one BLAS product
        members[np.arange(len(points)), assign] = 1
        sizes = members.sum(axis=0)
        centres = (members.T @ points) / np.maximum(sizes, 1)[:, None]
        empty = np.flatnonzero(sizes == 0)
        if len(empty):  # an empty cluster restarts at the points farthest from their centres
            centres[empty] = points[np.argsort(dist)[::-1][:len(empty)]]
    _, dist = _nearest(points, centres)
    return centres.astype(np.float32), float(dist.sum())


def _plus_plus(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding: each next centre drawn in proportion to squared distance."""
    centres = [points[rng.integers(len(points))]]
    closest = ((points - centres[0]) ** 2).sum(axis=1)
    for _ in range(1, k):
        total = closest.sum()
        pick = rng.integers(len(points)) if total <= 0 else rng.choice(len(points),
                                                                       p=closest / total)
        centres.append(points[pick])
        closest = np.minimum(closest, ((points - points[pick]) ** 2).sum(axis=1))
    return np.stack(centres).astype(np.float32)


def _nearest(points: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's nearest centre and squared distance, CHUNK rows at a time."""
    assign = np.empty(len(points), dtype=np.int64)
    dist = np.empty(len(points), dtype=np.float32)
    centre_sq = (centres ** 2).sum(axis=1)
    for start in range(0, len(points), CHUNK):
        block = points[start:start + CHUNK]
        d = (block ** 2).sum(axis=1)[:, None] - 2 * block @ centres.T + centre_sq[None]
        assign[start:start + CHUNK] = d.argmin(axis=1)
        dist[start:start + CHUNK] = d[np.arange(len(block)), assign[start:start + CHUNK]]
    return assign, dist


def group_by_look(points: np.ndarray, *, n_labels: int, seed: int = 0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Cluster rows (unit vectors in principal axes): (cluster per row, numbered largest
    first; distance to its centre, so a cluster shows its typical images first and its
    misfits last)."""
    k = cluster_count(len(points), n_labels)
    if k == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    assign, dist = kmeans(points, k, seed=seed)
    by_size = np.argsort(-np.bincount(assign, minlength=k), kind="stable")
    renumber = np.empty(k, dtype=np.int64)
    renumber[by_size] = np.arange(k)
    return renumber[assign], dist


def nearest_distance(queries: np.ndarray, references: np.ndarray, *, seed: int = 0
                     ) -> np.ndarray:
    """Distance from each query row to its nearest reference row (at most REFERENCES of
    them, drawn at random: the ordering it serves needs no more)."""
    if len(references) > REFERENCES:
        rng = np.random.default_rng(seed)
        references = references[rng.choice(len(references), size=REFERENCES, replace=False)]
    ref_sq = (references ** 2).sum(axis=1)
    out = np.empty(len(queries), dtype=np.float32)
    for start in range(0, len(queries), CHUNK):
        block = queries[start:start + CHUNK]
        d = (block ** 2).sum(axis=1)[:, None] - 2 * block @ references.T + ref_sq[None]
        out[start:start + CHUNK] = np.sqrt(np.maximum(d.min(axis=1), 0))
    return out


# --- suggestions -----------------------------------------------------------------------------


def head_applies(model: ModelVersion, backbone: str = DEFAULT_BACKBONE) -> bool:
    """Whether the model is a linear head on the stored features: trained on the frozen
    body (no unfrozen epochs), same backbone and input size."""
    recipe, default = model.recipe or {}, Recipe()  # as stored: older versions' fields too
    return (recipe.get("epochs", default.epochs) == 0 and model.backbone == backbone
            and recipe.get("image_size", default.image_size) == default.image_size)


def head_probabilities(weights: dict[str, np.ndarray], features: np.ndarray) -> np.ndarray:
    """Softmax of the model's linear head (classifier.weight, classifier.bias) on features."""
    logits = features @ weights["classifier.weight"].T.astype(np.float32)
    logits = logits + weights["classifier.bias"].astype(np.float32)
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def informative_order(margins: np.ndarray, novelty: np.ndarray | None) -> np.ndarray:
    """Row order, most informative first: the smallest margin between the top two
    probabilities (the model is least sure), margins within MARGIN_STEP tied and broken by
    the largest distance to the nearest labelled image (least like what is labelled)."""
    distance = np.zeros(len(margins)) if novelty is None else novelty
    return np.lexsort((-distance, np.floor(margins / MARGIN_STEP)))


def _margins(probabilities: np.ndarray) -> np.ndarray:
    if probabilities.shape[1] < 2:
        return np.ones(len(probabilities))
    top2 = np.sort(probabilities, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


# --- the organize job (worker) ---------------------------------------------------------------


def start_organize(*, session: Session, settings: Settings, project: Project) -> Job:
    """Queue an organize job for the project, or return the one already queued."""
    queued = session.scalar(select(Job).where(
        Job.project_id == project.id, Job.kind == "organize", Job.status == "queued"
    ).order_by(Job.id.desc()).limit(1))
    if queued is not None:
        return queued
    job = create_job(session=session, project=project, kind="organize",
                     params={"backbone": DEFAULT_BACKBONE})
    return submit_job(session=session, settings=settings, job=job, task=ORGANIZE_TASK)


def organize_if_inbox(*, session: Session, settings: Settings, project_id: int) -> Job | None:
    """start_organize when the project has an inbox (after uploads and trainings); a queue
    that does not answer is logged, not raised: what started it has already succeeded."""
    if session.scalar(inbox_ids(project_id).limit(1)) is None:
        return None
    try:
        return start_organize(session=session, settings=settings,
                              project=session.get(Project, project_id))
    except UnavailableError:
        log.warning("could not queue the inbox's organize job for project %s", project_id)
        return None


def organize_after_upload(*, session: Session, settings: Settings, project_id: int,
                          added: list[dict]) -> Job | None:
    """After an upload or import (its `added` entries): organize when some went to the
    inbox."""
    if any(entry.get("label") is None for entry in added):
        return organize_if_inbox(session=session, settings=settings, project_id=project_id)
    return None


def organize_after(*, factory: sessionmaker[Session], settings: Settings, job_id: int) -> None:
    """Once a worker job ended, organize the inbox again where it changed: after a training
    (the suggestions come from the new model), and after a search or URL import into the
    inbox (new images to embed and group)."""
    with session_scope(factory) as session:
        job = session.get(Job, job_id)
        if job is None or job.status not in ("succeeded", "failed", "cancelled"):
            return
        trained = job.kind == "training" and job.status == "succeeded"
        gathered = job.kind in ("search", "url_import") and not (job.params or {}).get("label")
        if trained or gathered:
            organize_if_inbox(session=session, settings=settings, project_id=job.project_id)


def run_organize(*, factory: sessionmaker[Session], storage: Storage, settings: Settings,
                 job_id: int) -> None:
    """Embed the project's images not embedded yet, group the inbox by look and, with a
    model, store a suggestion for each inbox image."""
    reporter = JobReporter(factory, job_id)
    job = reporter.claim(stale_seconds=settings.job_stale_seconds)
    if job is None:
        return
    backbone = (job.params or {}).get("backbone", DEFAULT_BACKBONE)
    with _outcome(reporter), heartbeat(factory, job_id,
                                       every=max(0.5, min(30.0, settings.job_stale_seconds / 4))):
        added = _embed_missing(factory=factory, storage=storage, settings=settings,
                               reporter=reporter, project_id=job.project_id, backbone=backbone)
        reporter.progress(0.9, "grouping the inbox by look")
        with session_scope(factory) as session:
            rows, summary = organize_rows(session=session, storage=storage,
                                          project_id=job.project_id, backbone=backbone,
                                          job_id=job_id)
        with session_scope(factory) as session:
            session.execute(delete(InboxSuggestion)
                            .where(InboxSuggestion.project_id == job.project_id))
            session.add_all(rows)
            reporter.finish(status="succeeded", session=session,
                            message=f"{len(rows)} inbox images in {summary['clusters']} groups"
                                    + (", with suggestions" if summary["model_id"] else ""),
                            result={**summary, "embedded": added})


def _embed_missing(*, factory, storage, settings, reporter, project_id, backbone) -> int:
    """Embed and store, a batch at a time (each committed), the images without a vector."""
    with session_scope(factory) as session:
        todo = embeddings.missing(session=session, project_id=project_id, backbone=backbone)
    if not todo:
        return 0
    from app.ml.embed import embed_images  # torch: in the worker only

    id_of = {key: id_ for id_, key in todo}
    added = 0

    def on_batch(done: int) -> None:
        reporter.progress(0.9 * done / len(todo), f"embedding images {done}/{len(todo)}")
        if reporter.should_stop():
            raise JobCancelled()

    for keys, vectors in embed_images([key for _, key in todo], read_bytes=storage.read,
                                      backbone=backbone, on_batch=on_batch,
                                      threads=settings.worker_threads):
        with session_scope(factory) as session:
            added += embeddings.save(session=session, project_id=project_id,
                                     image_ids=[id_of[key] for key in keys], vectors=vectors,
                                     backbone=backbone)
    return added


def organize_rows(*, session: Session, storage: Storage, project_id: int, backbone: str,
                  job_id: int | None = None) -> tuple[list[InboxSuggestion], dict]:
    """One InboxSuggestion per embedded inbox image: its cluster and, with a model, its
    suggestion and informative rank; and a summary for the job's result."""
    project = session.get(Project, project_id)
    inbox = list(session.scalars(inbox_ids(project_id).order_by(Image.id)))
    ids, vectors = embeddings.load(session=session, project_id=project_id, image_ids=inbox,
                                   backbone=backbone)
    model = curation.latest_model(session=session, project=project)
    summary = {"clusters": 0, "model_id": model.id if model else None, "inbox": len(ids)}
    if not len(ids):
        return [], summary
    with threadpool_limits(limits=1, user_api="blas"):
        return _organize_rows(session=session, storage=storage, project=project, ids=ids,
                              vectors=vectors, model=model, backbone=backbone, job_id=job_id,
                              summary=summary)


def _organize_rows(*, session, storage, project, ids, vectors, model, backbone, job_id,
                   summary) -> tuple[list[InboxSuggestion], dict]:
    project_id = project.id
    unit = embeddings.unit_rows(vectors)
    axes = principal_axes(unit)
    points = in_axes(unit, axes)
    clusters, centre = group_by_look(points, n_labels=len(project.labels))
    summary["clusters"] = int(clusters.max()) + 1
    labelled = session.scalars(select(Image.id).where(
        Image.project_id == project_id, Image.status == "active", Image.label_id.is_not(None)))
    _, known = embeddings.load(session=session, project_id=project_id,
                               image_ids=list(labelled), backbone=backbone)
    novelty = (nearest_distance(points, in_axes(embeddings.unit_rows(known), axes))
               if len(known) else None)
    rows = [InboxSuggestion(image_id=int(id_), project_id=project_id, job_id=job_id,
                            cluster=int(clusters[i]), centre_distance=float(centre[i]),
                            labelled_distance=None if novelty is None else float(novelty[i]))
            for i, id_ in enumerate(ids)]
    if model is None:
        if novelty is not None:
            for rank, i in enumerate(np.argsort(-novelty, kind="stable")):
                rows[i].informative_rank = rank
        return rows, summary
    probabilities = model_probabilities(session=session, storage=storage, model=model,
                                        image_ids=ids, features=vectors, backbone=backbone)
    margins = _margins(probabilities)
    for rank, i in enumerate(informative_order(margins, novelty)):
        best = int(probabilities[i].argmax())
        rows[i].model_id, rows[i].label = model.id, model.labels[best]
        rows[i].confidence = round(float(probabilities[i, best]), 6)
        rows[i].margin = round(float(margins[i]), 6)
        rows[i].informative_rank = rank
    return rows, summary


def model_probabilities(*, session: Session, storage: Storage, model: ModelVersion,
                        image_ids: np.ndarray, features: np.ndarray,
                        backbone: str = DEFAULT_BACKBONE) -> np.ndarray:
    """The model's probabilities (its label order) for each image: out of sample where the
    image was in its training (its stored out-of-sample prediction), else its linear head on
    the stored features, or its ONNX graph on the image when the body was fine-tuned."""
    weights = {}
    if head_applies(model, backbone):
        from safetensors.numpy import load as load_weights

        weights = load_weights(storage.read(f"{model.storage_prefix}/weights.safetensors"))
    if HEAD_KEYS <= set(weights):
        probabilities = head_probabilities(weights, features)
    else:
        probabilities = _onnx_probabilities(session=session, storage=storage, model=model,
                                            image_ids=image_ids)
    held_out = {row.image_id: row.probabilities for row in session.scalars(
        select(ImagePrediction).where(ImagePrediction.model_id == model.id,
                                      ImagePrediction.image_id.in_([int(i) for i in image_ids])))}
    for i, id_ in enumerate(image_ids):
        if int(id_) in held_out:
            probabilities[i] = [held_out[int(id_)].get(label, 0.0) for label in model.labels]
    return probabilities


def _onnx_probabilities(*, session, storage, model, image_ids) -> np.ndarray:
    from app.ml.images import decode_rgb
    from app.ml.predict import Classifier

    classifier = Classifier.load(storage.local_dir(model.storage_prefix))
    keys = dict(session.execute(select(Image.id, Image.storage_key)
                                .where(Image.id.in_([int(i) for i in image_ids]))).all())
    out = np.full((len(image_ids), len(model.labels)), 1 / len(model.labels))
    for i, id_ in enumerate(image_ids):
        try:
            image = decode_rgb(storage.read(keys[int(id_)]),
                               draft_size=classifier.preprocessing.resize)
        except ValueError:
            continue
        out[i] = classifier.predict_proba([image])[0]
    return out


@contextmanager
def _outcome(reporter: JobReporter) -> Iterator[None]:
    try:
        yield
    except JobCancelled:
        reporter.finish(status="cancelled", message="cancelled")
    except Exception as exc:
        log.exception("organize job %s failed", reporter.job_id)
        reporter.finish(status="failed", message="failed", error=f"{type(exc).__name__}: {exc}")


# --- the inbox (web) -------------------------------------------------------------------------


@dataclass
class InboxPage:
    total: int
    items: list[tuple[int, InboxSuggestion | None]]
    clusters: list[dict]
    model_id: int | None
    embedded: int
    pending: int
    organize_job: Job | None


def list_inbox(*, session: Session, project: Project, cluster: int | None = None,
               order: str = "cluster", limit: int = 60, offset: int = 0) -> InboxPage:
    """A page of the inbox, with each image's suggestion (or None), the clusters and where
    the organize job stands."""
    if order not in ORDERS:
        raise InvalidInputError(f"order must be one of {', '.join(ORDERS)}")
    s = InboxSuggestion
    query = (select(Image.id, s).outerjoin(s, s.image_id == Image.id)
             .where(Image.id.in_(inbox_ids(project.id))))
    if cluster is not None:
        query = query.where(s.cluster == cluster)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    keys = {
        "cluster": (s.cluster.is_(None), s.cluster, s.centre_distance, Image.id),
        "confidence": (s.confidence.is_(None), s.confidence.desc(), Image.id),
        "informative": (s.informative_rank.is_(None), s.informative_rank, Image.id),
    }[order]
    items = [(id_, row) for id_, row in
             session.execute(query.order_by(*keys).limit(limit).offset(offset))]
    embedded = embeddings.count(session=session, image_ids_query=inbox_ids(project.id))
    model = curation.latest_model(session=session, project=project)
    job = session.scalar(select(Job).where(Job.project_id == project.id, Job.kind == "organize")
                         .order_by(Job.id.desc()).limit(1))
    inbox_size = session.scalar(select(func.count()).select_from(
        inbox_ids(project.id).subquery())) or 0
    return InboxPage(total=total, items=items, clusters=inbox_clusters(session=session,
                                                                       project=project),
                     model_id=model.id if model else None, embedded=embedded,
                     pending=inbox_size - embedded, organize_job=job)


def inbox_clusters(*, session: Session, project: Project, samples: int = 4) -> list[dict]:
    """The inbox's clusters as the last organize job left them, minus what was labelled
    since: {id, size, sample_ids (its most typical images)}, by id."""
    s = InboxSuggestion
    rows = session.execute(select(s.cluster, s.image_id)
                           .where(s.project_id == project.id, s.cluster.is_not(None),
                                  s.image_id.in_(inbox_ids(project.id)))
                           .order_by(s.cluster, s.centre_distance, s.image_id))
    clusters: dict[int, dict] = {}
    for number, image_id in rows:
        entry = clusters.setdefault(number, {"id": number, "size": 0, "sample_ids": []})
        entry["size"] += 1
        if len(entry["sample_ids"]) < samples:
            entry["sample_ids"].append(image_id)
    return list(clusters.values())


def accept_suggestions(*, session: Session, project: Project, min_confidence: float,
                       cluster: int | None = None) -> dict:
    """Label every inbox image whose suggestion is at least `min_confidence` with it (in one
    cluster when given): {accepted, changed, undo} with undo as images/bulk bodies."""
    if not 0 <= min_confidence <= 1:
        raise InvalidInputError("min_confidence must be between 0 and 1")
    s = InboxSuggestion
    query = (select(s.image_id, s.label)
             .where(s.project_id == project.id, s.image_id.in_(inbox_ids(project.id)),
                    s.label.is_not(None), s.confidence >= min_confidence)
             .order_by(s.image_id))
    if cluster is not None:
        query = query.where(s.cluster == cluster)
    names = {label.name for label in project.labels}
    by_label: dict[str, list[int]] = {}
    for image_id, label in session.execute(query):
        if label in names:  # a label deleted since the suggestion is not brought back
            by_label.setdefault(label, []).append(image_id)
    changed, batches = [], []
    for label, ids in by_label.items():
        for start in range(0, len(ids), curation.MAX_BULK):
            result = curation.bulk_update(session=session, project=project,
                                          image_ids=ids[start:start + curation.MAX_BULK],
                                          label=label)
            changed += result["changed"]
            batches += result["undo"]["batches"]
    return {"accepted": len(changed), "changed": changed, "undo": {"batches": batches}}


def similar_images(*, session: Session, image: Image, limit: int = 24,
                   backbone: str = DEFAULT_BACKBONE) -> list[tuple[Image, float]]:
    """The project's active images nearest to `image` by cosine distance, nearest first."""
    ids, vectors = embeddings.load_stored(session=session, project_id=image.project_id,
                                          backbone=backbone)
    where = np.flatnonzero(ids == image.id)
    if not len(where):
        raise ConflictError("this image has no embedding yet: organize the inbox (it runs by "
                            "itself after uploads and trainings) and try again in a moment")
    with threadpool_limits(limits=1, user_api="blas"):  # small products: no thread pool
        distance = embeddings.cosine_distances(vectors, vectors[where[0]])
    distance[where[0]] = np.inf
    want = min(len(ids) - 1, limit * 2 + 16)  # room for excluded images, left out below
    if want <= 0:
        return []
    nearest = np.argpartition(distance, want - 1)[:want]
    nearest = nearest[np.argsort(distance[nearest], kind="stable")]
    rows = {row.id: row for row in session.scalars(select(Image).where(
        Image.id.in_([int(ids[i]) for i in nearest]), Image.status == "active"))}
    found = [(rows[int(ids[i])], float(distance[i])) for i in nearest
             if int(ids[i]) in rows and np.isfinite(distance[i])]
    return found[:limit]
