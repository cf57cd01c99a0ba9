"""Request limits of the web app: a body size per route, open event streams per user.

A route's body limit is small (`max_body_kb`: JSON and forms) unless the route is marked
with `openapi_extra=UPLOAD_BODY` (uploads and dataset imports: `max_upload_mb`) or
`PREDICT_BODY` (`max_predict_mb`). The marks are read from the app's route table when the
app is built, so a new route takes the small limit until it is marked (the OpenAPI document
shows the mark as `x-body-limit`).
"""

import re
from collections import Counter
from collections.abc import Callable, Iterable

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import iter_route_contexts
from starlette.routing import BaseRoute

from app.config import Settings

BODY_LIMIT = "x-body-limit"
UPLOAD_BODY = {BODY_LIMIT: "upload"}
PREDICT_BODY = {BODY_LIMIT: "predict"}
RouteLimit = tuple[re.Pattern, frozenset[str], int]
ErrorPage = Callable[[Request, int, str, str], Response]  # request, status, title, message


class BodyTooLarge(HTTPException):
    """A request body went past its route's limit while it was read (413)."""


def body_limits(routes: Iterable[BaseRoute], settings: Settings) -> list[RouteLimit]:
    """(path pattern, methods, bytes) of the routes marked for a larger body than the default."""
    sizes = {"upload": settings.max_upload_mb * 2**20,
             "predict": settings.max_predict_mb * 2**20}
    table = []
    for route in iter_route_contexts(list(routes)):  # included routers' routes too
        kind = (getattr(route, "openapi_extra", None) or {}).get(BODY_LIMIT)
        if kind is None:
            continue
        if kind not in sizes:
            raise ValueError(f"route {route.path}: unknown body limit {kind!r}")
        table.append((route.path_regex, frozenset(route.methods), sizes[kind]))
    return table


def _size(limit: int) -> str:
    return f"{limit / 2**20:g} MB" if limit >= 2**20 else f"{limit / 2**10:g} KB"


def too_large(request: Request, detail: str, error_page: ErrorPage) -> Response:
    """413: JSON for the API, a page for the browser's forms."""
    if request.url.path.startswith("/api/"):
        return JSONResponse({"detail": detail}, status_code=413)
    return error_page(request, 413, "Too large", detail)


class BodyLimit:
    """413 for a request body above its route's limit, before any of it is parsed: a declared
    Content-Length at once, a streamed body as soon as the bytes received pass the limit."""

    def __init__(self, app, *, routes: list[RouteLimit], default: int,
                 error_page: ErrorPage) -> None:
        self.app = app
        self.routes = routes
        self.default = default
        self.error_page = error_page

    def limit_for(self, method: str, path: str) -> int:
        for pattern, methods, size in self.routes:
            if method in methods and pattern.match(path):
                return size
        return self.default

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit_for(scope["method"], scope["path"])
        detail = f"request body too large (limit {_size(limit)} for this route)"
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            answer = too_large(Request(scope), detail, self.error_page)
            return await answer(scope, receive, send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(413, detail)
            return message

        return await self.app(scope, limited_receive, send)


class StreamSlots:
    """Open event streams per user in this web process, at most `per_user` each."""

    def __init__(self, per_user: int) -> None:
        self.per_user = per_user
        self.open: Counter[int] = Counter()

    def take(self, user_id: int) -> Callable[[], None]:
        """One more stream for this user, or 429; call the answer (once or more) when the
        stream ends."""
        if self.open[user_id] >= self.per_user:
            raise HTTPException(
                429, f"{self.open[user_id]} job event streams of yours are open (limit "
                     f"{self.per_user}); close a page that follows a job, or poll "
                     "GET /api/v1/jobs/{id}")
        self.open[user_id] += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.open[user_id] -= 1
                if self.open[user_id] <= 0:
                    del self.open[user_id]

        return release


def install(app: FastAPI, settings: Settings, *, error_page: ErrorPage) -> None:
    """Body limits from the app's routes (include the routers first) and the stream slots;
    `error_page` answers the browser's forms."""
    app.state.event_streams = StreamSlots(settings.max_event_streams)
    app.add_middleware(BodyLimit, routes=body_limits(app.routes, settings),
                       default=settings.max_body_kb * 2**10, error_page=error_page)

    async def handle(request: Request, exc: BodyTooLarge) -> Response:
        return too_large(request, exc.detail, error_page)

    app.add_exception_handler(BodyTooLarge, handle)
