"""A small in-test Kubernetes API server that speaks list and watch, for the real `kubernetes` client.

It keeps objects per resource path, a resourceVersion counter and an event log, and supports
what the client relies on: List responses with metadata.resourceVersion, chunked watch streams of
JSON events, bookmarks, ``410 Gone`` for a resourceVersion older than the compacted log, dropped
connections, absent API groups (404) and forbidden resources (403).
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

PATHS = {
    "pods": "/api/v1/pods",
    "services": "/api/v1/services",
    "namespaces": "/api/v1/namespaces",
    "nodes": "/api/v1/nodes",
    "networkpolicies": "/apis/networking.k8s.io/v1/networkpolicies",
    "calico_networkpolicies": "/apis/{g}/networkpolicies",
    "calico_globalnetworkpolicies": "/apis/{g}/globalnetworkpolicies",
    "calico_networksets": "/apis/{g}/networksets",
    "calico_globalnetworksets": "/apis/{g}/globalnetworksets",
    "serviceaccounts": "/api/v1/serviceaccounts",
    "calico_tiers": "/apis/{g}/tiers",
    "calico_stagednetworkpolicies": "/apis/{g}/stagednetworkpolicies",
    "calico_stagedglobalnetworkpolicies": "/apis/{g}/stagedglobalnetworkpolicies",
    "calico_stagedkubernetesnetworkpolicies": "/apis/{g}/stagedkubernetesnetworkpolicies",
}


class FakeKubeAPI:
    def __init__(self, calico_group: str | None = "projectcalico.org/v3", tls: tuple[str, str] | None = None) -> None:
        """``tls``: (certificate, key) files to serve HTTPS, as the real API server (and in-cluster
        configuration) does."""
        self.calico_group = calico_group  # None: Calico not served at all
        self.rv = 100
        self.objects: dict[str, dict[tuple[str, str], dict]] = {k: {} for k in PATHS}
        self.log: dict[str, list[tuple[int, str, dict]]] = {k: [] for k in PATHS}
        self.compacted = 0
        self.forbidden: set[str] = set()
        # Faults: lists that never answer, watches that send headers and then nothing, 410 every time.
        self.hang_lists = False
        self.silent_watches = False
        self.always_gone = False
        self.requests: list[str] = []
        self.open_watches: Counter[str] = Counter()  # watches that drop_watches() would end now, by resource
        self._cond = threading.Condition()
        self._generation = 0  # bumped to drop every open watch
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.scheme = "http"
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeKubeAPI:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.drop_watches()
        self.server.shutdown()
        self.server.server_close()

    # --- test controls ---------------------------------------------------------------------------
    def _resource_of_path(self, path: str) -> str | None:
        for key, template in PATHS.items():
            if "{g}" in template:
                if self.calico_group is None:
                    continue
                template = template.format(g=self.calico_group)
            if path == template:
                return key
        return None

    def put(self, resource: str, obj: dict, event: str | None = None) -> None:
        with self._cond:
            self.rv += 1
            meta = obj.setdefault("metadata", {})
            meta["resourceVersion"] = str(self.rv)
            key = (meta.get("namespace", ""), meta["name"])
            kind = event or ("MODIFIED" if key in self.objects[resource] else "ADDED")
            self.objects[resource][key] = obj
            self.log[resource].append((self.rv, kind, json.loads(json.dumps(obj))))
            self._cond.notify_all()

    def delete(self, resource: str, namespace: str, name: str) -> None:
        with self._cond:
            obj = self.objects[resource].pop((namespace, name))
            self.rv += 1
            obj["metadata"]["resourceVersion"] = str(self.rv)
            self.log[resource].append((self.rv, "DELETED", obj))
            self._cond.notify_all()

    def compact(self) -> None:
        """Forget the event log: watches from an older resourceVersion now get 410 Gone."""
        with self._cond:
            self.compacted = self.rv
            for k in self.log:
                self.log[k] = []

    def drop_watches(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def count(self, prefix: str) -> int:
        return sum(1 for r in self.requests if r.startswith(prefix))

    # --- HTTP ------------------------------------------------------------------------------------
    def _handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _json(self, code: int, doc: dict) -> None:
                body = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                url = urlparse(self.path)
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                resource = api._resource_of_path(url.path)
                watching = q.get("watch") in ("true", "1", "True")
                api.requests.append(("WATCH " if watching else "LIST ") + url.path)
                if resource is None:
                    self._json(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404,
                                     "reason": "NotFound",
                                     "message": "the server could not find the requested resource"})
                    return
                if resource in api.forbidden:
                    self._json(403, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 403,
                                     "reason": "Forbidden", "message": f"{resource} is forbidden"})
                    return
                if not watching and api.hang_lists:
                    self._hang()
                    return
                if not watching:
                    with api._cond:
                        items = list(api.objects[resource].values())
                        rv = api.rv
                    self._json(200, {"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": str(rv)},
                                     "items": items})
                    return
                self._watch(resource, int(q.get("resourceVersion") or 0), float(q.get("timeoutSeconds") or 30),
                            q.get("allowWatchBookmarks") == "true")

            def _chunk(self, event: dict) -> None:
                data = (json.dumps(event) + "\n").encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _hang(self) -> None:
                """Say nothing until the test ends (a stuck API server or a black-holed connection)."""
                with api._cond:
                    gen = api._generation
                    while api._generation == gen:
                        api._cond.wait(0.5)
                self.close_connection = True

            def _watch(self, resource: str, since: int, timeout: float, bookmarks: bool) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                if api.silent_watches:
                    self._hang()
                    return
                end = time.monotonic() + timeout
                with api._cond:
                    gen = api._generation
                    if since < api.compacted or api.always_gone:
                        self._chunk({"type": "ERROR", "object": {
                            "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410,
                            "reason": "Expired", "message": f"too old resource version: {since} ({api.compacted})"}})
                        self.wfile.write(b"0\r\n\r\n")
                        return
                    if bookmarks:
                        self._chunk({"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1",
                                                                     "metadata": {"resourceVersion": str(api.rv)}}})
                    sent = since
                    api.open_watches[resource] += 1  # from here on, drop_watches() ends this one
                    try:
                        while True:
                            for rv, kind, obj in api.log[resource]:
                                if rv > sent:
                                    self._chunk({"type": kind, "object": obj})
                                    sent = rv
                            if api._generation != gen:
                                # Drop the connection mid-stream, without the closing chunk.
                                self.close_connection = True
                                try:
                                    self.connection.shutdown(2)
                                except OSError:
                                    pass  # the client went first
                                return
                            left = end - time.monotonic()
                            if left <= 0:
                                break
                            api._cond.wait(min(left, 0.5))
                    finally:
                        api.open_watches[resource] -= 1
                try:
                    self.wfile.write(b"0\r\n\r\n")
                except OSError:
                    self.close_connection = True

        return Handler
