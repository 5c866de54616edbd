"""List and watch the resources we enrich with, through the real ``kubernetes`` client.

One thread per resource: list (fresh state, marks the resource synced), then watch from the list's
resourceVersion with bookmarks. ``410 Gone`` → list again; other errors → back off and retry.
An absent API group (no Calico API server) falls back to the CRD group, else is retried slowly
and reported through ``calico_lens_kubernetes_synced``; it never blocks the other resources.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from calico_lens.config import ConfigError
from calico_lens.kube.metadata import MetadataStore
from calico_lens.kube.resources import CALICO_CRD_GROUP, CALICO_GROUP, RESOURCES, Resource
from calico_lens.retry import jitter

log = logging.getLogger(__name__)


def api_client(kubeconfig: str = "") -> client.ApiClient:
    """In-cluster config when running in a pod, else the kubeconfig file (``$KUBECONFIG`` or
    ``~/.kube/config``). Without either, a ConfigError that says what to give instead."""
    try:
        if kubeconfig:
            config.load_kube_config(config_file=kubeconfig)
            return client.ApiClient()
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
    except Exception as e:  # the client raises ConfigException, OSError, YAMLError, TypeError… for a bad file
        where = f"kubeconfig: {kubeconfig} cannot be used" if kubeconfig else \
            "no Kubernetes API: not in a pod and no kubeconfig ($KUBECONFIG, ~/.kube/config)"
        raise ConfigError(f"{where} ({e}); give --kubeconfig FILE, or --snapshot FILE "
                          "(kubectl get ... -A -o yaml) to run from static metadata") from None
    return client.ApiClient()


class KubeWatcher:
    def __init__(self, store: MetadataStore, api: client.ApiClient, resources: tuple[Resource, ...] = RESOURCES,
                 watch_timeout: int = 300, max_backoff: float = 30.0, absent_retry: float = 300.0,
                 request_timeout: float = 30.0, read_grace: float = 30.0):
        self.store = store
        self.api = api
        self.resources = resources
        self.watch_timeout = watch_timeout
        self.max_backoff = max_backoff
        self.absent_retry = absent_retry
        # Every call has a deadline: a list that never answers, or a watch that sends its headers
        # and then nothing, is cut off and retried instead of leaving the metadata stale forever.
        self.request_timeout = request_timeout
        self.read_grace = read_grace  # a watch may be silent this long past its own timeout
        self.restarts: dict[str, int] = {r.key: 0 for r in resources}
        self.last_sync: dict[str, float] = {}  # resource → wall time the cache was last known current
        self.unavailable: dict[str, str] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._core = client.CoreV1Api(api)
        self._net = client.NetworkingV1Api(api)
        self._custom = client.CustomObjectsApi(api)

    def start(self) -> None:
        for r in self.resources:
            t = threading.Thread(target=self._run, args=(r,), name=f"watch-{r.key}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()

    def required_synced(self) -> bool:
        return all(r.key in self.store.synced for r in self.resources if not r.optional)

    # --- one resource --------------------------------------------------------------------------
    def _func(self, r: Resource, group: str) -> tuple[Callable[..., Any], dict[str, Any]]:
        if r.group == "":
            fn = {
                "pods": self._core.list_pod_for_all_namespaces,
                "services": self._core.list_service_for_all_namespaces,
                "namespaces": self._core.list_namespace,
                "nodes": self._core.list_node,
                "serviceaccounts": self._core.list_service_account_for_all_namespaces,
            }[r.key]
            return fn, {}
        if r.group == "networking.k8s.io":
            return self._net.list_network_policy_for_all_namespaces, {}
        version = r.version if group == CALICO_GROUP else "v1"
        return self._custom.list_cluster_custom_object, {"group": group, "version": version, "plural": r.plural}

    def _run(self, r: Resource) -> None:
        backoff = 1.0
        gone = 0  # 410s in a row: the first relists at once, the next ones back off
        groups = [CALICO_GROUP, CALICO_CRD_GROUP] if r.group == CALICO_GROUP else [r.group]
        gi = 0
        while not self._stop.is_set():
            fn, kw = self._func(r, groups[gi])
            try:
                rv = self._list(r, fn, kw)
                self.unavailable.pop(r.key, None)
                backoff = 1.0
                while not self._stop.is_set():
                    rv = self._watch(r, fn, kw, rv)
                    gone = 0
            except ApiException as e:
                if e.status == 410:
                    self.restarts[r.key] += 1
                    gone += 1
                    log.info("watch %s: resourceVersion too old (410 Gone), listing again", r.key)
                    if gone > 1:  # a server that answers 410 every time is not hammered with lists
                        self._stop.wait(jitter(min(0.5 * 2 ** (gone - 2), self.max_backoff)))
                    continue
                if e.status == 404 and r.optional:
                    if gi + 1 < len(groups):
                        gi += 1  # try Calico's CRD group
                        continue
                    gi = 0
                    self.unavailable[r.key] = "API group not served"
                    log.info("%s: API group not served; Calico enrichment for it is off, retrying later", r.key)
                    self._stop.wait(self.absent_retry)
                    continue
                self.restarts[r.key] += 1
                reason = "access denied (check RBAC)" if e.status in (401, 403) else f"HTTP {e.status}"
                self.unavailable[r.key] = reason
                log.warning("watch %s failed: %s; retrying in %.0fs", r.key, reason, backoff)
            except Exception as e:  # network errors, dropped connections, bad JSON
                self.restarts[r.key] += 1
                self.unavailable[r.key] = type(e).__name__
                log.warning("watch %s failed: %s; retrying in %.0fs", r.key, e, backoff)
            self._stop.wait(jitter(backoff))
            backoff = min(backoff * 2, self.max_backoff)

    def _list(self, r: Resource, fn: Callable[..., Any], kw: dict[str, Any]) -> str:
        resp = fn(**kw, _preload_content=False, _request_timeout=(5, self.request_timeout))
        doc = json.loads(resp.data)
        items = doc.get("items") or []
        self.store.replace(r.key, items)
        self.last_sync[r.key] = time.time()
        return str((doc.get("metadata") or {}).get("resourceVersion", ""))

    def _watch(self, r: Resource, fn: Callable[..., Any], kw: dict[str, Any], rv: str) -> str:
        def raw(**kwargs: Any) -> Any:
            # No docstring, so Watch finds no model type and hands us plain dicts: one object
            # that does not fit the client's models must not break the watch.
            return fn(**kwargs)

        w = watch.Watch()
        started = time.monotonic()
        for ev in w.stream(raw, **kw, resource_version=rv, timeout_seconds=self.watch_timeout,
                           allow_watch_bookmarks=True,
                           _request_timeout=(5, self.watch_timeout + self.read_grace)):
            if self._stop.is_set():
                w.stop()
                break
            obj = ev.get("raw_object") or {}
            rv = str((obj.get("metadata") or {}).get("resourceVersion", rv))
            if ev.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                self.store.apply(r.key, ev["type"], obj)
            self.last_sync[r.key] = time.time()  # an event or a bookmark: current up to here
        else:
            self.last_sync[r.key] = time.time()  # the watch ended on time: nothing was missed
        if not self._stop.is_set() and time.monotonic() - started < self.watch_timeout * 0.9:
            self.restarts[r.key] += 1  # the server dropped the watch early
            self._stop.wait(0.2)
        return rv
