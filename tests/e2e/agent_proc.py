"""Start `calico-lens agent` as a subprocess, the way a node runs it."""

from __future__ import annotations

import os
import subprocess
import sys

import requests

from tests.helpers import stop
from tests.prom import free_port, wait_http


class AgentProcess:
    def __init__(self, *args: str, ready: bool = True, env: dict[str, str] | None = None, scheme: str = "http",
                 verify: str | bool = True):
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "calico_lens", "agent", "--metrics-address", self.address,
                                      *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env={**os.environ, **env} if env else None)
        self.url = f"{scheme}://{self.address}"
        self.verify = verify
        try:
            wait_http(self.url + ("/readyz" if ready else "/healthz"), verify=verify)
        except AssertionError:
            self.close()
            raise AssertionError("agent did not start: " + self.stderr()) from None

    def metrics(self) -> str:
        return requests.get(self.url + "/metrics", timeout=5, verify=self.verify).text

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return ""
        return self.proc.stderr.read().decode() if self.proc.stderr else ""

    def close(self) -> None:
        stop(self.proc)

    def __enter__(self) -> AgentProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
