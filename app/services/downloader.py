"""Fetch untrusted image URLs safely: SSRF guard, bounded size, time and redirects, sniffed.

The guard sits in the connection layer: every TCP connection the client opens (the first
request and each redirect hop) resolves the host itself, refuses the request when any
address is not public, and connects to the address it checked. A DNS answer that changes
between the check and the connection (rebinding) cannot slip through, because no second
lookup happens. TLS still verifies the certificate against the URL's host name.
"""

import asyncio
import ipaddress
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpcore
import httpx

Resolver = Callable[[str, int], Awaitable[list[str]]]
K = TypeVar("K")

REDIRECTS = (301, 302, 303, 307, 308)
METADATA_ADDRESSES = {
    ipaddress.ip_address("169.254.169.254"),
    ipaddress.ip_address("fd00:ec2::254"),
}
USER_AGENT = "Kodiak/0.1 (image dataset builder)"


@dataclass(frozen=True)
class DownloadPolicy:
    allow_loopback: bool = False
    max_bytes: int = 20 * 2**20
    connect_timeout: float = 5
    read_timeout: float = 10
    total_timeout: float = 30
    max_redirects: int = 5
    per_host: int = 4
    concurrency: int = 32


def policy_from_settings(settings) -> DownloadPolicy:
    """The download policy of these settings."""
    return DownloadPolicy(
        allow_loopback=settings.allow_loopback_downloads,
        max_bytes=settings.download_max_mb * 2**20,
        connect_timeout=settings.download_connect_timeout_s,
        read_timeout=settings.download_read_timeout_s,
        total_timeout=settings.download_total_timeout_s,
        per_host=settings.download_per_host,
        concurrency=settings.download_concurrency,
    )


class DownloadError(Exception):
    """A URL that could not be fetched as an image; str(exc) says why, for a person."""


@dataclass
class Downloaded:
    url: str
    final_url: str
    data: bytes
    content_type: str | None


def refusal(address: str, *, allow_loopback: bool) -> str | None:
    """Why a connection to `address` is refused, or None when it is a public address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES:
        return f"refused: {ip} is a cloud metadata address"
    if ip.is_loopback:
        return None if allow_loopback else f"refused: {ip} is a loopback address"
    for kind in ("unspecified", "link_local", "multicast", "private", "reserved"):
        if getattr(ip, f"is_{kind}"):
            return f"refused: {ip} is a {kind.replace('_', '-')} address"
    if not ip.is_global:
        return f"refused: {ip} is not a public address"
    return None


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for host (IP literals resolve to themselves)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise DownloadError(f"host not found: {host}") from exc
    return list(dict.fromkeys(info[4][0] for info in infos))


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, resolving and checking each host before connecting."""

    def __init__(self, *, allow_loopback: bool, resolver: Resolver,
                 network: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._inner = network or httpcore.AnyIOBackend()
        self._allow_loopback = allow_loopback
        self._resolver = resolver

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None, socket_options: Any = None):
        addresses = await self._resolver(host.strip("[]"), port)
        if not addresses:
            raise DownloadError(f"host not found: {host}")
        for address in addresses:  # one bad address refuses the host: no round-robin luck
            reason = refusal(address, allow_loopback=self._allow_loopback)
            if reason:
                raise DownloadError(reason)
        error: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(address, port, timeout=timeout,
                                                     local_address=local_address,
                                                     socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        raise error

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Any = None):
        raise DownloadError("refused: unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a connection pool that uses the guarded network backend."""

    def __init__(self, *, policy: DownloadPolicy, resolver: Resolver,
                 network: httpcore.AsyncNetworkBackend | None = None) -> None:
        super().__init__(limits=httpx.Limits(max_connections=policy.concurrency))
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl.create_default_context(),
            max_connections=policy.concurrency,
            max_keepalive_connections=policy.concurrency,
            keepalive_expiry=5.0,
            network_backend=GuardedBackend(allow_loopback=policy.allow_loopback,
                                           resolver=resolver, network=network),
        )


def make_client(policy: DownloadPolicy, *, resolver: Resolver | None = None,
                network: httpcore.AsyncNetworkBackend | None = None) -> httpx.AsyncClient:
    """An httpx client whose every connection is SSRF-checked; redirects are not followed.

    `resolver` (host, port -> addresses) and `network` (opens the checked connections) are
    the edges to the outside world; tests replace them to play a public internet.
    """
    timeout = httpx.Timeout(connect=policy.connect_timeout, read=policy.read_timeout,
                            write=policy.read_timeout, pool=policy.total_timeout)
    return httpx.AsyncClient(
        transport=GuardedTransport(policy=policy, resolver=resolver or system_resolver,
                                   network=network),
        follow_redirects=False,
        timeout=timeout,
        trust_env=False,
        headers={"User-Agent": USER_AGENT, "Accept": "image/*,*/*;q=0.5"},
    )


