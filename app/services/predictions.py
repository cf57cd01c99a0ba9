"""Predictions from deployed models, over the web process's serving runtime (app.serving).

`predict` decodes and preprocesses in a worker thread, then hands the inputs to the model's
micro-batcher, so concurrent requests share one trip to the inference thread; a request that
finds the batcher idle decodes on the inference thread itself, one trip instead of two.
Every answer is logged.
"""

import asyncio
import functools
import json
import logging
import time
from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.ml.images import ImageRejected, PixelBudget, decode_rgb
from app.ml.predict import Classifier, ModelLoadError
from app.models import Deployment, Image, Label, ModelVersion, PredictionLog
from app.services.deployments import FAMILIARITY, PROBABILITY, unknown_score
from app.services.downloader import DownloadError, download
from app.services.errors import InvalidInputError, UnavailableError
from app.serving.log_buffer import LogEntry
from app.serving.runtime import Serving
from app.storage import Storage, StorageError

log = logging.getLogger(__name__)


async def predict(*, serving: Serving, deployment: Deployment, images: list[bytes],
                  top_k: int | None, source: str = "file") -> list[dict]:
    """Answers for `images` from the deployment's current model version, logged."""
    started = time.perf_counter()
    model = deployment.model
    answers = await _answers(serving=serving, model=model, images=images, top_k=top_k,
                             threshold=unknown_threshold(deployment=deployment, model=model))
    latency_ms = (time.perf_counter() - started) * 1000 / len(images)
    serving.record([
        LogEntry(deployment_id=deployment.id, model_id=model.id, label=a["label"],
                 confidence=a["confidence"], unknown=a["unknown"], latency_ms=latency_ms,
                 source=source, image=data if deployment.log_images else None)
        for a, data in zip(answers, images, strict=True)
    ])
    return answers


async def try_model(*, serving: Serving, model: ModelVersion, images: list[bytes],
                    top_k: int | None) -> list[dict]:
    """Answers from a model version that may not be deployed (its owner trying it), with the
    threshold calibrated at training time; the same decoding, limits and batcher as a
    deployment's, and nothing logged."""
    return await _answers(serving=serving, model=model, images=images, top_k=top_k,
                          threshold=calibrated_threshold(model))


async def _answers(*, serving: Serving, model: ModelVersion, images: list[bytes],
                   top_k: int | None, threshold: float | None) -> list[dict]:
    batcher = serving.batcher(model.id)
    if batcher.idle() and serving.cache.has(model):
        # a lone request: decode and run in one trip to the inference thread (a model still
        # to be loaded is loaded on the decode pool, never on the inference thread)
        classifier, rows = await batcher.run_alone(
            functools.partial(_prepare_and_forward, serving, model, images))
    else:  # decode beside the running pass, then join the next one
        classifier, inputs = await asyncio.get_running_loop().run_in_executor(
            serving.decoder, _prepare, serving, model, images)
        rows = await batcher.submit(classifier, inputs)
    probs, familiar = classifier.split(rows)
    score = unknown_score(model)
    return [shape_answer(labels=classifier.labels, row=row, model_id=model.id,
                         threshold=threshold, top_k=top_k, score=score,
                         familiarity=None if familiar is None else float(familiar[i]))
            for i, row in enumerate(probs)]


def _prepare_and_forward(serving: Serving, model: ModelVersion,
                         images: list[bytes]) -> tuple[Classifier, np.ndarray]:
    classifier, inputs = _prepare(serving, model, images)
    return classifier, classifier.forward(inputs)


def _prepare(serving: Serving, model: ModelVersion,
             images: list[bytes]) -> tuple[Classifier, np.ndarray]:
    try:
        classifier = serving.cache.get(model)
    except (ModelLoadError, StorageError) as exc:
        log.error("model %s cannot be loaded: %s", model.id, exc)
        raise UnavailableError(
            f"model {model.id} cannot be loaded (its files in the store are missing or "
            "damaged); its owner can switch a deployment to another model "
            "version, or an operator can run `kodiak check`") from exc
    draft = classifier.preprocessing.resize  # decode exactly as training did
    budget = PixelBudget(serving.pixels_per_request)  # one call: one request's images
    with serving.decode_slots:  # on the inference thread too: decode_threads at once
        try:
            decoded = [decode_rgb(data, max_pixels=serving.max_pixels, draft_size=draft,
                                  budget=budget) for data in images]
        except ImageRejected as exc:
            raise InvalidInputError(f"cannot read the image: {exc}") from exc
        return classifier, classifier.prepare(decoded)


async def fetch_image(*, serving: Serving, url: str) -> bytes:
    """The image at a URL, through the downloader's SSRF guard and size and time limits."""
    try:
        return (await download(serving.http, url, policy=serving.download_policy)).data
    except DownloadError as exc:
        raise InvalidInputError(f"cannot download the image at that URL: {exc}") from exc


