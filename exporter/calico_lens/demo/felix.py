"""A stand-in Felix for the demo, the tests and the bench: it speaks ``goldmane.FlowCollector/Connect``
with the real grpcio client over the real unix socket, the way Felix's flow client does
(goldmane/pkg/client/client.go, release-v3.30 … v3.33): one FlowUpdate, then wait for one
FlowReceipt; the flows of the last five minutes are kept and all of them are sent again after
every (re)connection."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterable, Iterator

import grpc

from calico_lens.proto import goldmane_pb2 as pb

CACHE_SECONDS = 300
_TYPES = {"pod": pb.WorkloadEndpoint, "host": pb.HostEndpoint, "networkset": pb.NetworkSet, "net": pb.Network}
_ACTIONS = {"allow": pb.Allow, "deny": pb.Deny, "pass": pb.Pass}
_KINDS = {"np": pb.CalicoNetworkPolicy, "gnp": pb.GlobalNetworkPolicy, "snp": pb.StagedNetworkPolicy,
          "sgnp": pb.StagedGlobalNetworkPolicy, "sknp": pb.StagedKubernetesNetworkPolicy, "knp": pb.NetworkPolicy,
          "pro": pb.Profile, "eot": pb.EndOfTier}


def hit(kind: str, name: str, action: str, namespace: str = "", tier: str = "default", index: int = 0,
        rule: int = 0, trigger: pb.PolicyHit | None = None) -> pb.PolicyHit:
    h = pb.PolicyHit(kind=_KINDS[kind], namespace=namespace, name=name, tier=tier, action=_ACTIONS[action],
                     policy_index=index, rule_index=rule)
    if trigger is not None:
        h.trigger.CopyFrom(trigger)
    return h


def flow(src: tuple[str, str, str], dst: tuple[str, str, str], port: int, action: str, reporter: str,
         start: int, *, proto: str = "tcp", enforced: Iterable[pb.PolicyHit] = (),
         pending: Iterable[pb.PolicyHit] = (), src_labels: Iterable[str] = (), dst_labels: Iterable[str] = (),
         packets: tuple[int, int] = (0, 0), bytes_: tuple[int, int] = (0, 0),
         connections: tuple[int, int, int] = (0, 0, 0), end: int | None = None) -> pb.Flow:
    """A Flow as Felix reports it. src/dst: (type, namespace, aggregated name), type one of pod, host,
    networkset, net; packets/bytes: (in, out); connections: (started, completed, live)."""
    f = pb.Flow(start_time=start, end_time=start if end is None else end,  # Felix 3.30-3.33 send end = start
                packets_in=packets[0], packets_out=packets[1], bytes_in=bytes_[0], bytes_out=bytes_[1],
                num_connections_started=connections[0], num_connections_completed=connections[1],
                num_connections_live=connections[2], source_labels=list(src_labels), dest_labels=list(dst_labels))
    k = f.Key
    k.source_type, k.source_namespace, k.source_name = _TYPES[src[0]], src[1], src[2]
    k.dest_type, k.dest_namespace, k.dest_name = _TYPES[dst[0]], dst[1], dst[2]
    k.dest_port, k.proto = port, proto
    k.reporter = pb.Src if reporter == "src" else pb.Dst
    k.action = _ACTIONS[action]
    k.policies.enforced_policies.extend(enforced)
    k.policies.pending_policies.extend(pending)
    return f


class StandInFelix:
    """One Felix's flow client. ``send`` returns once the receipt came back; a failed stream raises
    grpc.RpcError and the next ``send`` (or ``reconnect``) opens a new one, resending the cache."""

    def __init__(self, path: str, cache_seconds: float = CACHE_SECONDS, clock=time.time):
        self.path = path
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._cache: list[tuple[float, bytes]] = []
        self._channel = grpc.insecure_channel("unix:" + path)
        self._call = None
        self.receipts = 0
        self.connects = 0

    def _open(self) -> None:
        q: queue.Queue[bytes | None] = queue.Queue()
        connect = self._channel.stream_stream("/goldmane.FlowCollector/Connect")  # raw bytes both ways
        responses = connect(iter(q.get, None))
        self._call = (q, responses)
        self.connects += 1

    def _roundtrip(self, raw: bytes) -> None:
        q, responses = self._call
        q.put(raw)
        try:
            next(responses)
        except (grpc.RpcError, StopIteration):
            self._call = None  # the stream is gone: the next send reconnects and resends
            raise
        self.receipts += 1

    def connect(self) -> int:
        """(Re)connect and resend every cached flow, as Felix does. Returns how many were resent."""
        self.close_stream()
        self._open()
        now = self.clock()
        self._cache = [(t, raw) for t, raw in self._cache if now - t < self.cache_seconds]
        for _, raw in self._cache:
            self._roundtrip(raw)
        return len(self._cache)

    def send(self, flows: Iterable[pb.Flow]) -> int:
        n = 0
        for f in flows:
            n += self.send_raw(pb.FlowUpdate(flow=f).SerializeToString())
        return n

    def send_raw(self, raw: bytes, cache: bool = True) -> int:
        if self._call is None:
            self.connect()
        if cache:
            self._cache.append((self.clock(), raw))
        self._roundtrip(raw)
        return 1

    def close_stream(self) -> None:
        if self._call is not None:
            q, responses = self._call
            q.put(None)
            try:
                for _ in responses:
                    pass
            except grpc.RpcError:
                pass
            self._call = None

    def close(self) -> None:
        self.close_stream()
        self._channel.close()


def updates(flows: Iterable[pb.Flow]) -> Iterator[bytes]:
    for f in flows:
        yield pb.FlowUpdate(flow=f).SerializeToString()


class DemoFlows:
    """Felix's view of the demo cluster's traffic (demo/cluster.py's MIX), one flush at a time: both
    reporting ends, policy traces that agree with the demo's policies, and a staged policy
    (shop/default.frontend-public-lockdown) that would deny the frontend's calls to the internet,
    which are allowed today, and one (payments/default.checkout-allow-dns) that would allow the DNS
    lookups checkout's egress policy denies today."""

    STAGED = ("snp", "shop", "default.frontend-public-lockdown")
    STAGED_FIX = ("snp", "payments", "default.checkout-allow-dns")  # would allow checkout's denied DNS

    def __init__(self, seed: int = 5, scale: float = 1.0):
        import random

        from calico_lens.demo import cluster

        self.rng = random.Random(seed)
        self.scale = scale
        self.cluster = cluster

    def _endpoint(self, dest: str) -> tuple[tuple[str, str, str], list[str]]:
        if dest == "partner":
            return ("networkset", "-", "partner-apis"), []
        if dest == "public":
            return ("net", "-", "pub"), []
        if dest == "node":
            return ("net", "-", "pvt"), []
        return self._pod(dest)

    def _pod(self, workload: str) -> tuple[tuple[str, str, str], list[str]]:
        pod = self.cluster.BY_WORKLOAD[workload][0]
        if pod.owner == "ReplicaSet":
            rs = pod.name.rsplit("-", 1)[0]
            return ("pod", pod.namespace, rs + "-*"), [f"app={workload}", f"pod-template-hash={rs.rsplit('-', 1)[1]}"]
        return ("pod", pod.namespace, workload + "-*"), [f"app={workload}"]

    def _egress(self, src: str, ns: str, dest: str, port: int) -> tuple[str, list[pb.PolicyHit]]:
        hits = [hit("gnp", "platform.log-all-egress", "pass", tier="platform", index=0)]
        if src == "checkout":
            ok = dest in ("partner", "public") and port == 443
            hits.append(hit("np", "default.checkout-egress", "allow" if ok else "deny", "payments", index=1,
                            rule=1 if ok else 3))
            return ("allow" if ok else "deny"), hits
        hits.append(hit("pro", f"kns.{ns}", "allow", tier="__PROFILE__", index=1))
        return "allow", hits

    def _ingress(self, dest: str, ns: str, port: int) -> tuple[str, list[pb.PolicyHit]]:
        for name, wl, want in (("default.backend-allow-frontend", "backend", 8080),
                               ("default.postgres-allow-backend", "postgres", 5432)):
            if dest == wl:
                ok = port == want
                return ("allow" if ok else "deny"), [hit("np", name, "allow" if ok else "deny", ns, index=0,
                                                         rule=1 if ok else 3)]
        return "allow", [hit("pro", f"kns.{ns}", "allow", tier="__PROFILE__", index=0)]

    def flush(self, start: int) -> list[pb.Flow]:
        out: list[pb.Flow] = []
        for weight, src_wl, dest, proto, port in self.cluster.MIX:
            n = max(1, round(weight * self.scale * self.rng.uniform(0.6, 1.4)))
            src, src_labels = self._pod(src_wl)
            dst, dst_labels = self._endpoint(dest)
            proto_name = proto.lower()
            port = port if proto_name != "icmp" else 0
            action, enforced = self._egress(src_wl, src[1], dest, port)
            pending = list(enforced)
            if src_wl == "frontend" and dest == "public":
                kind, ns, name = self.STAGED
                pending = [enforced[0], hit(kind, name, "deny", ns, index=1)]
            elif src_wl == "checkout" and dest == "coredns":
                kind, ns, name = self.STAGED_FIX
                pending = [enforced[0], hit(kind, name, "allow", ns, index=1)]
            done = n - self.rng.randint(0, max(0, n // 4))
            size = self.rng.randint(400, 4000)
            stats = {"connections": (n, done if action == "allow" else 0, n - done if action == "allow" else 0),
                     "packets": ((n * 6, n * 8) if action == "allow" else (0, n * 2)),
                     "bytes_": ((n * size * 4, n * size) if action == "allow" else (0, n * 120))}
            out.append(flow(src, dst, port, action, "src", start, proto=proto_name, enforced=enforced,
                            pending=pending, src_labels=src_labels, dst_labels=dst_labels, **stats))
            if action == "allow" and dst[0] == "pod":
                verdict, hits = self._ingress(dest, dst[1], port)
                in_stats = {"connections": stats["connections"] if verdict == "allow" else (n, 0, 0),
                            "packets": (stats["packets"][1], stats["packets"][0]) if verdict == "allow" else (n * 2, 0),
                            "bytes_": (stats["bytes_"][1], stats["bytes_"][0]) if verdict == "allow" else (n * 120, 0)}
                out.append(flow(src, dst, port, verdict, "dst", start, proto=proto_name, enforced=hits,
                                pending=hits, src_labels=src_labels, dst_labels=dst_labels, **in_stats))
        return out
