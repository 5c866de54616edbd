"""Run a real Prometheus (Debian package) on 127.0.0.1 for a test, and ask it PromQL."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests
import yaml

from tests.helpers import stop


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 20.0, ok: Callable[[requests.Response], bool] | None = None,
              verify: str | bool = True) -> None:
    end = time.monotonic() + timeout
    last = ""
    while time.monotonic() < end:
        try:
            r = requests.get(url, timeout=2, verify=verify)
            if (ok or (lambda resp: resp.status_code == 200))(r):
                return
            last = f"HTTP {r.status_code}"
        except requests.RequestException as e:
            last = str(e)
        time.sleep(0.1)
    raise AssertionError(f"{url} not ready: {last}")


def wait_for_listener(address: str) -> None:
    """Until HOST:PORT accepts a TCP connection (closed at once: no request is sent)."""
    host, _, port = address.rpartition(":")
    end = time.monotonic() + 10
    while time.monotonic() < end:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {address}")


class Prometheus:
    def __init__(self, targets: list[str], rule_files: list[str] | None = None, scrape_interval: str = "1s"):
        if shutil.which("prometheus") is None:
            raise RuntimeError("prometheus is not installed: run `make setup` (Debian package prometheus)")
        self.dir = Path(tempfile.mkdtemp(prefix="cl-prom-"))
        self.port = free_port()
        cfg = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
            "scrape_configs": [{"job_name": "calico-lens",  # node: as the chart's PodMonitor labels it
                                "static_configs": [{"targets": targets, "labels": {"node": "test-node"}}]}],
        }
        if rule_files:
            cfg["rule_files"] = rule_files
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(cfg))
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={self.dir / 'prometheus.yml'}", f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.url = f"http://127.0.0.1:{self.port}"
        wait_http(self.url + "/-/ready")

    def query(self, promql: str) -> list[dict]:
        r = requests.get(self.url + "/api/v1/query", params={"query": promql}, timeout=10)
        r.raise_for_status()
        return r.json()["data"]["result"]

    def value(self, promql: str) -> float | None:
        res = self.query(promql)
        return float(res[0]["value"][1]) if res else None

    def wait_value(self, promql: str, want: float, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        got = None
        while time.monotonic() < end:
            got = self.value(promql)
            if got == want:
                return
            time.sleep(0.25)
        raise AssertionError(f"{promql}: got {got}, want {want}")

    def close(self) -> None:
        stop(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Prometheus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
