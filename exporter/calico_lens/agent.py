"""The node agent: sources → pipeline → tables, metadata from Kubernetes (or a snapshot), HTTP."""

from __future__ import annotations

import gc
import json
import logging
import os
import queue
import signal
import threading
import time

import yaml
from prometheus_client.registry import CollectorRegistry

from calico_lens.config import Config, ConfigError
from calico_lens.kube import snapyaml
from calico_lens.kube.metadata import MetadataStore
from calico_lens.metrics.collector import LensCollector, render, rtt_families
from calico_lens.metrics.tables import Tables
from calico_lens.pipeline import FlowPipeline, RecordBatch
from calico_lens.records import SeenFileError
from calico_lens.retry import jitter
from calico_lens.server import self_metrics, serve_config
from calico_lens.sources import registry
from calico_lens.sources.base import Source
from calico_lens.sources.forward import ForwardSettings, ForwardSource
from calico_lens.sources.http_ingest import HttpIngestSource
from calico_lens.sources.kmsg import KmsgSource
from calico_lens.sources.stream import StdinSource, TracePipeSource
from calico_lens.sources.tail import FileTail

log = logging.getLogger(__name__)
SLOW_YAML_SECONDS = 2.0  # past this, a YAML read hints at JSON (e.g. PyYAML alone, without the C reader: ~15x slower)
QUEUE_BATCHES = 64  # bounded hand-over: a slow pipeline slows the readers, never grows memory


