"""The Kubernetes layer: the real `kubernetes` client against an in-test API server."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from calico_lens.kube.metadata import MetadataStore
from calico_lens.kube.watch import KubeWatcher
from kubernetes import client

from tests.kubeapi import FakeKubeAPI


def pod(name: str, ip: str, ns: str = "shop", workload: str = "web") -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns,
                         "ownerReferences": [{"kind": "StatefulSet", "name": workload, "controller": True}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.fixture
def api():
    with FakeKubeAPI() as server:
        yield server


def start(server: FakeKubeAPI, store: MetadataStore, **kw) -> KubeWatcher:
    cfg = client.Configuration(host=server.url)
    w = KubeWatcher(store, client.ApiClient(cfg), watch_timeout=kw.pop("watch_timeout", 5),
                    max_backoff=kw.pop("max_backoff", 0.2),
                    absent_retry=kw.pop("absent_retry", 0.5), **kw)
    w.start()
    return w


def test_list_then_watch_adds_updates_deletes(api: FakeKubeAPI) -> None:
    api.put("pods", pod("web-0", "10.0.0.1"))
    api.put("calico_globalnetworksets", {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkSet",
                                         "metadata": {"name": "partners"}, "spec": {"nets": ["203.0.113.0/24"]}})
    store = MetadataStore()
    deleted: list[tuple[str, str]] = []
    store.pod_deleted.append(lambda ns, name: deleted.append((ns, name)))
    w = start(api, store)
    try:
        wait_for(lambda: w.required_synced() and "calico_globalnetworksets" in store.synced)
        assert store.index().lookup("10.0.0.1").workload == "web"
        assert store.index().lookup("203.0.113.9").workload == "partners"
        api.put("pods", pod("web-1", "10.0.0.2"))
        wait_for(lambda: store.index().lookup("10.0.0.2").kind == "pod")
        api.put("pods", pod("web-1", "10.0.0.3"))  # MODIFIED: the IP moved
        wait_for(lambda: store.index().lookup("10.0.0.3").kind == "pod")
        assert store.index().lookup("10.0.0.2").kind == "private"
        api.delete("pods", "shop", "web-0")
        wait_for(lambda: store.index().lookup("10.0.0.1").kind == "private")
        assert deleted == [("shop", "web-0")]
        assert w.restarts["pods"] == 0
    finally:
        w.stop()


def test_410_gone_relists_and_catches_up(api: FakeKubeAPI) -> None:
    api.put("pods", pod("web-0", "10.0.0.1"))
    store = MetadataStore()
    w = start(api, store, watch_timeout=1)
    try:
        wait_for(w.required_synced)
        lists_before = api.count("LIST /api/v1/pods")
        # While the watch is between rounds, the log is compacted and objects change.
        api.compact()
        api.put("pods", pod("web-2", "10.0.0.7"))
        api.delete("pods", "shop", "web-0")
        api.compact()
        wait_for(lambda: w.restarts["pods"] >= 1)
        wait_for(lambda: store.index().lookup("10.0.0.7").kind == "pod")
        assert store.index().lookup("10.0.0.1").kind == "private"
        assert api.count("LIST /api/v1/pods") > lists_before
    finally:
        w.stop()


def test_dropped_watch_is_restarted_without_losing_events(api: FakeKubeAPI) -> None:
    store = MetadataStore()
    w = start(api, store, watch_timeout=30)
    try:
        wait_for(w.required_synced)
        wait_for(lambda: api.open_watches["pods"] >= 1)  # a watch opened after the drop would not be dropped
        api.drop_watches()
        wait_for(lambda: w.restarts["pods"] >= 1)
        api.put("pods", pod("late", "10.0.0.9"))
        wait_for(lambda: store.index().lookup("10.0.0.9").kind == "pod")
    finally:
        w.stop()


def test_calico_group_absent_does_not_block(tmp_path) -> None:
    with FakeKubeAPI(calico_group=None) as api:
        api.put("pods", pod("web-0", "10.0.0.1"))
        store = MetadataStore()
        w = start(api, store)
        try:
            wait_for(w.required_synced)
            wait_for(lambda: "calico_networksets" in w.unavailable)
            assert store.index().lookup("10.0.0.1").kind == "pod"
            assert "calico_networksets" not in store.synced
            # Both the API-server group and the CRD group were tried.
            assert api.count("LIST /apis/projectcalico.org/v3/networksets") >= 1
            assert api.count("LIST /apis/crd.projectcalico.org/v1/networksets") >= 1
        finally:
            w.stop()


def test_crd_group_fallback() -> None:
    with FakeKubeAPI(calico_group="crd.projectcalico.org/v1") as api:
        api.put("calico_networksets", {"apiVersion": "crd.projectcalico.org/v1", "kind": "NetworkSet",
                                       "metadata": {"name": "db-backups", "namespace": "ops"},
                                       "spec": {"nets": ["198.51.100.0/24"]}})
        store = MetadataStore()
        w = start(api, store)
        try:
            wait_for(lambda: "calico_networksets" in store.synced)
            assert store.index().lookup("198.51.100.4").workload == "db-backups"
        finally:
            w.stop()


def test_forbidden_resource_is_reported(api: FakeKubeAPI) -> None:
    api.forbidden.add("calico_globalnetworkpolicies")
    store = MetadataStore()
    w = start(api, store)
    try:
        wait_for(w.required_synced)
        wait_for(lambda: w.unavailable.get("calico_globalnetworkpolicies", "").startswith("access denied"))
        assert w.restarts["calico_globalnetworkpolicies"] >= 1
    finally:
        w.stop()


def test_a_list_that_never_answers_is_cut_off_and_retried(api: FakeKubeAPI) -> None:
    api.hang_lists = True
    store = MetadataStore()
    w = start(api, store, request_timeout=0.5)
    try:
        wait_for(lambda: w.restarts["pods"] >= 2)  # not stuck on the first list
        assert not w.required_synced() and "pods" in w.unavailable
        api.hang_lists = False
        api.drop_watches()  # ends the hanging requests
        api.put("pods", pod("web-0", "10.0.0.1"))
        wait_for(lambda: store.index().lookup("10.0.0.1").kind == "pod")
        assert time.time() - w.last_sync["pods"] < 5
    finally:
        w.stop()


def test_a_silent_watch_is_cut_off_and_the_cache_catches_up(api: FakeKubeAPI) -> None:
    """A watch that sends its headers and then nothing used to leave the metadata stale forever while
    /readyz said ready; now the read deadline (watch timeout + grace) restarts it."""
    store = MetadataStore()
    w = start(api, store, watch_timeout=1, read_grace=0.5)
    try:
        wait_for(lambda: w.required_synced())
        api.silent_watches = True
        api.drop_watches()  # the open watches end; the new ones are silent
        before = w.restarts["pods"]
        api.put("pods", pod("web-1", "10.0.0.2"))  # only a relist after the cut-off can see it
        wait_for(lambda: store.index().lookup("10.0.0.2").kind == "pod", timeout=15)
        assert w.restarts["pods"] > before
    finally:
        api.silent_watches = False
        api.drop_watches()
        w.stop()


def test_410_every_time_backs_off_instead_of_hammering(api: FakeKubeAPI) -> None:
    store = MetadataStore()
    w = start(api, store, watch_timeout=5, max_backoff=1.0)
    try:
        wait_for(lambda: w.required_synced())
        api.always_gone = True
        api.drop_watches()
        time.sleep(0.5)
        lists = api.count("LIST /api/v1/pods")
        time.sleep(3)
        # Each 410 relists; after the first they wait (jittered, doubling up to max_backoff, 1 s
        # here): one or two a second, not as fast as the server answers (~170/s from one agent).
        per_s = (api.count("LIST /api/v1/pods") - lists) / 3
        assert 0.3 <= per_s <= 4, per_s
    finally:
        api.always_gone = False
        w.stop()
