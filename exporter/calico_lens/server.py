"""HTTP endpoints: /metrics (Prometheus text format), /healthz, /readyz."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST

from calico_lens.config import ConfigError


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def send_body(handler: BaseHTTPRequestHandler, code: int, body: bytes,
              ctype: str = "text/plain; charset=utf-8") -> None:
    """A complete response with its length, so keep-alive clients know where it ends."""
    handler.send_response(code)
    handler.send_header("Content-Type", ctype)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def serve(host: str, port: int, metrics: Callable[[], bytes], ready: Callable[[], tuple[bool, str]]) -> _Server:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, metrics(), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._send(200, b"ok\n")
            elif path == "/readyz":
                ok, why = ready()
                self._send(200 if ok else 503, (why + "\n").encode())
            elif path == "/":
                self._send(200, b"calico-lens agent: /metrics /healthz /readyz\n")
            else:
                self._send(404, b"not found\n")

        def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            send_body(self, code, body, ctype)

        def log_message(self, format: str, *args: object) -> None:
            pass  # scrapes every few seconds would flood the log

    try:
        httpd = _Server((host, port), Handler)
    except OSError as e:
        raise ConfigError(f"metrics_address: cannot serve on {host}:{port} ({e.strerror}); "
                          "choose another with --metrics-address HOST:PORT") from None
    threading.Thread(target=httpd.serve_forever, name="http", daemon=True).start()
    return httpd
