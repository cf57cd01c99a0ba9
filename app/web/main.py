"""The FastAPI application: wiring, error shapes, limits."""

import logging

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from app.config import Settings, get_settings
from app.db import make_engine, make_session_factory
from app.services.errors import ConflictError, InvalidInputError, NotFoundError
from app.services.predictions import ModelCache
from app.storage import StorageError, open_storage
from app.web import api, api_gather, api_predict, pages
from app.web.paths import STATIC_DIR

log = logging.getLogger(__name__)


class BodyLimit:
    """Answer 413 to request bodies above the upload limit, declared or streamed."""

    def __init__(self, app, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            response = JSONResponse(
                {"detail": f"request body too large (limit {self.max_bytes // 2**20} MB)"}, 413
            )
            return await response(scope, receive, send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise HTTPException(413, f"request body too large "
                                    f"(limit {self.max_bytes // 2**20} MB)")
            return message

        return await self.app(scope, limited_receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app for `settings` (the environment's by default)."""
    settings = settings or get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    app = FastAPI(
        title="Kodiak",
        version="0.1.0",
        description="Build, clean, train and deploy image classifiers.",
        docs_url="/api/docs",
        openapi_url="/api/v1/openapi.json",
    )
    engine = make_engine(settings.resolved_database_url())
    storage = open_storage(settings.resolved_storage_url())
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = make_session_factory(engine)
    app.state.storage = storage
    app.state.model_cache = ModelCache(
        storage, size=settings.model_cache_size, threads=settings.inference_threads
    )
    app.include_router(api.router)
    app.include_router(api_predict.router)
    app.include_router(api_gather.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_mb * 2**20)
    _add_error_handlers(app)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    def handler(status: int):
        async def respond(request: Request, exc: Exception) -> JSONResponse:
            return JSONResponse({"detail": str(exc)}, status_code=status)

        return respond

    app.add_exception_handler(NotFoundError, handler(404))
    app.add_exception_handler(ConflictError, handler(409))
    app.add_exception_handler(InvalidInputError, handler(422))
    app.add_exception_handler(StorageError, handler(404))

    async def validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    app.add_exception_handler(RequestValidationError, validation)

    async def sign_in(request: Request, exc: Exception) -> RedirectResponse:
        return RedirectResponse("/login", status_code=303)

    app.add_exception_handler(pages.SignInRequired, sign_in)
