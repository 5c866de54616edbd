"""The Kubernetes and Calico resources calico-lens reads, and how to reach them.

One table drives the watcher, the snapshot loader and (later) the chart's RBAC, so the list of
what we read lives in one place.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Resource:
    key: str  # our name for it, used in metric labels
    kind: str  # the object's kind in a List / snapshot
    group: str  # "" for the core group
    version: str
    plural: str
    namespaced: bool
    optional: bool = False  # the API group may be absent (Calico API server not installed)


CALICO_GROUP = "projectcalico.org"
CALICO_CRD_GROUP = "crd.projectcalico.org"  # the CRDs Calico stores its v3 resources in

RESOURCES: tuple[Resource, ...] = (
    Resource("pods", "Pod", "", "v1", "pods", True),
    Resource("services", "Service", "", "v1", "services", True),
    Resource("namespaces", "Namespace", "", "v1", "namespaces", False),
    Resource("nodes", "Node", "", "v1", "nodes", False),
    Resource("networkpolicies", "NetworkPolicy", "networking.k8s.io", "v1", "networkpolicies", True),
    Resource("calico_networkpolicies", "NetworkPolicy", CALICO_GROUP, "v3", "networkpolicies", True, True),
    Resource(
        "calico_globalnetworkpolicies", "GlobalNetworkPolicy", CALICO_GROUP, "v3", "globalnetworkpolicies",
        False, True,
    ),
    Resource("calico_networksets", "NetworkSet", CALICO_GROUP, "v3", "networksets", True, True),
    Resource(
        "calico_globalnetworksets", "GlobalNetworkSet", CALICO_GROUP, "v3", "globalnetworksets", False, True
    ),
)
# What the cluster-wide inventory reads on top (policy board, posture).
INVENTORY_RESOURCES: tuple[Resource, ...] = (
    *RESOURCES,
    Resource("serviceaccounts", "ServiceAccount", "", "v1", "serviceaccounts", True),
    Resource("calico_tiers", "Tier", CALICO_GROUP, "v3", "tiers", False, True),
    Resource("calico_stagednetworkpolicies", "StagedNetworkPolicy", CALICO_GROUP, "v3", "stagednetworkpolicies",
             True, True),
    Resource("calico_stagedglobalnetworkpolicies", "StagedGlobalNetworkPolicy", CALICO_GROUP, "v3",
             "stagedglobalnetworkpolicies", False, True),
    Resource("calico_stagedkubernetesnetworkpolicies", "StagedKubernetesNetworkPolicy", CALICO_GROUP, "v3",
             "stagedkubernetesnetworkpolicies", True, True),
)
BY_KEY = {r.key: r for r in INVENTORY_RESOURCES}


def resource_for(obj: dict, resources: tuple[Resource, ...] = RESOURCES) -> Resource | None:
    """Which resource an object from a snapshot belongs to (None: not one we read)."""
    kind = obj.get("kind", "")
    api = obj.get("apiVersion", "")
    group = api.rpartition("/")[0] if "/" in api else ""
    if group == CALICO_CRD_GROUP:
        group = CALICO_GROUP
    for r in resources:
        if r.kind == kind and r.group == group:
            return r
    return None
