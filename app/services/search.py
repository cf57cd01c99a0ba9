"""Image search providers: a query in, image URLs with their pages and titles out.

A provider is any object with a `name` and `search(query, *, max_results, wait)`; PROVIDERS
maps a name to a factory taking the settings. `wait(seconds, message)` is how a provider
pauses between retries: the job passes one that reports the message and can be cancelled.
A search restricted to a licence (one of LICENCES) also passes `licence=`.
"""

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)
Wait = Callable[[float, str], None]


@dataclass(frozen=True)
class Hit:
    image_url: str
    page_url: str | None = None
    title: str | None = None


# The licence filters DuckDuckGo's image search offers (ddgs `images(license_image=...)`,
# Bing's filter underneath), in words. No filter: any licence, unknown for each image.
LICENCES = {
    "any": "Creative Commons (any)",
    "Public": "public domain",
    "Share": "free to share and use",
    "ShareCommercially": "free to share and use commercially",
    "Modify": "free to modify, share and use",
    "ModifyCommercially": "free to modify, share and use commercially",
}


def licence_text(licence: str | None) -> str | None:
    """What a stored licence filter means, for a person and the export (None: unknown)."""
    if not licence:
        return None
    return f"{LICENCES.get(licence, licence)} (search filter: {licence})"


class SearchFailed(Exception):
    """The provider gave no results after its retries; str(exc) says why, for a person."""


UNREACHABLE = ("Kodiak cannot reach the image search service from this server (no internet "
               "connection, or its name does not resolve, or a firewall blocks it). Upload "
               "images or paste a list of image URLs instead, or ask the operator to let this "
               "server reach the internet.")
# How ddgs (through primp) words a request that never reached the service: DNS and connect
# errors arrive as DDGSException("DNSError: ...") or ("ConnectError: ..."), the cause dropped.
_UNREACHABLE_SIGNS = ("dnserror", "dns error", "error resolving dns", "connecterror",
                      "connection refused", "network is unreachable", "no route to host",
                      "name or service not known", "temporary failure in name resolution")


class Provider(Protocol):
    name: str

    def search(self, query: str, *, max_results: int, wait: Wait,
               licence: str | None = None) -> list[Hit]: ...


def sleep_wait(seconds: float, message: str) -> None:
    """The default `wait`: log the message and sleep."""
    log.info("%s", message)
    time.sleep(seconds)


def backoff_delay(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with equal jitter: between half and all of min(cap, base * 2^n)."""
    ceiling = min(cap, base * 2**attempt)
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


def is_unreachable(exc: BaseException) -> bool:
    """Whether the request never reached the service (no network, no DNS): retrying in a
    minute does not help, unlike a rate limit or a timeout."""
    text = "; ".join(f"{type(e).__name__}: {e}" for e in _chain(exc)).lower()
    return any(sign in text for sign in _UNREACHABLE_SIGNS)


def _chain(exc: BaseException | None):
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


def describe_failure(exc: BaseException) -> str:
    """What a provider exception means, in a few words for a person (the raw text is logged,
    never shown: it reads as a crash while the job is still trying)."""
    name, text = type(exc).__name__, str(exc)
    lowered = f"{name} {text}".lower()
    if "ratelimit" in lowered or "rate limit" in lowered or "429" in text or "403" in text:
        return "rate limited"
    if "timeout" in lowered or "timed out" in lowered:
        return "timed out"
    return "answered with an error"


def is_end_of_results(exc: BaseException) -> bool:
    """ddgs raises DDGSException('No results found.') when a page is empty."""
    return "no results found" in str(exc).lower()


def ddgs_factory(timeout: int) -> Any:
    from ddgs import DDGS

    return DDGS(timeout=timeout)


class DuckDuckGoProvider:
    """DuckDuckGo image search through `ddgs`, paged, with backoff on failures."""

    name = "duckduckgo"

    def __init__(self, *, make_ddgs: Callable[[], Any] | None = None, per_page: int = 100,
                 max_pages: int = 20, attempts: int = 5, base_delay: float = 10,
                 max_delay: float = 120, rng: random.Random | None = None) -> None:
        self.make_ddgs = make_ddgs or (lambda: ddgs_factory(timeout=10))
        self.per_page = per_page
        self.max_pages = max_pages
        self.attempts = max(1, attempts)
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.rng = rng or random.Random()

    def search(self, query: str, *, max_results: int, wait: Wait = sleep_wait,
               licence: str | None = None) -> list[Hit]:
        """Up to max_results distinct image URLs for `query`, page by page, only images
        published under `licence` (a key of LICENCES) when one is given."""
        hits: dict[str, Hit] = {}
        for page in range(1, self.max_pages + 1):
            rows = self._page(query, page=page, wait=wait, have=len(hits), licence=licence)
            new = 0
            for row in rows:
                hit = _hit(row)
                if hit and hit.image_url not in hits:
                    hits[hit.image_url] = hit
                    new += 1
                if len(hits) >= max_results:
                    return list(hits.values())
            if new == 0:
                break
        return list(hits.values())

    def _page(self, query: str, *, page: int, wait: Wait, have: int,
              licence: str | None = None) -> list[dict]:
        """One page of raw results; [] at the end of the results; retried with backoff."""
        extra = {"license_image": licence} if licence else {}
        for attempt in range(self.attempts):
            try:
                return list(self.make_ddgs().images(
                    query, max_results=self.per_page, page=page, backend="duckduckgo",
                    safesearch="moderate", **extra,
                ) or [])
            except Exception as exc:  # ddgs raises DDGSException, TimeoutException and others
                if is_end_of_results(exc):
                    return []
                if is_unreachable(exc):
                    log.warning("image search page %s for %r: service unreachable: %s", page,
                                query, exc)
                    if have:
                        return []  # keep what the earlier pages gave
                    raise SearchFailed(UNREACHABLE) from exc
                what = describe_failure(exc)
                log.warning("image search page %s for %r %s: %s: %s", page, query, what,
                            type(exc).__name__, exc)
                if attempt + 1 >= self.attempts:
                    if have:
                        return []  # keep what the earlier pages gave
                    raise SearchFailed(
                        f"image search {what} after {self.attempts} tries; wait a few minutes "
                        "and retry, or upload images or paste a list of URLs instead"
                    ) from exc
                delay = backoff_delay(attempt, base=self.base_delay, cap=self.max_delay,
                                      rng=self.rng)
                wait(delay, f"image search {what}, retrying in {delay:.0f} s "
                            f"(try {attempt + 2} of {self.attempts})")
        return []


def _hit(row: Any) -> Hit | None:
    if not isinstance(row, dict):
        return None
    url = str(row.get("image") or "").strip()
    if not url.startswith(("http://", "https://")):
        return None
    return Hit(image_url=url, page_url=str(row.get("url") or "") or None,
               title=str(row.get("title") or "") or None)


def _duckduckgo(settings) -> DuckDuckGoProvider:
    return DuckDuckGoProvider(attempts=settings.search_retries,
                              base_delay=settings.search_backoff_s)


PROVIDERS: dict[str, Callable[[Any], Provider]] = {"duckduckgo": _duckduckgo}


def get_provider(name: str, settings) -> Provider:
    """The provider registered under `name`, built for these settings."""
    try:
        factory = PROVIDERS[name]
    except KeyError:
        raise SearchFailed(
            f"unknown search provider {name!r} (known: {', '.join(sorted(PROVIDERS))})"
        ) from None
    return factory(settings)
