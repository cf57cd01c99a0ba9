"""Prediction endpoints of API v1 (one image or a batch) and a deployment's log and examples."""

import base64
import binascii
import hashlib
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from app.config import Settings
from app.models import Deployment, ModelVersion, User
from app.schemas import PredictionOut, PredictionsOut, PredictJson
from app.services import deployments, predictions
from app.services.errors import InvalidInputError, NotFoundError
from app.services.ratelimit import rate_limiter, retry_after
from app.serving.runtime import Serving
from app.web.deps import (
    OptionalUserDep,
    ServingDep,
    SessionDep,
    SettingsDep,
    StorageDep,
    UserDep,
    bearer_token,
    optional_user,
)
from app.web.files import file_response
from app.web.limits import PREDICT_BODY

router = APIRouter(prefix="/api/v1")
MAX_BATCH_FILES = 64
TopK = Annotated[int | None, Query(ge=1, le=1000, description="only the k likeliest labels")]


class Limits:
    """Per-key and per-IP token buckets for the predict endpoints."""

    def __init__(self, settings: Settings) -> None:
        redis_url = settings.resolved_redis_url()
        self.by_key = rate_limiter(redis_url, name="predict-key",
                                   rate=settings.predict_rate_per_s_key,
                                   burst=settings.predict_burst_key)
        self.by_ip = rate_limiter(redis_url, name="predict-ip",
                                  rate=settings.predict_rate_per_s_ip,
                                  burst=settings.predict_burst_ip)

    def check(self, request: Request, user: User | None, cost: int) -> None:
        token = bearer_token(request)
        if token is not None:
            wait = self.by_key.take("key:" + hashlib.sha256(token.encode()).hexdigest(), cost)
        elif user is not None:
            wait = self.by_key.take(f"user:{user.id}", cost)
        else:
            wait = self.by_ip.take(f"ip:{request.client.host if request.client else '?'}", cost)
        if wait:
            raise HTTPException(
                429, f"too many predictions: retry in {retry_after(wait)} s",
                headers={"Retry-After": retry_after(wait)},
            )


async def _read_inputs(request: Request, serving: Serving, *,
                       batch: bool) -> tuple[list[bytes], str]:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=MAX_BATCH_FILES if batch else 1)
        files = form.getlist("files") if batch else form.getlist("file")
        files = [f for f in files if isinstance(f, UploadFile)]
        if not files:
            field = "files" if batch else "file"
            raise HTTPException(422, f"send the image as multipart field `{field}`")
        return [await f.read() for f in files], "batch" if batch else "file"
    if batch:
        raise HTTPException(422, "send images as multipart field `files`")
    try:
        body = PredictJson.model_validate_json(await request.body())
    except ValidationError as exc:
        raise HTTPException(
            422, "send multipart `file`, or JSON {\"image_base64\": ...} or {\"url\": ...}"
        ) from exc
    if body.image_base64:
        payload = body.image_base64
        if payload.startswith("data:"):
            payload = payload.split(",", 1)[-1]
        try:
            return [base64.b64decode(payload, validate=True)], "base64"
        except (binascii.Error, ValueError) as exc:
            raise HTTPException(422, "image_base64 is not valid base64") from exc
    if body.url:
        try:
            return [await predictions.fetch_image(serving=serving, url=body.url)], "url"
        except InvalidInputError as exc:
            raise HTTPException(422, str(exc)) from exc
    raise HTTPException(
        422, "send multipart `file`, or JSON {\"image_base64\": ...} or {\"url\": ...}"
    )


def _deployment_for(session, slug: str, user: User | None) -> Deployment:
    """The deployment, if this caller may predict with it; a private one answers a stranger
    (anonymous or not) exactly as a missing one does."""
    try:
        deployment = deployments.get_deployment(session=session, slug=slug)
        allowed = deployments.can_predict(session=session, deployment=deployment, user=user)
    except NotFoundError:
        allowed = False
    session.commit()  # hand the connection back to the pool while the model works
    if not allowed:
        raise HTTPException(404, f"deployment {slug!r} not found (a private deployment "
                                 "needs its owner's API key)")
    return deployment


def _caller_and_deployment(request: Request, slug: str) -> tuple[User | None, Deployment]:
    """The caller and the deployment they may predict with, from one short database session
    in one worker thread (the session, caller and serving dependencies would each take a
    thread hop of their own: a tenth of a prediction's time on a busy machine)."""
    session = request.app.state.session_factory()
    try:
        user = optional_user(request, session)
        return user, _deployment_for(session, slug, user)
    finally:
        session.close()