def sniff_image(head: bytes) -> bool:
    """Whether the first bytes are those of an image format Pillow decodes here."""
    return (
        head.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM",
                         b"II*\x00", b"MM\x00*"))
        or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")
    )


def _not_an_image(head: bytes, content_type: str | None) -> DownloadError:
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind.startswith("text/"):
        return DownloadError(f"not an image ({kind} page)")
    if head.lstrip()[:1] == b"<":
        return DownloadError("not an image (an HTML page)")
    return DownloadError("not an image (unrecognised content)")


def _megabytes(n: int) -> str:
    return f"{n / 2**20:g} MB" if n >= 2**20 else f"{n // 1024} KB"


def _checked_url(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise DownloadError("invalid URL") from exc
    if parsed.scheme not in ("http", "https"):
        raise DownloadError(f"refused: only http and https URLs ({parsed.scheme or 'none'})")
    if not parsed.host:
        raise DownloadError("invalid URL (no host)")
    return parsed


async def _fetch(client: httpx.AsyncClient, url: str, policy: DownloadPolicy) -> Downloaded:
    current = _checked_url(url)
    for _hop in range(policy.max_redirects + 1):
        async with client.stream("GET", current) as response:
            if response.status_code in REDIRECTS and "location" in response.headers:
                current = _checked_url(str(current.join(response.headers["location"])))
                continue
            if response.status_code != 200:
                raise DownloadError(f"HTTP {response.status_code}")
            content_type = response.headers.get("content-type")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > policy.max_bytes:
                raise DownloadError(f"too large (over {_megabytes(policy.max_bytes)})")
            data = bytearray()
            checked = False
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) > policy.max_bytes:
                    raise DownloadError(f"too large (over {_megabytes(policy.max_bytes)})")
                if not checked and len(data) >= 16:
                    if not sniff_image(bytes(data[:16])):
                        raise _not_an_image(bytes(data[:16]), content_type)
                    checked = True
            if not data:
                raise DownloadError("empty response")
            if not checked and not sniff_image(bytes(data)):
                raise _not_an_image(bytes(data), content_type)
            return Downloaded(url=url, final_url=str(current), data=bytes(data),
                              content_type=content_type)
    raise DownloadError("too many redirects")


async def download(client: httpx.AsyncClient, url: str, *, policy: DownloadPolicy) -> Downloaded:
    """Fetch one image URL under `policy`, or raise DownloadError with a reason for a person."""
    try:
        async with asyncio.timeout(policy.total_timeout):
            return await _fetch(client, url, policy)
    except DownloadError:
        raise
    except (TimeoutError, httpx.TimeoutException) as exc:
        raise DownloadError("timed out") from exc
    except httpx.ConnectError as exc:
        raise DownloadError("could not connect") from exc
    except httpx.TooManyRedirects as exc:
        raise DownloadError("too many redirects") from exc
    except httpx.InvalidURL as exc:
        raise DownloadError("invalid URL") from exc
    except httpx.HTTPError as exc:
        raise DownloadError(f"download failed ({type(exc).__name__})") from exc


def _host(url: str) -> str:
    try:
        return httpx.URL(url).host.lower()
    except Exception:  # an invalid URL fails in download(); any host key will do here
        return ""


async def download_many(
    items: Iterable[tuple[K, str]], *, policy: DownloadPolicy,
    client: httpx.AsyncClient | None = None,
) -> AsyncIterator[tuple[K, Downloaded | DownloadError]]:
    """Download (key, url) pairs concurrently and yield (key, result) as each one finishes.

    At most policy.concurrency downloads run at once and policy.per_host per host; a host
    at its limit does not hold back the others. At most `concurrency` results are in memory.
    """
    own = client is None
    client = client or make_client(policy)
    pending = deque(items)
    running: dict[asyncio.Task, tuple[K, str]] = {}
    per_host: dict[str, int] = {}

    def start_more() -> None:
        skipped: deque = deque()
        while pending and len(running) < policy.concurrency:
            key, url = pending.popleft()
            host = _host(url)
            if per_host.get(host, 0) >= policy.per_host:
                skipped.append((key, url))
                continue
            per_host[host] = per_host.get(host, 0) + 1
            task = asyncio.ensure_future(download(client, url, policy=policy))
            running[task] = (key, host)
        pending.extendleft(reversed(skipped))

    try:
        start_more()
        while running:
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                key, host = running.pop(task)
                per_host[host] -= 1
                try:
                    outcome: Downloaded | DownloadError = task.result()
                except DownloadError as exc:
                    outcome = exc
                start_more()
                yield key, outcome
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
        if own:
            await client.aclose()