def unknown_threshold(*, deployment: Deployment, model: ModelVersion) -> float | None:
    """The deployment's own threshold, else the one calibrated at training time, else none.
    Either applies to the model's unknown score (`unknown_score`)."""
    if deployment.threshold is not None:
        return deployment.threshold
    return calibrated_threshold(model)


def calibrated_threshold(model: ModelVersion) -> float | None:
    """The unknown-score threshold calibrated when the version was trained, if any."""
    value = (model.metrics or {}).get("unknown_threshold")
    return float(value) if isinstance(value, int | float) else None


def shape_answer(*, labels: list[str], row: np.ndarray, model_id: int,
                 threshold: float | None, top_k: int | None, score: str = PROBABILITY,
                 familiarity: float | None = None) -> dict:
    """One prediction: the answer (the top label, or None for "none of these", with the
    reason), the top label and its confidence, probabilities sorted high to low, and the
    photo's familiarity with the training photos when the model has them
    (schemas.PredictionOut)."""
    order = np.argsort(-row, kind="stable")
    if top_k is not None:
        order = order[:top_k]
    best = int(order[0])
    confidence = float(row[best])
    value = familiarity if score == FAMILIARITY else confidence
    unknown = threshold is not None and value is not None and value < threshold
    return {
        "answer": None if unknown else labels[best],
        "label": labels[best],
        "confidence": confidence,
        "probabilities": {labels[int(i)]: float(row[int(i)]) for i in order},
        "model_id": model_id,
        "unknown": unknown,
        "threshold": threshold,
        "unknown_score": score,
        "familiarity": familiarity,
        "unknown_reason": _reason(score, value, threshold) if unknown else None,
    }


def _reason(score: str, value: float, threshold: float) -> str:
    if score == FAMILIARITY:
        return (f"unlike the photos it was trained on: familiarity {value:.1%}, "
                f"threshold {threshold:.1%}")
    return f"not sure enough: confidence {value:.1%}, threshold {threshold:.1%}"


def log_summary(*, session: Session, deployment: Deployment, days: int = 30) -> dict:
    """Counts per label, unknown rate, mean confidence and latency p50/p95, overall and per day."""
    since = datetime.now(UTC) - timedelta(days=days)
    rows = session.execute(
        select(PredictionLog.created_at, PredictionLog.label, PredictionLog.confidence,
               PredictionLog.unknown, PredictionLog.latency_ms, PredictionLog.model_id)
        .where(PredictionLog.deployment_id == deployment.id, PredictionLog.created_at >= since)
        .order_by(PredictionLog.created_at)
    ).all()
    by_day: dict[str, list] = {}
    for row in rows:
        by_day.setdefault(row.created_at.date().isoformat(), []).append(row)
    return {
        "slug": deployment.slug,
        "days": days,
        **_summarise(rows),
        "per_day": [{"day": day, **_summarise(day_rows)} for day, day_rows in by_day.items()],
    }


def _summarise(rows: list) -> dict:
    if not rows:
        return {"count": 0, "labels": {}, "unknown_rate": None, "mean_confidence": None,
                "latency_p50_ms": None, "latency_p95_ms": None, "model_ids": []}
    labels: dict[str, int] = {}
    for row in rows:
        key = "unknown" if row.unknown else row.label
        labels[key] = labels.get(key, 0) + 1
    latency = np.array([row.latency_ms for row in rows])
    return {
        "count": len(rows),
        "labels": dict(sorted(labels.items(), key=lambda kv: -kv[1])),
        "unknown_rate": sum(row.unknown for row in rows) / len(rows),
        "mean_confidence": float(np.mean([row.confidence for row in rows])),
        "latency_p50_ms": float(np.percentile(latency, 50)),
        "latency_p95_ms": float(np.percentile(latency, 95)),
        "model_ids": sorted({row.model_id for row in rows}),
    }


def example_images(*, session: Session, storage: Storage, deployment: Deployment,
                   per_label: int) -> list[Image]:
    """A few images of each label for the demo page: validation images where known."""
    model = deployment.model
    valid_ids: list[int] = []
    try:
        meta = json.loads(storage.read(f"{model.storage_prefix}/model.json"))
        valid_ids = list((meta.get("dataset") or {}).get("valid_image_ids") or [])
    except (StorageError, ValueError, OSError):
        pass
    chosen: list[Image] = []
    for name in model.labels:
        query = (select(Image).join(Label, Image.label_id == Label.id)
                 .where(Image.project_id == deployment.project_id, Label.name == name,
                        Image.status == "active"))
        if valid_ids:
            query = query.where(Image.id.in_(valid_ids))
        chosen.extend(session.scalars(query.order_by(Image.id).limit(per_label)))
    return chosen