async def _predict(request: Request, slug: str, top_k: int | None, *, batch: bool) -> list:
    user, deployment = await run_in_threadpool(_caller_and_deployment, request, slug)
    serving: Serving = request.app.state.serving
    limits = request.app.state.predict_limits
    limits.check(request, user, 1)  # before any download or decoding
    images, source = await _read_inputs(request, serving, batch=batch)
    if len(images) > 1:
        limits.check(request, user, len(images) - 1)
    try:
        return await predictions.predict(serving=serving, deployment=deployment,
                                         images=images, top_k=top_k, source=source)
    except InvalidInputError as exc:
        raise HTTPException(422, str(exc)) from exc


# The hot path: no dependencies (see _caller_and_deployment), and the answer is rendered as
# it is (plain floats and strings) rather than walked again by FastAPI's encoder.
@router.post("/predict/{slug}", openapi_extra=PREDICT_BODY,
             responses={200: {"model": PredictionOut, "description": "The prediction"}})
async def predict(slug: str, request: Request, top_k: TopK = None):
    """Classify one image: multipart `file`, or JSON `image_base64` or `url`."""
    answers = await _predict(request, slug, top_k, batch=False)
    return JSONResponse(answers[0])


@router.post("/predict/{slug}/batch", openapi_extra=PREDICT_BODY,
             responses={200: {"model": PredictionsOut, "description": "The predictions"}})
async def predict_batch(slug: str, request: Request, top_k: TopK = None):
    """Classify up to 64 images sent as multipart `files`, in order."""
    answers = await _predict(request, slug, top_k, batch=True)
    return JSONResponse({"predictions": answers})


@router.post("/models/{model_id}/predict", openapi_extra=PREDICT_BODY,
             responses={200: {"model": PredictionOut, "description": "The prediction"}})
async def try_model(model_id: int, request: Request, session: SessionDep, user: UserDep,
                    serving: ServingDep, top_k: TopK = None):
    """Classify one image with a model version of your own, deployed or not (its owner trying
    it): the same inputs, limits and answer as a deployment's, with the threshold calibrated
    at training time; nothing is logged."""
    def owned() -> ModelVersion:
        model = deployments.get_model(session=session, owner=user, model_id=model_id)
        session.commit()  # hand the connection back to the pool while the model works
        return model

    model = await run_in_threadpool(owned)
    request.app.state.predict_limits.check(request, user, 1)  # before decoding
    images, _ = await _read_inputs(request, serving, batch=False)
    try:
        answers = await predictions.try_model(serving=serving, model=model, images=images,
                                              top_k=top_k)
    except InvalidInputError as exc:
        raise HTTPException(422, str(exc)) from exc
    return answers[0]


@router.get("/deployments/{slug}/log-summary")
async def log_summary(slug: str, session: SessionDep, user: UserDep, serving: ServingDep,
                      days: Annotated[int, Query(ge=1, le=366)] = 30):
    """Counts per label, unknown rate, confidence and latency of a deployment's predictions."""
    await run_in_threadpool(serving.log.flush)

    def summary() -> dict:
        deployment = deployments.get_owned_deployment(session=session, owner=user, slug=slug)
        return predictions.log_summary(session=session, deployment=deployment, days=days)

    return await run_in_threadpool(summary)


@router.get("/deployments/{slug}/examples/{n}")
def example_image(slug: str, n: int, session: SessionDep, user: OptionalUserDep,
                  storage: StorageDep, settings: SettingsDep):
    """The n-th example photo of a deployment's demo page (public deployments or the owner)."""
    deployment = deployments.get_deployment(session=session, slug=slug)
    if not deployments.can_predict(session=session, deployment=deployment, user=user):
        raise NotFoundError(f"deployment {slug!r} not found")
    examples = predictions.example_images(session=session, storage=storage,
                                          deployment=deployment,
                                          per_label=settings.demo_examples)
    if not 0 <= n < len(examples):
        raise NotFoundError(f"no example {n} (this demo has {len(examples)})")
    cache = "public" if deployment.public else "private"
    return file_response(storage, examples[n].storage_key, media_type="image/jpeg",
                         headers={"Cache-Control": f"{cache}, max-age=300"})
