"""Request ids, one log line and metrics per request, and the Prometheus `/metrics` page."""

import logging
import re
import secrets
import time

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client import REGISTRY as PROCESS_REGISTRY

from app.observability import (
    LATENCY,
    PREDICTIONS,
    RATE_LIMITED,
    REQUESTS,
    SystemCollector,
    request_id,
)

log = logging.getLogger("kodiak.access")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
router = APIRouter(include_in_schema=False)


class RequestContext:
    """Give each request an id (the client's `X-Request-ID` when sane), echo it, count it,
    time it and log it by route template (never by raw path: ids would explode the labels)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = given if REQUEST_ID.match(given) else secrets.token_hex(8)
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []),
                                      (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route, params = _route(scope)
            method = scope["method"]
            REQUESTS.labels(method, route, str(status)).inc()
            LATENCY.labels(method, route).observe(elapsed)
            if status == 429:
                RATE_LIMITED.labels(route).inc()
            # Only answered predictions: a stranger's made-up slugs must not grow the labels.
            if route.startswith("/api/v1/predict/") and "slug" in params and status < 300:
                PREDICTIONS.labels(params["slug"][:64], str(status)).inc()
            client = scope.get("client") or ("", 0)
            log.info("%s %s %s %.1f ms", method, route, status, elapsed * 1000,
                     extra={"method": method, "route": route, "status": status,
                            "duration_ms": round(elapsed * 1000, 1), "client": client[0]})
            request_id.reset(token)


def _route(scope) -> tuple[str, dict]:
    """The matched route's template (`/api/v1/jobs/{job_id}`) and path parameters, which the
    router leaves in the (shared) scope once it has matched."""
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return (path, scope.get("path_params") or {}) if path else ("unmatched", {})


@router.get("/metrics")
def metrics(request: Request) -> PlainTextResponse:
    """Prometheus text format: this process's counters, plus jobs and queues read now.

    Off (404) unless `KODIAK_METRICS_TOKEN` is set; then the scraper sends it as a bearer
    token (the figures name deployments and show load, not for strangers)."""
    token = request.app.state.settings.metrics_token
    given = request.headers.get("authorization", "")
    if token is None:
        raise HTTPException(404, "metrics are off; set KODIAK_METRICS_TOKEN to turn them on")
    if not secrets.compare_digest(given.encode(), f"Bearer {token.get_secret_value()}".encode()):
        raise HTTPException(401, "send the metrics token as `Authorization: Bearer ...`")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SystemCollector(factory=request.app.state.session_factory,
                                      settings=request.app.state.settings))
    body = generate_latest(PROCESS_REGISTRY) + generate_latest(registry)
    return PlainTextResponse(body, media_type=CONTENT_TYPE_LATEST)
