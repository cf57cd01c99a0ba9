"""Downloads ask for no compression and decode a compressed answer under the size cap."""

import asyncio
import gzip
import threading
import tracemalloc
import zlib
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler

import pytest

from app.services.downloader import DownloadError, DownloadPolicy, download, make_client
from tests.gather.loopback import QuietServer

CAP = 2**20
POLICY = DownloadPolicy(allow_loopback=True, max_bytes=CAP)
JPEG_START = b"\xff\xd8\xff\xe0"


def gzip_bomb(mib: int) -> bytes:
    """A gzip body of about `mib` KB that decodes to `mib` MiB (a JPEG start, then zeros).

    After a full flush the compressor starts afresh, so every later MiB compresses to the
    same bytes: the bomb costs one MiB of compression, not `mib`.
    """
    deflate = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    first = deflate.compress(JPEG_START + bytes(2**20 - 4)) + deflate.flush(zlib.Z_FULL_FLUSH)
    rest = deflate.compress(bytes(2**20)) + deflate.flush(zlib.Z_FULL_FLUSH)
    return first + rest * (mib - 1) + deflate.flush()


@contextmanager
def compressing_server(answers: dict[str, tuple[bytes, str]], seen: list):
    """Answers path -> (body, Content-Encoding) whatever Accept-Encoding asked for."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            seen.append(self.headers.get("Accept-Encoding"))
            body, encoding = answers[self.path]
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Encoding", encoding)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

    server = QuietServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def fetch(url: str) -> bytes:
    async def go():
        async with make_client(POLICY) as client:
            return (await download(client, url, policy=POLICY)).data

    return asyncio.run(go())


@pytest.fixture(scope="module")
def photo(data_dir) -> bytes:
    return (data_dir / "bears" / "grizzly" / "0001.jpg").read_bytes()


def test_a_gzip_bomb_stops_at_the_cap_without_decoding_the_rest(photo):
    seen: list = []
    bomb = gzip_bomb(512)  # 0.5 MB on the wire (under the cap), 512 MiB decoded
    assert len(bomb) < CAP
    with compressing_server({"/bomb.jpg": (bomb, "gzip")}, seen) as base:
        tracemalloc.start()
        try:
            with pytest.raises(DownloadError, match="too large"):
                fetch(f"{base}/bomb.jpg")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert seen == ["identity"]
    assert peak < 8 * CAP  # the cap and a few buffers, not a decoded chunk of 64 MB


def test_compressed_images_still_arrive_whole(photo):
    seen: list = []
    answers = {"/gzip.jpg": (gzip.compress(photo), "gzip"),
               "/deflate.jpg": (zlib.compress(photo), "deflate"),
               "/plain.jpg": (photo, "identity")}
    with compressing_server(answers, seen) as base:
        for path in answers:
            assert fetch(base + path) == photo


def test_unknown_and_corrupt_encodings_are_refused(photo):
    answers = {"/br.jpg": (photo, "br"), "/twice.jpg": (photo, "gzip, gzip"),
               "/corrupt.jpg": (b"\x1f\x8b\x08\x00" + photo, "gzip")}
    with compressing_server(answers, []) as base:
        for path, reason in [("/br.jpg", "unsupported content encoding \\(br\\)"),
                             ("/twice.jpg", "unsupported content encoding"),
                             ("/corrupt.jpg", "corrupt gzip body")]:
            with pytest.raises(DownloadError, match=reason):
                fetch(base + path)
