"""The FastAPI application: wiring, error shapes, limits (app/web/limits.py)."""

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from starlette.exceptions import HTTPException

from app.config import Settings, get_settings
from app.db import make_engine, make_session_factory
from app.services.errors import (
    ConflictError,
    InvalidInputError,
    LimitExceededError,
    NotFoundError,
    UnavailableError,
)
from app.serving.runtime import Serving
from app.storage import StorageError, open_storage, store_failures
from app.web import (
    api,
    api_account,
    api_curation,
    api_gather,
    api_inbox,
    api_jobs,
    api_models,
    api_predict,
    api_prediction_log,
    api_training,
    limits,
    observability,
    openapi,
    pages,
    security,
)
from app.web.pages.common import TITLES, error_answer, error_page, wants_page
from app.web.paths import STATIC_DIR

log = logging.getLogger(__name__)


@asynccontextmanager
async def _lifespan(app: FastAPI):
    """The serving runtime lives from startup to shutdown, then the engine is disposed."""
    serving = Serving.from_settings(app.state.settings, factory=app.state.session_factory,
                                    storage=app.state.storage)
    await serving.start()
    app.state.serving = serving
    try:
        yield
    finally:
        await serving.stop()
        app.state.engine.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app for `settings` (the environment's by default)."""
    settings = settings or get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    app = FastAPI(
        lifespan=_lifespan,
        title="Kodiak",
        version="0.1.0",
        description="Build, clean, train and deploy image classifiers.",
        docs_url=None,  # app/web/pages/docs.py serves the reference pages, without a CDN
        redoc_url=None,
        openapi_url=pages.docs.OPENAPI_URL,
    )
    engine = make_engine(settings.resolved_database_url())
    storage = open_storage(settings.resolved_storage_url(), settings)
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = make_session_factory(engine)
    app.state.storage = storage
    app.state.predict_limits = api_predict.Limits(settings)
    app.include_router(api.router)
    app.include_router(api_jobs.router)
    app.include_router(api_models.router)
    app.include_router(api_predict.router)
    app.include_router(api_gather.router)
    app.include_router(api_curation.router)
    app.include_router(api_training.router)
    app.include_router(api_inbox.router)
    app.include_router(api_prediction_log.router)
    app.include_router(api_account.router)
    app.include_router(pages.router)
    app.include_router(observability.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.mount(pages.docs.ASSETS_URL, StaticFiles(directory=pages.docs.ASSETS_DIR),
              name="docs-assets")
    limits.install(app, settings, error_page=error_page)  # reads the routers' body marks
    security.install(app, settings)
    app.add_middleware(StoppedAnswer)  # inside the request context: logged with its id
    app.add_middleware(observability.RequestContext)  # outermost: sees every answer
    _add_error_handlers(app)
    openapi.document_errors(app)
    return app


class StoppedAnswer:
    """A request still running when the server stops (past its grace period, `kodiak web`)
    answers 503 with a reason instead of uvicorn's bare 500."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def watch(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except asyncio.CancelledError:
            if not started:
                answer = _answer(Request(scope), 503, STOPPED, {"Retry-After": "10"})
                await answer(scope, receive, send)
            raise


DATABASE_BUSY = ("the database is busy or not answering, so this request did not finish; "
                 "try again in a moment")
STOPPED = ("the server restarted while this request ran, so it may not have finished: check, "
           "then send it again (an upload sent twice reports its images as duplicates)")


def _add_error_handlers(app: FastAPI) -> None:
    def handler(status: int):
        async def respond(request: Request, exc: Exception) -> Response:
            return _answer(request, status, str(exc))

        return respond

    app.add_exception_handler(NotFoundError, handler(404))
    app.add_exception_handler(ConflictError, handler(409))
    app.add_exception_handler(InvalidInputError, handler(422))
    app.add_exception_handler(LimitExceededError, handler(429))
    app.add_exception_handler(UnavailableError, handler(503))

    async def integrity(request: Request, exc: IntegrityError) -> Response:
        log.warning("integrity error on %s: %s", request.url.path, exc.orig)
        return _answer(request, *error_answer(exc))

    app.add_exception_handler(IntegrityError, integrity)

    async def out_of_range(request: Request, exc: Exception) -> JSONResponse:
        # An int beyond 64 bits as an id, offset or limit: SQLite cannot bind it
        # (OverflowError), PostgreSQL refuses it (DataError: bigint out of range).
        log.info("out of range on %s: %s", request.url.path, exc)
        return JSONResponse({"detail": "a value in the request is out of range (numbers: "
                                       "at most 2**63 - 1)"}, 422)

    app.add_exception_handler(OverflowError, out_of_range)
    app.add_exception_handler(DataError, out_of_range)

    async def database_busy(request: Request, exc: OperationalError) -> Response:
        # SQLite's write lock held past the busy timeout, or a database that does not answer
        log.error("database on %s: %s", request.url.path, exc.orig)
        return _answer(request, 503, DATABASE_BUSY, {"Retry-After": "5"})

    app.add_exception_handler(OperationalError, database_busy)

    async def store_problem(request: Request, exc: Exception) -> Response:
        # A missing stored file (410), or a store that failed (503): never a bare 500.
        log.warning("storage on %s: %s: %s", request.url.path, type(exc).__name__, exc)
        return _answer(request, *error_answer(exc))

    for kind in (StorageError, *store_failures()):
        app.add_exception_handler(kind, store_problem)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        if wants_page(request):
            return _answer(request, *error_answer(exc))
        return await http_exception_handler(request, exc)

    app.add_exception_handler(HTTPException, http_error)

    async def validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    app.add_exception_handler(RequestValidationError, validation)

    async def sign_in(request: Request, exc: Exception) -> RedirectResponse:
        return RedirectResponse(security.sign_in_url(request), status_code=303)

    app.add_exception_handler(pages.SignInRequired, sign_in)


def _answer(request: Request, status: int, detail: str,
            headers: dict[str, str] | None = None) -> Response:
    """An error as JSON {"detail"}, or as a page for a browser that asked for one."""
    if wants_page(request):
        answer = error_page(request, status, TITLES.get(status, "That did not work"), detail)
        answer.headers.update(headers or {})
        return answer
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)
