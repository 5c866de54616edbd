"""Endpoints as flow labels see them, and how Kubernetes objects become endpoints."""

from __future__ import annotations

import ipaddress
from typing import NamedTuple

POD, HOST, SERVICE, NETWORKSET, PUBLIC, PRIVATE = "pod", "host", "service", "networkset", "public", "private"
KINDS = (POD, HOST, SERVICE, NETWORKSET, PUBLIC, PRIVATE)


class Endpoint(NamedTuple):
    kind: str
    namespace: str
    workload: str
    pod: str = ""  # pod name, for pod-level granularity and deletion of pod series


def normalise_ip(text: str) -> str | None:
    """Canonical text of an IP (the kernel prints IPv6 fully expanded); None if not an IP."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def external(ip: str) -> Endpoint:
    addr = ipaddress.ip_address(ip)
    kind = PRIVATE if (addr.is_private or addr.is_loopback or addr.is_link_local) else PUBLIC
    return Endpoint(kind, "", kind)


def workload_of(pod: dict) -> str:
    """The workload that owns a pod: ReplicaSet→Deployment, Job→CronJob, else the controller."""
    meta = pod.get("metadata") or {}
    name = meta.get("name", "")
    owners = meta.get("ownerReferences") or []
    owner = next((o for o in owners if o.get("controller")), owners[0] if owners else None)
    if not owner:
        return name  # a bare pod is its own workload
    kind, oname = owner.get("kind", ""), owner.get("name", "")
    if kind == "ReplicaSet":
        return deployment_of(oname, (meta.get("labels") or {}).get("pod-template-hash"))
    if kind == "Job":
        return cronjob_of(oname)
    return oname


def deployment_of(rs_name: str, template_hash: str | None) -> str:
    if template_hash and rs_name.endswith("-" + template_hash):
        return rs_name[: -len(template_hash) - 1]
    base, sep, tail = rs_name.rpartition("-")
    # Deployment ReplicaSets end in a 5–10 character hash from the safe alphabet.
    if sep and 5 <= len(tail) <= 10 and tail.isalnum() and tail.islower():
        return base
    return rs_name


def cronjob_of(job_name: str) -> str:
    base, sep, tail = job_name.rpartition("-")
    # CronJob jobs are named <cronjob>-<scheduled minutes since epoch>.
    if sep and tail.isdigit() and len(tail) >= 8:
        return base
    return job_name


def pod_ips(pod: dict) -> list[str]:
    status = pod.get("status") or {}
    if (status.get("phase") in ("Succeeded", "Failed")) or (pod.get("spec") or {}).get("hostNetwork"):
        return []  # finished pods free their IPs; host-network pods share the node's
    ips = [p.get("ip", "") for p in status.get("podIPs") or []]
    if not ips and status.get("podIP"):
        ips = [status["podIP"]]
    return [ip for ip in ips if ip]


def service_ips(svc: dict) -> list[str]:
    spec = svc.get("spec") or {}
    ips = list(spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else []))
    ips += [i.get("ip", "") for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []]
    ips += spec.get("externalIPs") or []
    return [ip for ip in ips if ip and ip != "None"]


_NODE_IP_ANNOTATIONS = (
    "projectcalico.org/IPv4Address",
    "projectcalico.org/IPv6Address",
    "projectcalico.org/IPv4IPIPTunnelAddr",
    "projectcalico.org/IPv4VXLANTunnelAddr",
    "projectcalico.org/IPv6VXLANTunnelAddr",
    "projectcalico.org/IPv4WireguardInterfaceAddr",
)


def node_ips(node: dict) -> list[str]:
    ips = [a.get("address", "") for a in (node.get("status") or {}).get("addresses") or []
           if a.get("type") in ("InternalIP", "ExternalIP")]
    ann = (node.get("metadata") or {}).get("annotations") or {}
    for key in _NODE_IP_ANNOTATIONS:
        if ann.get(key):
            ips.append(ann[key].split("/")[0])
    return [ip for ip in ips if ip]


def networkset_nets(obj: dict) -> list[str]:
    return list((obj.get("spec") or {}).get("nets") or [])
