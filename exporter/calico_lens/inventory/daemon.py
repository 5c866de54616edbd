"""``calico-lens inventory``: the cluster-wide replica that computes the policy board and posture.

It watches the policy model's resources, recomputes the model when they change (at most every
``interval`` seconds: a burst of changes costs one computation) and serves the result.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from calico_lens import __version__
from calico_lens.agent import load_snapshot
from calico_lens.config import Config
from calico_lens.inventory.metrics import families
from calico_lens.inventory.model import Model
from calico_lens.kube.metadata import MetadataStore
from calico_lens.kube.resources import INVENTORY_RESOURCES
from calico_lens.metrics import names
from calico_lens.metrics.collector import exposition, kube_families
from calico_lens.server import self_metrics, serve_config

log = logging.getLogger(__name__)


class Inventory(Collector):
    def __init__(self, cfg: Config, interval: float = 5.0):
        self.cfg = cfg
        self.interval = interval
        self.store = MetadataStore(INVENTORY_RESOURCES)
        self.watcher = None
        self._families: list[Metric] = []
        self._gen = -1
        self.computed = threading.Event()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self.refusals = self_metrics(self.registry)
        self._stop = threading.Event()

    def recompute(self) -> None:
        gen = self.store.generation
        t0 = time.perf_counter()
        model = Model(self.store.all_objects())
        self._families = families(model)
        self._gen = gen
        self.computed.set()
        log.info("inventory: %d pods, %d policies, score %.1f (%.0f ms)", len(model.pods), len(model.policies),
                 model.score(), (time.perf_counter() - t0) * 1e3)

    def collect(self) -> Iterator[Metric]:
        yield from self._families
        yield from kube_families(self.store, self.watcher)
        info = GaugeMetricFamily(names.BUILD_INFO, "calico-lens build information.", labels=("version",))
        info.add_metric((__version__,), 1)
        yield info

    def exposition(self, openmetrics: bool = False) -> bytes:
        return exposition(self.registry, openmetrics)

    def ready(self) -> tuple[bool, str]:
        if not self.computed.is_set():
            missing = [r.key for r in INVENTORY_RESOURCES if not r.optional and r.key not in self.store.synced]
            return False, "waiting for the first Kubernetes sync of: " + ", ".join(missing)
        return True, "ready"

    def load(self) -> None:
        if self.cfg.snapshot:
            load_snapshot(self.store, self.cfg.snapshot)
            self.recompute()

    def run(self) -> int:
        self.load()
        if not self.cfg.snapshot:
            from calico_lens.kube.watch import KubeWatcher, api_client

            self.watcher = KubeWatcher(self.store, api_client(self.cfg.kubeconfig), INVENTORY_RESOURCES)
            self.watcher.start()
        httpd = serve_config(self.cfg, self.exposition, self.ready, self.refusals)
        log.info("inventory: serving %s/metrics", self.cfg.metrics_address)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self._stop.set())
        while not self._stop.wait(self.interval if self.computed.is_set() else 0.5):
            synced = self.watcher is None or self.watcher.required_synced()
            if synced and self.store.generation != self._gen:
                try:
                    self.recompute()
                except Exception:  # a model that cannot be built must not take the daemon down
                    log.exception("inventory: computing the model failed; keeping the last result")
        if self.watcher:
            self.watcher.stop()
        httpd.shutdown()
        return 0
