"""HTTP endpoints: /metrics (Prometheus text or OpenMetrics, gzip when asked, HEAD), /healthz, /readyz.

Bounded like the receivers: at most ``max_connections`` requests at once (one more is answered 503
at once and counted), and each connection has ``request_timeout`` seconds in all to send its
request (a slow client cannot hold a thread). Optionally TLS and basic auth from a web config file
in the format of Prometheus' exporter-toolkit (``--web-config-file``); /healthz and /readyz stay
open to the kubelet's probes, which carry no credentials. Refusals are counted by reason in
``calico_lens_metrics_requests_refused_total``.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import socket
import ssl
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml
from prometheus_client import ProcessCollector
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry

from calico_lens.config import Config, ConfigError, split_address
from calico_lens.metrics import names

TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
Metrics = Callable[[bool], bytes]  # openmetrics? → exposition
OPEN_PATHS = ("/healthz", "/readyz")  # probes carry no credentials


@dataclass
class WebConfig:
    """The exporter-toolkit web config: TLS (optionally with client certificates) and basic auth."""

    tls: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)  # user → bcrypt hash

    @classmethod
    def load(cls, path: str) -> WebConfig:
        def bad(what: str) -> ConfigError:
            return ConfigError(f"web_config_file: {path}: {what}")

        try:
            with open(path) as fh:
                doc = yaml.safe_load(fh) or {}
        except (OSError, yaml.YAMLError) as e:
            raise bad(f"cannot be read ({e})") from None
        if not isinstance(doc, dict):
            raise bad("must be a mapping with tls_server_config and/or basic_auth_users")
        unknown = set(doc) - {"tls_server_config", "basic_auth_users", "http_server_config"}
        if unknown:
            raise bad(f"unknown key {sorted(unknown)[0]!r} (known: tls_server_config, basic_auth_users)")
        cfg = cls()
        users = doc.get("basic_auth_users") or {}
        if not isinstance(users, dict):
            raise bad("basic_auth_users must map user names to bcrypt hashes")
        for user, hashed in users.items():
            if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
                raise bad(f"basic_auth_users.{user}: not a bcrypt hash (make one with: htpasswd -nBC 10 {user})")
            cfg.users[str(user)] = hashed.encode()
        tls = doc.get("tls_server_config")
        if tls is not None:
            cfg.tls = _tls_context(tls, bad)
        return cfg


def _tls_context(tls: object, bad: Callable[[str], ConfigError]) -> ssl.SSLContext:
    if not isinstance(tls, dict) or not tls.get("cert_file") or not tls.get("key_file"):
        raise bad("tls_server_config needs cert_file and key_file")
    known = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version"}
    if set(tls) - known:
        raise bad(f"tls_server_config: unknown key {sorted(set(tls) - known)[0]!r} (known: {', '.join(sorted(known))})")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    versions = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
    version = tls.get("min_version", "TLS12")
    if version not in versions:
        raise bad(f"tls_server_config.min_version: {version!r} is not TLS12 or TLS13")
    ctx.minimum_version = versions[version]
    try:
        ctx.load_cert_chain(tls["cert_file"], tls["key_file"])
    except (OSError, ssl.SSLError) as e:
        raise bad(f"tls_server_config: cannot load cert_file/key_file ({e})") from None
    auth = tls.get("client_auth_type", "NoClientCert")
    modes = {"NoClientCert": ssl.CERT_NONE, "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
             "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
    if auth not in modes:
        raise bad(f"tls_server_config.client_auth_type: {auth!r} is not one of {', '.join(modes)}")
    if modes[auth] != ssl.CERT_NONE:
        if not tls.get("client_ca_file"):
            raise bad(f"tls_server_config: client_auth_type {auth} needs client_ca_file")
        try:
            ctx.load_verify_locations(tls["client_ca_file"])
        except (OSError, ssl.SSLError) as e:
            raise bad(f"tls_server_config: cannot load client_ca_file ({e})") from None
        ctx.verify_mode = modes[auth]
    return ctx


def serve_config(cfg: Config, metrics: Metrics, ready: Callable[[], tuple[bool, str]],
                 refusals: Refusals) -> _Server:
    """``serve`` on ``metrics_address`` with the web config file and the limits a Config names."""
    host, port = split_address(cfg.metrics_address)
    web = WebConfig.load(cfg.web_config_file) if cfg.web_config_file else None
    return serve(host, port, metrics, ready, web,
                 ServerLimits(cfg.metrics_max_connections, cfg.metrics_request_timeout), refusals)


def self_metrics(registry: CollectorRegistry) -> Refusals:
    """What every HTTP-serving process exports about itself: the server's refusals and the standard
    process_* metrics (memory and CPU, to watch against the pod's limits)."""
    refusals = Refusals()
    registry.register(refusals)
    ProcessCollector(registry=registry)
    return refusals


@dataclass
class ServerLimits:
    max_connections: int = 16
    request_timeout: float = 10.0


class Refusals:
    """Requests the server refused, by reason, for ``calico_lens_metrics_requests_refused_total``."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, reason: str) -> None:
        with self._lock:
            self.counts[reason] += 1

    def collect(self) -> Iterator[Metric]:
        fam = CounterMetricFamily(names.METRICS_REFUSED, "Requests to the agent's HTTP server refused, by reason: "
                                  "too_many_connections, timeout, tls_error, auth_failed.", labels=("reason",))
        with self._lock:
            for reason, n in sorted(self.counts.items()):
                fam.add_metric((reason,), n)
        yield fam


class _AuthCache:
    """bcrypt is slow by design (~0.1 s a check): remember the credentials that passed, bounded."""

    def __init__(self, users: dict[str, bytes], size: int = 64) -> None:
        self.users, self.size = users, size
        self._ok: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        hashed = self.users.get(user)
        if hashed is None:
            return False
        key = hashlib.sha256(hashed + b"\0" + password.encode()).digest()
        with self._lock:
            if key in self._ok:
                self._ok.move_to_end(key)
                return True
        import bcrypt  # only where basic auth is configured

        if not bcrypt.checkpw(password.encode(), hashed):
            return False
        with self._lock:
            self._ok[key] = None
            if len(self._ok) > self.size:
                self._ok.popitem(last=False)
        return True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type, limits: ServerLimits, refusals: Refusals,
                 tls: ssl.SSLContext | None) -> None:
        super().__init__(address, handler)
        self.limits, self.refusals = limits, refusals
        self._slots = threading.BoundedSemaphore(limits.max_connections)
        if tls is not None:  # the handshake happens in the request's thread, under its deadline
            self.socket = tls.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    def process_request(self, request: socket.socket, client_address: object) -> None:
        if not self._slots.acquire(blocking=False):
            self.refusals.add("too_many_connections")
            try:
                request.settimeout(1.0)
                if not isinstance(request, ssl.SSLSocket):
                    request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: socket.socket, client_address: object) -> None:
        # The deadline for the whole request: a client that trickles bytes is cut off when it runs out.
        timer = threading.Timer(self.limits.request_timeout, _cut, (request, self.refusals))
        timer.daemon = True
        timer.start()
        try:
            super().process_request_thread(request, client_address)
        finally:
            timer.cancel()
            self._slots.release()

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # counted where it happened; a scrape endpoint must not print tracebacks for bad clients


def cut(conn: socket.socket) -> None:
    """End a connection another thread is serving: its reads return EOF, and that thread closes it."""
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _cut(request: socket.socket, refusals: Refusals) -> None:
    refusals.add("timeout")
    cut(request)


def serve(host: str, port: int, metrics: Metrics, ready: Callable[[], tuple[bool, str]],
          web: WebConfig | None = None, limits: ServerLimits | None = None,
          refusals: Refusals | None = None) -> _Server:
    web = web or WebConfig()
    limits = limits or ServerLimits()
    refusals = refusals or Refusals()
    auth = _AuthCache(web.users) if web.users else None

    class Handler(BaseHTTPRequestHandler):
        # Per read, only a safety net: the server's timer bounds the whole request and counts the cut.
        # A read timing out first (same length, started a moment later) closed it uncounted.
        timeout = limits.request_timeout + 1.0

        def handle(self) -> None:
            try:
                if isinstance(self.connection, ssl.SSLSocket):
                    self.connection.do_handshake()
                super().handle()
            except ssl.SSLError:
                refusals.add("tls_error")
            except (TimeoutError, ConnectionError, OSError):
                pass  # a timeout is counted by the server's timer; a client that went away, by nobody

        def do_GET(self) -> None:
            self._respond(head=False)

        def do_HEAD(self) -> None:
            self._respond(head=True)

        def _respond(self, head: bool) -> None:
            path = self.path.split("?", 1)[0]
            if auth is not None and path not in OPEN_PATHS and not auth.check(self.headers.get("Authorization")):
                refusals.add("auth_failed")
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="calico-lens"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if path == "/metrics":
                om = "application/openmetrics-text" in (self.headers.get("Accept") or "")
                body, ctype = metrics(om), OPENMETRICS if om else TEXT
                gz = "gzip" in (self.headers.get("Accept-Encoding") or "")
                self._send(200, gzip.compress(body, 1) if gz else body, ctype, head, gzip_=gz)
            elif path == "/healthz":
                self._send(200, b"ok\n", head=head)
            elif path == "/readyz":
                ok, why = ready()
                self._send(200 if ok else 503, (why + "\n").encode(), head=head)
            elif path == "/":
                self._send(200, b"calico-lens: /metrics /healthz /readyz\n", head=head)
            else:
                self._send(404, b"not found\n", head=head)

        def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8", head: bool = False,
                  gzip_: bool = False) -> None:
            send_body(self, code, body, ctype, head, gzip_)

        def log_message(self, format: str, *args: object) -> None:
            pass  # scrapes every few seconds would flood the log

    try:
        httpd = _Server((host, port), Handler, limits, refusals, web.tls)
    except OSError as e:
        raise ConfigError(f"metrics_address: cannot serve on {host}:{port} ({e.strerror}); "
                          "choose another with --metrics-address HOST:PORT") from None
    threading.Thread(target=httpd.serve_forever, name="http", daemon=True).start()
    return httpd


def send_body(handler: BaseHTTPRequestHandler, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8",
              head: bool = False, gzip_: bool = False) -> None:
    """A complete response with its length, so keep-alive clients know where it ends (HEAD: the
    headers a GET would get, no body)."""
    handler.send_response(code)
    handler.send_header("Content-Type", ctype)
    if gzip_:
        handler.send_header("Content-Encoding", "gzip")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if not head:
        handler.wfile.write(body)
