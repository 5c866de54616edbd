"""The demo's alerting path: a real Alertmanager with the example routing (``alerts/alertmanager.yaml``)
whose webhook receivers point at a small HTTP receiver that prints each notification, so a
newcomer sees an alert travel rule → Prometheus → Alertmanager → receiver in the terminal."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import yaml

# The example configuration's webhook receivers all post to this address (placeholder for a real one).
EXAMPLE_WEBHOOK = "127.0.0.1:9099"
MAX_BODY = 1 << 20  # Alertmanager batches a group's alerts in one post; a demo group is far smaller


class WebhookReceiver:
    """Receives Alertmanager webhook posts on 127.0.0.1 and hands (path, payload) to ``on_post``."""

    def __init__(self, on_post: Callable[[str, dict], None]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                if not 0 < size <= MAX_BODY:
                    self.send_error(413 if size else 411)
                    return
                try:
                    payload = json.loads(self.rfile.read(size))
                except ValueError:
                    self.send_error(400, "not JSON")
                    return
                on_post(self.path, payload)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:  # the demo prints notifications, not requests
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port: int = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, name="webhook", daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def example_config(path: Path, webhook_port: int, group_wait: str | None = None) -> dict:
    """The example Alertmanager config with its webhooks sent to ``webhook_port`` (and, for a demo or
    a test, a shorter ``group_wait`` so the first notification comes in seconds, not half a minute)."""
    cfg = yaml.safe_load(path.read_text())
    for receiver in cfg.get("receivers", []):
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = hook["url"].replace(EXAMPLE_WEBHOOK, f"127.0.0.1:{webhook_port}")
    if group_wait:
        cfg["route"]["group_wait"] = group_wait
        for sub in cfg["route"].get("routes", []):
            sub["group_wait"] = group_wait
    return cfg


def alertmanager_binary() -> str | None:
    """Debian's package names the binary prometheus-alertmanager; upstream releases alertmanager."""
    return shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


def start_alertmanager(binary: str, config: dict, workdir: Path, port: int) -> subprocess.Popen:
    (workdir / "alertmanager.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    # --cluster.listen-address= turns gossip off: one local instance, no port 9094 to collide on.
    return subprocess.Popen([binary, f"--config.file={workdir / 'alertmanager.yml'}",
                             f"--storage.path={workdir / 'alertmanager-data'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
                             "--log.level=warn"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def describe(path: str, payload: dict) -> list[str]:
    """One line per alert in a webhook post: receiver, status, name, severity and description."""
    receiver = urlsplit(path).path.strip("/") or payload.get("receiver", "?")
    lines = []
    for alert in payload.get("alerts", []):
        labels, notes = alert.get("labels", {}), alert.get("annotations", {})
        text = notes.get("description") or notes.get("summary") or ""
        lines.append(f"  alert → {receiver}: {alert.get('status', '?')} {labels.get('alertname', '?')} "
                     f"[{labels.get('severity', '-')}] {' '.join(text.split())}")
    return lines
