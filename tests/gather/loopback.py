"""A loopback HTTP server of the test photos, with slow, missing, redirecting and HTML answers.

Paths: /photo/<folder>/<file> (the file under the data folder, sent as image/jpeg whatever
it holds), /slow/<seconds>/<path>, /redirect/<hops>/<path>, /loop, /missing/<anything>,
/page.html, /to?<url> (a redirect to any URL). `latency` delays every answer (the
benchmark's injected network latency).
"""

import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

HTML = b"<!doctype html><html><head><title>403 Forbidden</title></head><body>no</body></html>"


def make_handler(root: Path, latency: float, stats: dict):
    lock = threading.Lock()
    stats.update(requests=0, in_flight=0, max_in_flight=0)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            with lock:
                stats["requests"] += 1
                stats["in_flight"] += 1
                stats["max_in_flight"] = max(stats["max_in_flight"], stats["in_flight"])
            try:
                if latency:
                    time.sleep(latency)
                self.route(self.path)
            finally:
                with lock:
                    stats["in_flight"] -= 1

        def route(self, path: str) -> None:
            path, _, query = path.partition("?")
            parts = path.strip("/").split("/")
            if parts[0] == "to":
                return self.send(302, b"", "text/plain", location=unquote(query))
            if parts[0] == "photo":
                file = (root / "/".join(parts[1:])).resolve()
                if root not in file.parents or not file.is_file():
                    return self.send(404, b"not found", "text/plain")
                return self.send(200, file.read_bytes(), "image/jpeg")
            if parts[0] == "slow":
                time.sleep(float(parts[1]))
                return self.route("/" + "/".join(parts[2:]))
            if parts[0] == "redirect":
                hops = int(parts[1])
                rest = "/".join(parts[2:])
                target = f"/redirect/{hops - 1}/{rest}" if hops > 1 else f"/{rest}"
                return self.send(302, b"", "text/plain", location=target)
            if parts[0] == "loop":
                return self.send(302, b"", "text/plain", location="/loop")
            if parts[0] == "page.html":
                return self.send(200, HTML, "text/html; charset=utf-8")
            return self.send(404, b"not found", "text/plain")

        def send(self, status: int, body: bytes, content_type: str, location: str = "") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if location:
                self.send_header("Location", location)
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

    return Handler


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # clients that hang up early (timeouts, size caps) are part of the tests


@contextmanager
def serving(root: Path, *, host: str = "127.0.0.1", port: int = 0, latency: float = 0.0,
            stats: dict | None = None):
    """Serve `root` on host:port (0: any free port) in a thread; yields the base URL.

    `stats` (when given) counts requests and the most answered at once.
    """
    stats = {} if stats is None else stats
    server = QuietServer((host, port), make_handler(Path(root).resolve(), latency, stats))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def endless_jpeg_server(sent: list):
    """Answers every GET with a JPEG start and then zeros until the client hangs up (no
    Content-Length, so only the running count can stop it); `sent` gets the bytes written."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.end_headers()
            chunk, total = b"\xff\xd8\xff\xe0" + bytes(2**16 - 4), 0
            try:
                while total < 2**30:
                    self.wfile.write(chunk)
                    total += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                sent.append(total)

    server = QuietServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