def _snapshot_docs(path: str) -> list:
    """The documents of a snapshot file: JSON (``kubectl get -o json``, read by the stdlib: 10,000 pods
    in a fraction of a second) or YAML (``-o yaml``, read by libyaml into Python objects in C where
    that is built; a JSON file is YAML too, so the answer is the same)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise ConfigError(f"snapshot: cannot read {path}: {e.strerror}") from None
    if data.lstrip()[:1] in (b"{", b"["):
        try:
            return [json.loads(data)]
        except (ValueError, RecursionError) as e:
            raise ConfigError(f"snapshot: {path} is not valid JSON: {e}") from None
    t0 = time.monotonic()
    try:
        docs = snapyaml.load_all(data)
    except (yaml.YAMLError, ValueError, RecursionError) as e:  # ValueError: e.g. a date with month 13
        raise ConfigError(f"snapshot: {path} is not valid YAML: {e}") from None
    took = time.monotonic() - t0
    if took > SLOW_YAML_SECONDS:
        log.warning("snapshot: reading %s as YAML took %.1f s; the same objects as JSON "
                    "(kubectl get ... -A -o json) load in a small fraction of that", path, took)
    return docs


def load_snapshot(store: MetadataStore, path: str) -> int:
    """Load a snapshot file into ``store`` and build its index; the number of objects loaded."""
    # Reading and indexing make millions of objects and no cycles: a collection meanwhile walks them
    # all, again and again (with the collector on, 10,000 pods load and index in about twice the time).
    paused = gc.isenabled()
    gc.disable()
    try:
        n = _load_snapshot(store, path)
        store.index()
        return n
    finally:
        if paused:
            gc.enable()


def _load_snapshot(store: MetadataStore, path: str) -> int:
    docs = [d for d in _snapshot_docs(path) if d]
    if not docs or not all(isinstance(d, dict) for d in docs):
        raise ConfigError(f"snapshot: {path} must hold a Kubernetes List (kubectl get ... -o yaml)")
    items: list[dict] = []
    for d in docs:
        listed = (d.get("items") or []) if str(d.get("kind", "")).endswith("List") else [d]
        if not isinstance(listed, list):
            raise ConfigError(f"snapshot: {path}: items must be a list of objects, not {type(listed).__name__}")
        items.extend(listed)
    for i, obj in enumerate(items):
        if not isinstance(obj, dict) or not isinstance(obj.get("kind"), str) \
                or not isinstance(obj.get("metadata"), dict):
            raise ConfigError(f"snapshot: {path}: item {i} is not a Kubernetes object (a mapping with kind and "
                              f"metadata): {str(obj)[:80]}")
    try:
        return store.load_list({"kind": "List", "items": items})
    except (TypeError, AttributeError, ValueError, KeyError) as e:  # a field of the wrong shape deep inside
        raise ConfigError(f"snapshot: {path}: an object has a field of the wrong type ({e}); "
                          "use the output of kubectl get ... -A -o yaml") from None


class _Done(threading.Event):
    ok = False


class Agent:
    def __init__(self, cfg: Config, store: MetadataStore | None = None):
        self.cfg = cfg
        self.store = store or MetadataStore()
        self.tables = Tables()  # written by the stages and collectors, read by the exposition
        self.pipeline = FlowPipeline(cfg, self.store, self.tables)
        self.watcher = None
        p = self.pipeline
        self.specs = [registry.parse(s) for s in cfg.sources]
        self.felix = [s for s in self.specs if s.kind == "felix"]
        if self.felix:
            p.enable_records()
        # Felix's records name both ends: an agent with only the felix source needs no Kubernetes API.
        self.needs_kube = bool(cfg.tcp_stats or cfg.conntrack or any(s.kind != "felix" for s in self.specs))
        warned: set[tuple[str, str]] = set()

        def err(source: str):
            def report(reason: str, n: int = 1) -> None:
                p.source_error(source, reason, n)  # counted every time, logged the first time
                if (source, reason) not in warned:
                    warned.add((source, reason))
                    log.warning("%s: not available (%s); counted in calico_lens_source_errors_total", source, reason)
            return report

        self.podnet = self.conntrack = None
        if cfg.tcp_stats:
            from calico_lens.collectors.podnet import PodNetCollector

            self.podnet = PodNetCollector(self.store, cfg.max_series, cfg.series_ttl, cfg.proc_root,
                                          error=err("podnet"))
            self.tables.add(*self.podnet.tables.values())
            self.tables.add_families(lambda: rtt_families(self.podnet))
        if cfg.conntrack:
            from calico_lens.collectors.conntrack import ConntrackCollector

            # Felix's records carry bytes and packets: conntrack then counts only unreplied connections,
            # so the same bytes are never in calico_lens_flow_bytes_total twice.
            self.conntrack = ConntrackCollector(self.store, p.enricher.side_of, cfg.max_series, cfg.series_ttl,
                                                cfg.conntrack_netns, cfg.unreplied_after, error=err("conntrack"),
                                                volume=not self.felix)
            self.tables.add(*self.conntrack.tables)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(LensCollector(self.tables, self.store, lambda: self.watcher))
        self.refusals = self_metrics(self.registry)
        # (source, text or records, lines ignored before parsing, done event or None)
        self._queue: queue.Queue[tuple[str, str | RecordBatch, int, _Done | None] | None] = queue.Queue(QUEUE_BATCHES)
        self._sources: list[Source] = []
        self._failed: dict[str, str] = {}  # source → why it is not running (until a retry takes)
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self.httpd = None
        self._seen_files: list[str] = []  # felix: what was counted, kept across a restart (felix_keep_seen)
        self._seen_lock = threading.Lock()  # the periodic save and the last one

    def exposition(self, openmetrics: bool = False) -> bytes:
        return render(self.registry, self.tables, openmetrics)

    def ready(self) -> tuple[bool, str]:
        failed = list(self._failed.values())
        if failed:
            return False, failed[0]
        for src in self._sources:
            note = getattr(src, "not_ready", None)
            reason = note() if note else ""
            if reason:
                return False, reason
        if self.watcher is None:
            if self.cfg.snapshot:
                return True, "ready (static snapshot)"
            return True, "ready (no Kubernetes metadata needed)" if not self.needs_kube else \
                "ready (no Kubernetes metadata)"
        if self.watcher.required_synced():
            return True, "ready"
        missing = [r.key for r in self.watcher.resources if not r.optional and r.key not in self.store.synced]
        return False, "waiting for the first Kubernetes sync of: " + ", ".join(missing)

    def _sink(self, source: str, text: str) -> None:
        self._queue.put((source, text, 0, None))

    def _deliver_wait(self, source: str, text: str, ignored: int) -> None:
        """Hand a batch over and return once it is counted (the Forward ack depends on it)."""
        done = _Done()
        self._queue.put((source, text, ignored, done))
        if not done.wait(60) or not done.ok:
            raise OSError(f"batch from {source} was not counted; not acknowledging it")

    def _error(self, source: str, reason: str, n: int) -> None:
        self.pipeline.source_error(source, reason, n)
        if reason == "line_too_long":
            self.pipeline.count_input(source, "malformed", n)

    def make_source(self, spec: str | registry.SourceSpec) -> Source:
        """One builder per registry kind (the grammar lives in sources/registry.py)."""
        s = spec if isinstance(spec, registry.SourceSpec) else registry.parse(spec)
        build = getattr(self, f"_build_{s.kind}", None)
        if build is None:
            raise ConfigError(f"sources: {s.text!r} has no builder in the agent")
        return build(s)

    def _build_kmsg(self, s: registry.SourceSpec) -> Source:
        return KmsgSource(self._sink, self._error)

    def _build_stdin(self, s: registry.SourceSpec) -> Source:
        return StdinSource(self._sink, self._error)

    def _build_trace(self, s: registry.SourceSpec) -> Source:
        return TracePipeSource(self._sink, self._error, s.arg)

    def _build_file(self, s: registry.SourceSpec) -> Source:
        return FileTail(s.arg, self._sink, self._error)

    def _receiver(self, s: registry.SourceSpec, receiver) -> Source:
        c = self.cfg
        settings = ForwardSettings(
            address=s.arg, shared_key=c.forward_shared_key, users=c.forward_users,
            tls_cert=c.forward_tls_cert, tls_key=c.forward_tls_key, max_frame_bytes=c.forward_max_frame_bytes,
            max_connections=c.forward_max_connections, max_buffered_bytes=c.forward_max_buffered_bytes,
            idle_timeout=c.forward_idle_timeout,
            frame_timeout=c.forward_frame_timeout)
        return receiver(settings, self._deliver_wait, self._error,
                        lambda reason: self.pipeline.source_error(s.kind, reason))

    def _build_forward(self, s: registry.SourceSpec) -> Source:
        return self._receiver(s, ForwardSource)

    def _build_http(self, s: registry.SourceSpec) -> Source:
        return self._receiver(s, HttpIngestSource)

    def _build_felix(self, s: registry.SourceSpec) -> Source:
        from calico_lens.sources.felix import FelixSettings, FelixSource, seen_file

        c = self.cfg
        settings = FelixSettings(path=s.arg.removeprefix("unix:"), max_message_bytes=c.felix_max_message_bytes,
                                 max_streams=c.felix_max_streams, idle_timeout=c.felix_idle_timeout,
                                 absent_after=c.felix_absent_after)
        src = FelixSource(settings, self.pipeline.accept, self._error)
        self.tables.add_families(src.families)
        if c.felix_keep_seen:
            self._load_seen(seen_file(settings.path))
        return src

    def _load_seen(self, path: str) -> None:
        """Before any record: the flows the agent before us counted, which Felix resends after every
        reconnect. The file is used once (a later crash must not find it stale)."""
        self._seen_files.append(path)
        try:
            n = self.pipeline.enable_records().load_seen(path)
        except FileNotFoundError:
            pass  # the first start on this node (or since a reboot), or felix_keep_seen was off
        except (OSError, SeenFileError) as e:
            self.pipeline.source_error("felix", "seen_file_unreadable")
            log.warning("felix: not using %s (%s); resends after this restart may count twice", path, e)
        else:
            log.info("felix: %d flows counted before this restart are known: their resends are not counted again", n)
            try:
                os.unlink(path)
            except OSError:
                pass

    def _save_seen(self, last: bool = True) -> None:
        stage = self.pipeline.records
        with self._seen_lock:
            for path in self._seen_files:
                if stage is None or not os.path.isdir(os.path.dirname(path) or "."):
                    continue
                try:
                    n = stage.save_seen(path)
                    log.log(logging.INFO if last else logging.DEBUG, "felix: %d counted flows kept in %s", n, path)
                except OSError as e:
                    log.warning("felix: cannot keep the counted flows in %s: %s; resends may count twice", path, e)

    def _keep_seen(self) -> None:
        """Also while running: after a crash (no clean stop) only what was counted since the last
        save counts twice."""
        while not self._stop.wait(self.cfg.felix_seen_save_interval):
            self._save_seen(last=False)

    def start(self, kube: bool = True) -> None:
        if self.cfg.snapshot:
            n = load_snapshot(self.store, self.cfg.snapshot)
            log.info("loaded %d Kubernetes objects from %s", n, self.cfg.snapshot)
        elif kube and self.needs_kube:
            from calico_lens.kube.watch import KubeWatcher, api_client

            self.watcher = KubeWatcher(self.store, api_client(self.cfg.kubeconfig))
            self.watcher.start()
        self.httpd = serve_config(self.cfg, self.exposition, self.ready, self.refusals)
        self._spawn(self._work, "pipeline")
        self._spawn(self._housekeeping, "housekeeping")
        if self.podnet or self.conntrack:
            self._spawn(self._kernel_rounds, "kernel-stats")
        for spec in self.specs:
            src = self.make_source(spec)
            self._sources.append(src)
            self._spawn(self._run_source(src), f"source-{spec.text}")
        if self._seen_files:  # read by the felix builder above
            self._spawn(self._keep_seen, "keep-seen")
        log.info("serving %s/metrics; sources: %s", self.cfg.metrics_address, ", ".join(self.cfg.sources) or "none")

    def _spawn(self, target, name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def _run_source(self, src: Source):
        """Run a source; when it fails (a device it cannot open, a socket it cannot bind), the agent is
        not ready with the reason, counts it, and tries again with a jittered backoff."""
        def run() -> None:
            backoff = 1.0
            while not self._stop.is_set():
                started = time.monotonic()
                self._failed.pop(src.name, None)
                try:
                    src.run()
                    return  # stopped, or its input ended (stdin)
                except Exception as e:  # a failing source is reported, the others go on
                    self.pipeline.source_error(src.name, "failed", 1)
                    why = str(e)
                    self._failed[src.name] = why if why.startswith(src.name + ":") else f"{src.name}: {why}"
                    log.error("source %s stopped: %s; trying again in %.0f s", src.name, e, backoff)
                if time.monotonic() - started > 60:
                    backoff = 1.0  # it ran for a while: start the backoff over
                if self._stop.wait(jitter(backoff)):
                    return
                backoff = min(backoff * 2, 60.0)
        return run

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            source, text, ignored, done = item
            try:
                self.pipeline.accept(source, text)
                self.pipeline.count_input(source, "ignored", ignored)
                if done is not None:
                    done.ok = True
            except Exception:  # never lose the thread; the batch is reported, not silently dropped
                log.exception("pipeline failed on a batch from %s", source)
                self.pipeline.source_error(source, "pipeline_error", 1)
            finally:
                if done is not None:
                    done.set()

    def _housekeeping(self) -> None:
        interval = min(60.0, max(1.0, self.cfg.series_ttl / 10)) if self.cfg.series_ttl else 60.0
        while not self._stop.wait(interval):
            self.tables.expire()

    def _kernel_rounds(self) -> None:
        """Per-pod counters, RTT and conntrack, every tcp_interval seconds."""
        while True:
            t0 = time.monotonic()
            for name, c in (("podnet", self.podnet), ("conntrack", self.conntrack)):
                if c is None:
                    continue
                try:
                    c.collect()
                except Exception:
                    log.exception("%s: collection round failed", name)
                    self.pipeline.source_error(name, "round_failed")
            if self._stop.wait(max(0.1, self.cfg.tcp_interval - (time.monotonic() - t0))):
                return

    def stop(self) -> None:
        self._stop.set()
        for s in self._sources:
            s.stop()
        self._save_seen()  # after the sources: no record comes in any more
        if self.watcher:
            self.watcher.stop()
        self._queue.put(None)
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()

    def run_forever(self) -> int:
        done = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: done.set())
        done.wait()
        log.info("stopping")
        self.stop()
        return 0
