"""Fetch untrusted image URLs safely: SSRF guard, bounded size, time and redirects, sniffed.

The guard sits in the connection layer: every TCP connection the client opens (the first
request and each redirect hop) resolves the host itself, refuses the request when any
address is not public, and connects to the address it checked. A DNS answer that changes
between the check and the connection (rebinding) cannot slip through, because no second
lookup happens. TLS still verifies the certificate against the URL's host name. The
connections are plain asyncio transports (AsyncioNetwork), without anyio's layer.

A body streams a chunk at a time into a spooled temp file (memory up to spool_bytes, disk
beyond), sniffed as its first bytes land and stopped the moment it passes the size cap.
"""

import asyncio
import ipaddress
import socket
import ssl
import tempfile
import zlib
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import IO, Any, TypeVar
from urllib.parse import urlsplit

import httpcore
import httpx
from httpcore._utils import is_socket_readable

Resolver = Callable[[str, int], Awaitable[list[str]]]
K = TypeVar("K")

REDIRECTS = (301, 302, 303, 307, 308)
METADATA_ADDRESSES = {
    ipaddress.ip_address("169.254.169.254"),
    ipaddress.ip_address("fd00:ec2::254"),
}
USER_AGENT = "Kodiak/0.1 (image dataset builder)"
# Content encodings decoded here, each as zlib's wbits; images are compressed already, so
# the client asks for identity, and a server that compresses anyway is decoded under the cap.
DECODED_ENCODINGS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS,
                     "deflate": zlib.MAX_WBITS}


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
    spool_bytes: int = 2**20  # a body past this goes on to a temp file (memory stays flat)


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
    """A fetched image: its body in a spooled temp file (in memory up to the policy's
    spool_bytes, beyond that in an unlinked file on disk); `close()` lets it go."""

    url: str
    final_url: str
    body: IO[bytes]
    size: int
    content_type: str | None

    @property
    def data(self) -> bytes:
        """The whole body, read into memory."""
        self.body.seek(0)
        return self.body.read()

    def close(self) -> None:
        self.body.close()


NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def refusal(address: str, *, allow_loopback: bool) -> str | None:
    """Why a connection to `address` is refused, or None when it is a public address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):  # IPv4 inside IPv6 is judged as that IPv4
        if ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        elif ip.sixtofour:
            ip = ip.sixtofour
        elif ip.teredo:
            ip = ip.teredo[1]
        elif ip in NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
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
    """httpcore's network backend, resolving and checking each host before connecting.

    A host's answer is kept for the backend's lifetime (one job): each new connection is
    still checked and opened to a checked address, without a resolver round trip each time.
    """

    def __init__(self, *, allow_loopback: bool, resolver: Resolver,
                 network: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._inner = network or AsyncioNetwork()
        self._allow_loopback = allow_loopback
        self._resolver = resolver
        self._resolved: dict[str, list[str]] = {}

    async def _addresses(self, host: str, port: int) -> list[str]:
        if host not in self._resolved:
            if len(self._resolved) >= 4096:
                self._resolved.clear()
            self._resolved[host] = await self._resolver(host, port)
        return self._resolved[host]

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None, socket_options: Any = None):
        addresses = await self._addresses(host.strip("[]"), port)
        if not addresses:
            raise DownloadError(f"host not found: {host}")
        for address in addresses:  # one bad address refuses the host: no round-robin luck
            reason = refusal(address, allow_loopback=self._allow_loopback)
            if reason:
                raise DownloadError(reason)
        error: Exception | None = None
        for address in addresses:
            try:
                stream = await self._inner.connect_tcp(address, port, timeout=timeout,
                                                       local_address=local_address,
                                                       socket_options=socket_options)
                return stream if isinstance(stream, _AsyncioStream) else _Stream(stream)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        raise error

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Any = None):
        raise DownloadError("refused: unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


READ_AHEAD = 2**16  # bytes a connection buffers unread before it stops reading the socket


class AsyncioNetwork(httpcore.AsyncNetworkBackend):
    """httpcore's network on plain asyncio transports (no anyio layer).

    anyio's socket stream stops reading after every read and starts again at the next (two
    epoll calls, two events and a cancel scope a read); this transport keeps reading into a
    bounded buffer, and answers "is it readable?" from that buffer without a system call.
    """

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None, socket_options: Any = None):
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, protocol = await loop.create_connection(
                    _Buffered, host, port,
                    local_addr=(local_address, 0) if local_address else None)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        for option in socket_options or ():
            protocol.transport.get_extra_info("socket").setsockopt(*option)
        return _AsyncioStream(protocol)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Any = None):
        raise httpcore.ConnectError("unix sockets are not used here")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class _Buffered(asyncio.Protocol):
    """A connection's received bytes, kept until read (at most about READ_AHEAD)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.closed = False  # the peer ended its side, or the connection is gone
        self.error: Exception | None = None
        self._reader: asyncio.Future | None = None
        self._writable: asyncio.Future | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > READ_AHEAD:
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> None:
        self.closed = True
        self._wake()  # returns None: the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed, self.error = True, exc
        self._wake()
        self.resume_writing()

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None:
            if not self._writable.done():
                self._writable.set_result(None)
            self._writable = None

    def _wake(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.set_result(None)

    async def read(self, max_bytes: int) -> bytes:
        while not self.buffer and not self.closed:
            self._reader = asyncio.get_running_loop().create_future()
            try:
                await self._reader
            finally:
                self._reader = None
        if not self.buffer and self.error is not None:
            raise httpcore.ReadError(str(self.error))
        if len(self.buffer) <= max_bytes:
            data = bytes(self.buffer)
            self.buffer.clear()
        else:
            data = bytes(memoryview(self.buffer)[:max_bytes])
            del self.buffer[:max_bytes]
        if len(self.buffer) <= READ_AHEAD // 2 and not self.closed:
            self.transport.resume_reading()
        return data

    async def write(self, buffer: bytes) -> None:
        if self.closed or self.transport.is_closing():
            raise httpcore.WriteError("connection closed")
        self.transport.write(buffer)
        if self._writable is not None:
            await self._writable


class _AsyncioStream(httpcore.AsyncNetworkStream):
    """httpcore's view of one asyncio connection (plain or TLS over the same protocol)."""

    def __init__(self, protocol: _Buffered) -> None:
        self._protocol = protocol

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                return await self._protocol.read(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout("read timed out") from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            async with asyncio.timeout(timeout):
                await self._protocol.write(buffer)
        except TimeoutError as exc:
            raise httpcore.WriteTimeout("write timed out") from exc

    async def aclose(self) -> None:
        self._protocol.transport.close()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        protocol = self._protocol
        try:
            protocol.transport = await asyncio.get_running_loop().start_tls(
                protocol.transport, protocol, ssl_context, server_hostname=server_hostname,
                ssl_handshake_timeout=timeout)
        except TimeoutError as exc:
            protocol.transport.close()
            raise httpcore.ConnectTimeout("TLS handshake timed out") from exc
        except (OSError, ssl.SSLError, ConnectionError) as exc:
            protocol.transport.close()
            raise httpcore.ConnectError(str(exc)) from exc
        return self

    def get_extra_info(self, info: str) -> Any:
        transport = self._protocol.transport
        if info == "is_readable":  # data or an end waiting: an idle connection not to reuse
            return bool(self._protocol.buffer) or self._protocol.closed
        if info == "client_addr":
            return transport.get_extra_info("sockname")
        if info == "server_addr":
            return transport.get_extra_info("peername")
        if info in ("ssl_object", "socket"):
            return transport.get_extra_info(info)
        return None


class _Stream(httpcore.AsyncNetworkStream):
    """Another network's connection (a test's) that answers the pool's "is it readable?"
    (asked of every idle connection at every request) from its socket, kept once: anyio
    rebuilds its attributes, a getpeername() call among them, on each question."""

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        self._socket = inner.get_extra_info("socket")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable" and self._socket is not None:
            return is_socket_readable(self._socket)
        return self._inner.get_extra_info(info)


class _Counted:
    """A response body that tells its origin's pool when it is closed."""

    def __init__(self, stream, closed: Callable[[], None]) -> None:
        self._stream = stream
        self._closed = closed

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            self._closed()
            self._closed = _nothing


def _nothing() -> None:
    pass


class GuardedTransport:
    """One small httpcore connection pool per origin, on the guarded backend.

    httpcore scans a pool's connections several times per request (quadratically when
    idle ones are counted), so one pool of per_host connections per origin keeps that cost
    flat where one big pool grows with the number of connections. At most `concurrency`
    origins keep their pools; the least recently used idle pool is closed beyond that.
    """

    def __init__(self, *, policy: DownloadPolicy, resolver: Resolver,
                 network: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._policy = policy
        self._backend = GuardedBackend(allow_loopback=policy.allow_loopback,
                                       resolver=resolver, network=network)
        self._origins: OrderedDict[tuple, httpcore.AsyncConnectionPool] = OrderedDict()
        self._active: dict[tuple, int] = {}
        self._ssl_context: ssl.SSLContext | None = None

    def _origin(self, url: httpx.URL) -> tuple[tuple, httpcore.AsyncConnectionPool]:
        key = (url.raw_scheme, url.raw_host, url.port)
        pool = self._origins.get(key)
        if pool is None:
            if url.scheme == "https" and self._ssl_context is None:
                self._ssl_context = ssl.create_default_context()
            limit = max(1, self._policy.per_host)
            pool = httpcore.AsyncConnectionPool(
                ssl_context=self._ssl_context, max_connections=limit,
                max_keepalive_connections=limit, keepalive_expiry=5.0,
                network_backend=self._backend,
            )
            self._origins[key] = pool
        self._origins.move_to_end(key)
        return key, pool

    async def _close_idle_origins(self) -> None:
        surplus = len(self._origins) - max(1, self._policy.concurrency)
        for key in [k for k in self._origins if not self._active.get(k)][:max(0, surplus)]:
            await self._origins.pop(key).aclose()

    async def send(self, url: httpx.URL, request: httpcore.Request) -> httpcore.Response:
        """Send `request` (to `url`'s origin) and return the response, its body unread."""
        key, pool = self._origin(url)
        self._active[key] = self._active.get(key, 0) + 1

        def closed() -> None:
            self._active[key] -= 1
            if not self._active[key]:
                del self._active[key]

        try:
            await self._close_idle_origins()
            response = await pool.handle_async_request(request)
        except BaseException:
            closed()
            raise
        response.stream = _Counted(response.stream, closed)
        return response

    async def aclose(self) -> None:
        origins, self._origins = list(self._origins.values()), OrderedDict()
        for pool in origins:
            await pool.aclose()


class Client:
    """GET requests over a GuardedTransport: no cookies, no redirects followed, timeouts
    per phase. It speaks to httpcore directly (httpx's client, request and response models
    were a quarter of the download loop's CPU); httpx parses and joins the URLs."""

    def __init__(self, transport: GuardedTransport, policy: DownloadPolicy) -> None:
        self._transport = transport
        self._headers = [(b"User-Agent", USER_AGENT.encode()),
                         (b"Accept", b"image/*,*/*;q=0.5"), (b"Accept-Encoding", b"identity")]
        self._timeouts = {"connect": policy.connect_timeout, "read": policy.read_timeout,
                          "write": policy.read_timeout, "pool": policy.total_timeout}
        self.is_closed = False  # as httpx's clients say, for whoever owns one (the runtime)

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self.is_closed = True
        await self._transport.aclose()

    @asynccontextmanager
    async def get(self, url: httpx.URL) -> AsyncIterator["Answer"]:
        """The answer to a GET of `url`, its body to read inside the block, closed after."""
        target = httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port,
                              target=url.raw_path)
        request = httpcore.Request(b"GET", target, headers=[(b"Host", url.netloc),
                                                            *self._headers],
                                   extensions={"timeout": self._timeouts})
        response = await self._transport.send(url, request)
        try:
            yield Answer(status=response.status, stream=response.stream, headers={
                name.decode("latin-1").lower(): value.decode("latin-1")
                for name, value in response.headers})
        finally:
            await response.aclose()


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: status, headers by lowercase name, and the body still to read."""

    status: int
    headers: dict[str, str]
    stream: Any


def make_client(policy: DownloadPolicy, *, resolver: Resolver | None = None,
                network: httpcore.AsyncNetworkBackend | None = None) -> Client:
    """A client whose every connection is SSRF-checked; redirects are not followed.

    `resolver` (host, port -> addresses) and `network` (opens the checked connections) are
    the edges to the outside world; tests replace them to play a public internet.
    """
    transport = GuardedTransport(policy=policy, resolver=resolver or system_resolver,
                                 network=network)
    return Client(transport, policy)


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


async def _decoded_body(response: Answer, max_bytes: int) -> AsyncIterator[bytes]:
    """The body as sent, or decoded (gzip, deflate) a bounded step at a time: at most
    max_bytes + 1 decoded bytes ever come out, however small the compressed body (bombs)."""
    encoding = response.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        async for chunk in response.stream:
            yield chunk
        return
    if encoding not in DECODED_ENCODINGS:
        raise DownloadError(f"unsupported content encoding ({encoding[:40]})")
    inflater = zlib.decompressobj(DECODED_ENCODINGS[encoding])
    produced = 0
    try:
        async for chunk in response.stream:
            while chunk and not inflater.eof:
                out = inflater.decompress(chunk, max_bytes + 1 - produced)
                chunk = inflater.unconsumed_tail
                produced += len(out)
                yield out
                if produced > max_bytes:
                    return
        yield inflater.flush()  # output zlib held back for want of room (a few bytes)
    except zlib.error as exc:
        raise DownloadError(f"corrupt {encoding} body") from exc


async def _fetch(client: Client, url: str, policy: DownloadPolicy) -> Downloaded:
    current = _checked_url(url)
    for _hop in range(policy.max_redirects + 1):
        async with client.get(current) as response:
            if response.status in REDIRECTS and "location" in response.headers:
                current = _checked_url(str(current.join(response.headers["location"])))
                continue
            if response.status != 200:
                raise DownloadError(f"HTTP {response.status}")
            content_type = response.headers.get("content-type")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > policy.max_bytes:
                raise DownloadError(f"too large (over {_megabytes(policy.max_bytes)})")
            body, size = await _spooled_body(response, policy, content_type)
            return Downloaded(url=url, final_url=str(current), body=body, size=size,
                              content_type=content_type)
    raise DownloadError("too many redirects")


async def _spooled_body(response: Answer, policy: DownloadPolicy,
                        content_type: str | None) -> tuple[IO[bytes], int]:
    """The body, chunk by chunk into a spooled temp file (rewound), sniffed as its first
    bytes land and stopped the moment it passes max_bytes; closed again on any refusal."""
    body = tempfile.SpooledTemporaryFile(max_size=policy.spool_bytes)
    head, size = b"", 0
    try:
        async for chunk in _decoded_body(response, policy.max_bytes):
            size += len(chunk)
            if size > policy.max_bytes:
                raise DownloadError(f"too large (over {_megabytes(policy.max_bytes)})")
            if len(head) < 16:
                head += chunk[:16 - len(head)]
                if len(head) == 16 and not sniff_image(head):
                    raise _not_an_image(head, content_type)
            body.write(chunk)
        if not size:
            raise DownloadError("empty response")
        if len(head) < 16 and not sniff_image(head):
            raise _not_an_image(head, content_type)
    except BaseException:
        body.close()
        raise
    body.seek(0)
    return body, size


async def download(client: Client, url: str, *, policy: DownloadPolicy) -> Downloaded:
    """Fetch one image URL under `policy`, or raise DownloadError with a reason for a person."""
    try:
        async with asyncio.timeout(policy.total_timeout):
            return await _fetch(client, url, policy)
    except DownloadError:
        raise
    except (TimeoutError, httpcore.TimeoutException) as exc:
        raise DownloadError("timed out") from exc
    except httpcore.ConnectError as exc:
        raise DownloadError("could not connect") from exc
    except (httpx.InvalidURL, httpcore.UnsupportedProtocol) as exc:
        raise DownloadError("invalid URL") from exc
    except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.PoolTimeout) as exc:
        raise DownloadError(f"download failed ({type(exc).__name__})") from exc


def _host(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:  # an invalid URL fails in download(); any host key will do here
        return ""


async def download_many(
    items: Iterable[tuple[K, str]], *, policy: DownloadPolicy,
    client: Client | None = None,
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
