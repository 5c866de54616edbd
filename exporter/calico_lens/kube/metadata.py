"""The Kubernetes metadata cache: objects by resource, an IP index and a policy index built from it.

Writers (the watcher or the snapshot loader) call ``apply``; readers ask ``index()`` and
``policies()``, which are rebuilt lazily once per change generation, not once per line.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable, Iterable

from calico_lens.kube import endpoints as ep
from calico_lens.kube.endpoints import Endpoint
from calico_lens.kube.policies import PolicyIndex
from calico_lens.kube.resources import RESOURCES, Resource, resource_for

ObjKey = tuple[str, str]  # (namespace, name)


class IPIndex:
    """IP → endpoint. Exact matches for pods, services and nodes; longest prefix for network sets."""

    def __init__(self, exact: dict[str, Endpoint], nets: list[tuple[ipaddress._BaseNetwork, Endpoint]]):
        self._exact = exact
        # Longest prefix first, so the first containing network wins.
        self._nets = sorted(nets, key=lambda n: n[0].prefixlen, reverse=True)
        self._v4 = [(int(n.network_address), int(n.netmask), e) for n, e in self._nets if n.version == 4]

    def known_v4(self) -> tuple[list[int], list[tuple[int, int]]]:
        """IPv4 addresses and networks with an endpoint of their own: any other address is external."""
        return [v for v in map(ep.ipv4_int, self._exact) if v is not None], [(n, m) for n, m, _ in self._v4]

    def lookup(self, ip: str, v4: int | None = None) -> Endpoint:
        """The endpoint of a canonical IP (``normalise_ip``); ``v4``: its value, when the caller has it."""
        hit = self._exact.get(ip)
        if hit is not None:
            return hit
        if v4 is None:
            v4 = ep.ipv4_int(ip)
        if v4 is not None:  # integers, not ipaddress objects: a scan brings a new address per flow
            for net, mask, endpoint in self._v4:
                if v4 & mask == net:
                    return endpoint
            return ep.external(ip, v4)
        addr = ipaddress.ip_address(ip)
        for net, endpoint in self._nets:
            if addr.version == net.version and addr in net:
                return endpoint
        return ep.external(ip)


class MetadataStore:
    def __init__(self, resources: tuple[Resource, ...] = RESOURCES) -> None:
        self.resources = resources
        self._lock = threading.Lock()
        self._objects: dict[str, dict[ObjKey, dict]] = {r.key: {} for r in resources}
        self.generation = 0
        self._built_gen = -1
        self._index = IPIndex({}, [])
        self._policies = PolicyIndex([])
        self.synced: set[str] = set()
        self.pod_deleted: list[Callable[[str, str], None]] = []  # (namespace, pod name)

    # --- writers -----------------------------------------------------------------------------
    def apply(self, resource: str, event: str, obj: dict) -> None:
        """event: ADDED | MODIFIED | DELETED."""
        meta = obj.get("metadata") or {}
        key = (meta.get("namespace", "") or "", meta.get("name", "") or "")
        with self._lock:
            table = self._objects[resource]
            if event == "DELETED":
                if table.pop(key, None) is None:
                    return
            else:
                table[key] = obj
            self.generation += 1
        if event == "DELETED" and resource == "pods":
            for cb in self.pod_deleted:
                cb(*key)

    def replace(self, resource: str, objs: Iterable[dict]) -> None:
        """Replace one resource's objects wholesale (a fresh list after a resync)."""
        new = {}
        for obj in objs:
            meta = obj.get("metadata") or {}
            new[(meta.get("namespace", "") or "", meta.get("name", "") or "")] = obj
        with self._lock:
            old = self._objects[resource]
            self._objects[resource] = new
            self.synced.add(resource)
            self.generation += 1
        if resource == "pods":
            for ns, name in set(old) - set(new):
                for cb in self.pod_deleted:
                    cb(ns, name)

    def load_list(self, doc: dict) -> int:
        """Load a `kubectl get ... -o yaml` List (or a single object). Returns objects used."""
        items = doc.get("items") if doc.get("kind", "").endswith("List") else [doc]
        grouped: dict[str, list[dict]] = {r.key: [] for r in self.resources}
        used = 0
        for obj in items or []:
            if not isinstance(obj, dict):
                continue
            res = resource_for(obj, self.resources)
            if res is not None:
                grouped[res.key].append(obj)
                used += 1
        for key, objs in grouped.items():
            self.replace(key, objs)
        return used

    # --- readers -----------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self._objects.items()}

    def objects(self, resource: str) -> list[dict]:
        return list(self._objects[resource].values())

    def all_objects(self) -> dict[str, list[dict]]:
        with self._lock:
            return {k: list(v.values()) for k, v in self._objects.items()}

    def _rebuild(self) -> None:
        with self._lock:
            if self._built_gen == self.generation:
                return
            gen = self.generation
            objs = {k: list(v.values()) for k, v in self._objects.items()}
        exact: dict[str, Endpoint] = {}
        nets: list[tuple[ipaddress._BaseNetwork, Endpoint]] = []
        # Later entries win: services < nodes < pods (a pod IP is the most specific fact).
        for svc in objs["services"]:
            m = svc.get("metadata") or {}
            e = Endpoint(ep.SERVICE, m.get("namespace", ""), m.get("name", ""))
            for ip in ep.service_ips(svc):
                _put(exact, ip, e)
        for node in objs["nodes"]:
            e = Endpoint(ep.HOST, "", (node.get("metadata") or {}).get("name", ""))
            for ip in ep.node_ips(node):
                _put(exact, ip, e)
        for pod in objs["pods"]:
            m = pod.get("metadata") or {}
            e = Endpoint(ep.POD, m.get("namespace", ""), ep.workload_of(pod), m.get("name", ""))
            for ip in ep.pod_ips(pod):
                _put(exact, ip, e)
        for key in ("calico_networksets", "calico_globalnetworksets"):
            for ns in objs[key]:
                m = ns.get("metadata") or {}
                e = Endpoint(ep.NETWORKSET, m.get("namespace", "") or "", m.get("name", ""))
                for cidr in ep.networkset_nets(ns):
                    try:
                        nets.append((ipaddress.ip_network(cidr, strict=False), e))
                    except ValueError:
                        continue  # a bad CIDR in one set must not stop the others
        policies = PolicyIndex(
            [("np", p) for p in objs["calico_networkpolicies"]]
            + [("gnp", p) for p in objs["calico_globalnetworkpolicies"]]
            + [("knp", p) for p in objs["networkpolicies"]]
        )
        with self._lock:
            self._index = IPIndex(exact, nets)
            self._policies = policies
            self._built_gen = gen

    def index(self) -> IPIndex:
        if self._built_gen != self.generation:
            self._rebuild()
        return self._index

    def policies(self) -> PolicyIndex:
        if self._built_gen != self.generation:
            self._rebuild()
        return self._policies


def _put(exact: dict[str, Endpoint], ip: str, e: Endpoint) -> None:
    norm = ep.normalise_ip(ip)
    if norm is not None:
        exact[norm] = e
