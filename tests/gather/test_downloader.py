"""The downloader: SSRF guard (also on redirects), size, time and redirect bounds, sniffing."""

import asyncio
import time
import tracemalloc
from contextlib import ExitStack
from urllib.parse import quote

import httpcore
import pytest

from app.services.downloader import (
    DownloadError,
    DownloadPolicy,
    download,
    download_many,
    make_client,
)
from tests.gather.loopback import endless_jpeg_server, serving

PUBLIC_IP = "93.184.215.14"  # a global address; the test network routes it to the loopback


@pytest.fixture
def server(data_dir):
    stats: dict = {}
    with serving(data_dir, stats=stats) as base:
        yield base, stats


def fetch(url: str, policy: DownloadPolicy, **client_args):
    async def go():
        async with make_client(policy, **client_args) as client:
            return await download(client, url, policy=policy)

    return asyncio.run(go())


def refused(url: str, policy: DownloadPolicy, **client_args) -> str:
    with pytest.raises(DownloadError) as caught:
        fetch(url, policy, **client_args)
    return str(caught.value)


@pytest.mark.parametrize(("url", "reason"), [
    ("http://10.1.2.3/bear.jpg", "refused: 10.1.2.3 is a private address"),
    ("http://169.254.169.254/latest/meta-data/", "refused: 169.254.169.254 is a cloud metadata"),
    ("http://[fd00:ec2::254]/latest/", "refused: fd00:ec2::254 is a cloud metadata"),
    ("http://[::1]:9/bear.jpg", "refused: ::1 is a loopback address"),
    ("http://0.0.0.0:9/", "refused: 0.0.0.0 is a unspecified address"),
    ("http://[::ffff:10.0.0.1]/", "refused: 10.0.0.1 is a private address"),
    ("http://224.0.0.1/", "refused: 224.0.0.1 is a multicast address"),
    ("http://192.168.1.1/", "refused: 192.168.1.1 is a private address"),
    ("http://[2002:a00:1::1]/", "refused: 10.0.0.1 is a private address"),  # 6to4
    ("http://[64:ff9b::a00:1]/", "refused: 10.0.0.1 is a private address"),  # NAT64
    ("http://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/",
     "refused: 10.0.0.1 is a private address"),  # Teredo
    ("ftp://example.com/bear.jpg", "refused: only http and https URLs"),
    ("file:///etc/passwd", "refused: only http and https URLs"),
])
def test_private_addresses_and_other_schemes_are_refused(url, reason):
    assert refused(url, DownloadPolicy()).startswith(reason)


def test_loopback_is_refused_unless_allowed_and_nothing_is_sent(server):
    base, stats = server
    url = f"{base}/photo/bears/black/0001.jpg"
    assert refused(url, DownloadPolicy()) == "refused: 127.0.0.1 is a loopback address"
    localhost = url.replace("127.0.0.1", "localhost")
    assert refused(localhost, DownloadPolicy()).startswith("refused: ")
    assert stats["requests"] == 0
    allowed = DownloadPolicy(allow_loopback=True)
    assert fetch(url, allowed).data[:3] == b"\xff\xd8\xff"
    assert refused("http://10.0.0.5/x.jpg", allowed) == "refused: 10.0.0.5 is a private address"


