"""Prediction endpoints of API v1: one image or a batch, for a deployment's slug."""

import base64
import binascii

from fastapi import APIRouter, HTTPException, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from app.models import Deployment, User
from app.schemas import PredictJson
from app.services import deployments, predictions
from app.services.errors import InvalidInputError
from app.web.deps import ModelCacheDep, OptionalUserDep, SessionDep, SettingsDep

router = APIRouter(prefix="/api/v1")


async def _read_prediction_inputs(request: Request, *, batch: bool) -> list[bytes]:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=256)
        files = form.getlist("files") if batch else form.getlist("file")
        files = [f for f in files if isinstance(f, UploadFile)]
        if not files:
            field = "files" if batch else "file"
            raise HTTPException(422, f"send the image as multipart field `{field}`")
        return [await f.read() for f in files]
    if batch:
        raise HTTPException(422, "send images as multipart field `files`")
    try:
        body = PredictJson.model_validate_json(await request.body())
    except ValidationError as exc:
        raise HTTPException(
            422, "send multipart `file`, or JSON {\"image_base64\": ...} or {\"url\": ...}"
        ) from exc
    if body.image_base64:
        payload = body.image_base64.split(",", 1)[-1] if body.image_base64.startswith(
            "data:") else body.image_base64
        try:
            return [base64.b64decode(payload, validate=True)]
        except (binascii.Error, ValueError) as exc:
            raise HTTPException(422, "image_base64 is not valid base64") from exc
    if body.url:
        raise HTTPException(
            422, "predicting from a URL is not available yet: send `file` or `image_base64`"
        )
    raise HTTPException(422, "send multipart `file`, or JSON {\"image_base64\": ...}")


def _deployment_for(session, slug: str, user: User | None) -> Deployment:
    deployment = deployments.get_deployment(session=session, slug=slug)
    if deployments.can_predict(session=session, deployment=deployment, user=user):
        return deployment
    if user is None:
        raise HTTPException(401, "this deployment is private: send its owner's API key",
                            headers={"WWW-Authenticate": "Bearer"})
    raise HTTPException(404, f"deployment {slug!r} not found")


async def _predict(request, slug, session, user, cache, settings, *, batch: bool) -> list[dict]:
    deployment = await run_in_threadpool(_deployment_for, session, slug, user)
    images = await _read_prediction_inputs(request, batch=batch)
    model = deployment.model
    try:
        return await run_in_threadpool(
            predictions.predict_images, cache=cache, model=model, images=images,
            max_pixels=settings.max_image_pixels,
        )
    except InvalidInputError as exc:
        raise HTTPException(422, str(exc)) from exc


@router.post("/predict/{slug}")
async def predict(slug: str, request: Request, session: SessionDep, user: OptionalUserDep,
                  cache: ModelCacheDep, settings: SettingsDep):
    answers = await _predict(request, slug, session, user, cache, settings, batch=False)
    return answers[0]


@router.post("/predict/{slug}/batch")
async def predict_batch(slug: str, request: Request, session: SessionDep,
                        user: OptionalUserDep, cache: ModelCacheDep, settings: SettingsDep):
    answers = await _predict(request, slug, session, user, cache, settings, batch=True)
    return {"predictions": answers}
