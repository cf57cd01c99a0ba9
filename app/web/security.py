"""Browser-facing guards: security headers on every response, and the sign-in's checks."""

from typing import Annotated
from urllib.parse import parse_qs, urlencode, urlsplit

from fastapi import Depends, FastAPI, HTTPException, Request

from app.config import Settings
from app.services.auth import SignInGuard, SignInThrottled
from app.services.ratelimit import SignInThrottle, retry_after

PAGE_POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    # The confusion matrix colours its cells through a CSS variable in a style attribute;
    # a style attribute can neither run script nor load anything img-src does not allow.
    "style-src-attr": "'unsafe-inline'",
    "img-src": "'self' data: blob:",  # the demo previews pasted and webcam images as blobs
    "media-src": "'self' blob:",
    "connect-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'self'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}
DOCS_POLICY = {  # Swagger UI and ReDoc (app/web/pages/docs.py): the app's own files only
    **PAGE_POLICY,
    # Both inject <style> elements and style attributes as they render; scripts stay 'self'.
    "style-src": "'self' 'unsafe-inline'",
    "worker-src": "'self' blob:",  # ReDoc searches in a worker it makes from a blob
}
DOCS_PATHS = ("/api/docs", "/redoc")


def content_security_policy(policy: dict[str, str]) -> bytes:
    return "; ".join(f"{name} {value}" for name, value in policy.items()).encode()


PAGE_CSP = content_security_policy(PAGE_POLICY)
EMBED_CSP = content_security_policy({**PAGE_POLICY, "frame-ancestors": "*"})
DOCS_CSP = content_security_policy(DOCS_POLICY)
COMMON_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


def _is_embed(query_string: bytes) -> bool:
    """Whether the query asks for the embed view, read as the demo route reads its flag."""
    values = parse_qs(query_string.decode("latin-1")).get("embed")
    return bool(values) and values[-1].lower() in ("1", "true", "on", "yes")


class SecurityHeaders:
    """CSP, no sniffing and a same-origin referrer on every response; no framing by other
    sites (clickjacking) except the embeddable demo view, `/demo/{slug}?embed=1`.

    Demo pages leave framing to CSP's frame-ancestors alone (every current browser obeys
    it); the other pages also send X-Frame-Options for older ones.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        headers = list(COMMON_HEADERS)
        if path.startswith("/demo/"):
            embed = _is_embed(scope.get("query_string", b""))
            headers.append((b"content-security-policy", EMBED_CSP if embed else PAGE_CSP))
        else:
            docs = path.startswith(DOCS_PATHS)
            headers += [(b"content-security-policy", DOCS_CSP if docs else PAGE_CSP),
                        (b"x-frame-options", b"DENY")]

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *headers]
            await send(message)

        return await self.app(scope, receive, send_with_headers)


def install(app: FastAPI, settings: Settings) -> None:
    """The security headers and the sign-in guard of an app (create_app calls this)."""
    app.state.sign_in_guard = SignInGuard(
        throttle=SignInThrottle(failures_per_account=settings.sign_in_failures_per_account,
                                failures_per_ip=settings.sign_in_failures_per_ip,
                                window_s=settings.sign_in_window_s,
                                redis_url=settings.resolved_redis_url()),
        hashes_at_once=settings.sign_in_hashes_at_once,
    )
    app.add_middleware(SecurityHeaders)


def get_sign_in_guard(request: Request) -> SignInGuard:
    return request.app.state.sign_in_guard


SignInGuardDep = Annotated[SignInGuard, Depends(get_sign_in_guard)]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "?"


def _netloc(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    default = {"http": ":80", "https": ":443"}.get(parts.scheme, "")
    netloc = parts.netloc.lower()
    return netloc[: -len(default)] if default and netloc.endswith(default) else netloc


def from_another_site(request: Request) -> bool:
    """Whether a browser sent this request from a page of another site (its Origin, else its
    Referer, names another host). Clients that send neither are not browsers on a page."""
    if request.headers.get("sec-fetch-site") == "cross-site":
        return True
    source = request.headers.get("origin") or request.headers.get("referer")
    if source is None:
        return False
    host = request.headers.get("host", "").lower()
    own = host.removesuffix(":443" if request.url.scheme == "https" else ":80")
    return _netloc(source) != own  # "null" (a sandboxed or privacy-hidden page) is foreign


def refuse_other_sites(request: Request) -> None:
    """403 for a sign-in sent from another site (login CSRF)."""
    if from_another_site(request):
        raise HTTPException(403, "sign-in refused: the request came from another site")


def throttled(exc: SignInThrottled) -> HTTPException:
    """The 429 answer to a throttled sign-in."""
    return HTTPException(429, str(exc), headers={"Retry-After": retry_after(exc.retry_after_s)})


def safe_next(value: str) -> str:
    """`value` when it is a path on this site ("/projects/3/images?label=x"), else "": the
    sign-in form never sends anyone to another site ("//evil", "https://evil",
    "/\\evil", control characters)."""
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        return ""
    if len(value) > 2000 or any(ord(c) < 32 or ord(c) == 127 for c in value):
        return ""
    parts = urlsplit(value)
    return "" if parts.scheme or parts.netloc else value


def sign_in_url(request: Request) -> str:
    """Where a signed-out visitor of a page goes: /login, with the page to come back to."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    target = safe_next(target) if request.method == "GET" and target != "/" else ""
    return f"/login?{urlencode({'next': target})}" if target else "/login"