class PublicInternet(httpcore.AsyncNetworkBackend):
    """The network edge: PUBLIC_IP routes to the loopback server; records where it connects."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connected: list[str] = []
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host, port, timeout=None, local_address=None,
                          socket_options=None):
        self.connected.append(host)
        target = "127.0.0.1" if host == PUBLIC_IP else host
        return await self.inner.connect_tcp(target, self.port if host == PUBLIC_IP else port,
                                            timeout=timeout)

    async def sleep(self, seconds):
        await self.inner.sleep(seconds)


def public_dns(answers: dict[str, list[str]]):
    async def resolve(host: str, port: int) -> list[str]:
        return answers.get(host, [host])

    return resolve


@pytest.mark.parametrize("target", [
    "http://127.0.0.1:{port}/photo/bears/black/0001.jpg",
    "http://10.0.0.5/bear.jpg",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]:{port}/photo/bears/black/0001.jpg",
    "http://intranet.example/bear.jpg",
])
def test_a_public_url_that_redirects_to_a_private_one_is_refused(server, target):
    base, stats = server
    port = int(base.rsplit(":", 1)[1])
    network = PublicInternet(port)
    dns = public_dns({"images.example.com": [PUBLIC_IP], "intranet.example": ["10.9.8.7"]})
    hop = quote(target.format(port=port), safe="")
    policy = DownloadPolicy()  # loopback not allowed
    # The first hop is public and answers a redirect; the second is refused before connecting.
    reason = refused(f"http://images.example.com/to?{hop}", policy, resolver=dns,
                     network=network)
    assert reason.startswith("refused: "), reason
    assert network.connected == [PUBLIC_IP]


def test_a_public_redirect_chain_is_followed(server):
    base, _ = server
    port = int(base.rsplit(":", 1)[1])
    network = PublicInternet(port)
    dns = public_dns({"images.example.com": [PUBLIC_IP]})
    got = fetch("http://images.example.com/redirect/2/photo/bears/teddy/0002.jpg",
                DownloadPolicy(), resolver=dns, network=network)
    assert got.final_url == "http://images.example.com/photo/bears/teddy/0002.jpg"
    assert got.data[:3] == b"\xff\xd8\xff"


def test_a_host_with_any_private_address_is_refused():
    dns = public_dns({"mixed.example": [PUBLIC_IP, "10.0.0.7"]})
    assert refused("http://mixed.example/x.jpg", DownloadPolicy(), resolver=dns) == (
        "refused: 10.0.0.7 is a private address")


LOOPBACK = DownloadPolicy(allow_loopback=True, read_timeout=0.5, total_timeout=3)


@pytest.mark.parametrize(("path", "reason"), [
    ("/missing/bear.jpg", "HTTP 404"),
    ("/page.html", "not an image (text/html page)"),
    ("/photo/odd/html_error_page.jpg", "not an image (an HTML page)"),
    ("/photo/odd/not_an_image.jpg", "not an image (unrecognised content)"),
    ("/photo/odd/empty.jpg", "empty response"),
    ("/loop", "too many redirects"),
    ("/slow/2/photo/bears/black/0001.jpg", "timed out"),
])
def test_bad_answers_have_reasons(server, path, reason):
    base, _ = server
    assert refused(base + path, LOOPBACK) == reason


def test_size_cap_and_sniffing(server):
    base, _ = server
    small = DownloadPolicy(allow_loopback=True, max_bytes=10_000)
    assert refused(f"{base}/photo/bears/black/0001.jpg", small) == "too large (over 9 KB)"
    png = fetch(f"{base}/photo/odd/png_named_jpg.jpg", LOOPBACK)
    assert png.data.startswith(b"\x89PNG") and png.content_type == "image/jpeg"
    webp = fetch(f"{base}/photo/odd/webp_named_jpg.jpg", LOOPBACK)
    assert webp.data[8:12] == b"WEBP"


def test_download_many_bounds_per_host_concurrency_and_yields_as_finished(server):
    base, stats = server
    policy = DownloadPolicy(allow_loopback=True, per_host=2, concurrency=8)
    items = [(i, f"{base}/slow/0.2/photo/bears/grizzly/{i + 1:04d}.jpg") for i in range(6)]
    items.append((99, f"{base}/missing/x.jpg"))

    async def go():
        return [pair async for pair in download_many(items, policy=policy)]

    started = time.monotonic()
    results = asyncio.run(go())
    assert stats["max_in_flight"] <= 2
    assert time.monotonic() - started >= 0.55  # 6 slow answers, two at a time
    assert sorted(key for key, _ in results) == [0, 1, 2, 3, 4, 5, 99]
    outcome = dict(results)
    assert str(outcome[99]) == "HTTP 404"
    assert all(outcome[i].data[:3] == b"\xff\xd8\xff" for i in range(6))


def test_one_small_pool_per_origin_and_idle_pools_closed_beyond_the_limit(data_dir):
    policy = DownloadPolicy(allow_loopback=True, per_host=2, concurrency=2)
    asked: list[str] = []

    async def dns(host: str, port: int) -> list[str]:
        asked.append(host)
        return [host]

    with ExitStack() as stack:
        bases = [stack.enter_context(serving(data_dir)) for _ in range(3)]

        async def go():
            client = make_client(policy, resolver=dns)
            transport = client._transport
            async with client:
                for base in bases + bases[:1]:
                    got = await download(client, f"{base}/photo/bears/black/0001.jpg",
                                         policy=policy)
                    assert got.data[:3] == b"\xff\xd8\xff"
                    pools = list(transport._origins.values())
                    assert len(pools) <= 2  # the least recently used idle origin was closed
                    assert all(p._max_connections == 2 for p in pools)

        asyncio.run(go())
    assert asked.count("127.0.0.1") == 1  # resolved once per host and job, checked each time


def test_an_endless_body_stops_at_the_cap_holding_a_chunk_at_a_time():
    sent: list = []
    policy = DownloadPolicy(allow_loopback=True, max_bytes=4 * 2**20, spool_bytes=2**16)
    with endless_jpeg_server(sent) as base:
        tracemalloc.start()
        try:
            assert refused(f"{base}/forever.jpg", policy) == "too large (over 4 MB)"
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        deadline = time.monotonic() + 5
        while not sent and time.monotonic() < deadline:
            time.sleep(0.01)
    assert sent and sent[0] < 64 * 2**20  # it hung up early, not at the server's 1 GB
    assert peak < 2**20  # the body went to the spooled file's disk part, not to memory


def test_a_body_past_spool_bytes_waits_on_disk_and_reads_back_whole(server, data_dir):
    base, _ = server
    url = f"{base}/photo/bears/black/0001.jpg"
    photo = (data_dir / "bears" / "black" / "0001.jpg").read_bytes()
    small = fetch(url, DownloadPolicy(allow_loopback=True, spool_bytes=1024))
    large = fetch(url, DownloadPolicy(allow_loopback=True))
    assert small.body._rolled and not large.body._rolled  # on disk past 1 KB; in memory
    assert small.data == large.data == photo and small.size == len(photo)
    small.close()
    assert small.body.closed


def test_an_idle_connection_the_server_closed_is_not_reused(data_dir):
    """The asyncio connections tell the pool that an idle connection has ended (the server
    hung up after answering, without saying so): the next request opens a new one."""
    import socket
    import threading

    photo = (data_dir / "bears" / "black" / "0001.jpg").read_bytes()
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[int] = []

    def serve() -> None:
        while len(accepted) < 3:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(1)
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: "
                             + str(len(photo)).encode() + b"\r\n\r\n" + photo)

    threading.Thread(target=serve, daemon=True).start()
    policy = DownloadPolicy(allow_loopback=True)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/bear.jpg"

    async def go() -> list[bytes]:
        async with make_client(policy) as client:
            got = []
            for _ in range(3):
                got.append((await download(client, url, policy=policy)).data)
                await asyncio.sleep(0.05)  # the server's close reaches the idle connection
            return got

    try:
        assert asyncio.run(go()) == [photo] * 3
    finally:
        listener.close()
    assert len(accepted) == 3
