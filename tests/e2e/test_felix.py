"""The felix source end to end: the real agent process serving goldmane.FlowCollector/Connect on a
real unix socket, a stand-in Felix using the real grpcio client. No Kubernetes API anywhere: the
agent runs with only the felix source and no kubeconfig."""

from __future__ import annotations

import os
import socket
import stat
import threading
import time
from pathlib import Path

import grpc
import pytest
import requests
import yaml
from calico_lens.demo.felix import StandInFelix, flow, hit
from calico_lens.metrics import names
from calico_lens.proto import goldmane_pb2 as pb

from tests.e2e.agent_proc import AgentProcess
from tests.helpers import inputs, samples, source_errors

NOW = int(time.time())
FRONTEND = ("pod", "shop", "frontend-7d9c5b8f4-*")
BACKEND = ("pod", "shop", "backend-5f6d7c8b9-*")
FE_LABELS = ["app=frontend", "pod-template-hash=7d9c5b8f4"]
BE_LABELS = ["app=backend", "pod-template-hash=5f6d7c8b9"]


def known_flows(start: int = NOW) -> list[pb.Flow]:
    """Three flows of one interval: frontend → backend seen at both ends, frontend → internet denied."""
    allow = [hit("np", "allow-frontend", "allow", "shop", rule=1)]
    staged = [hit("snp", "lockdown", "deny", "shop", rule=0)]
    return [
        flow(FRONTEND, BACKEND, 8080, "allow", "src", start, enforced=allow, pending=staged, src_labels=FE_LABELS,
             dst_labels=BE_LABELS, packets=(10, 12), bytes_=(1000, 2000), connections=(3, 2, 1)),
        flow(FRONTEND, BACKEND, 8080, "allow", "dst", start, enforced=allow, pending=staged, src_labels=FE_LABELS,
             dst_labels=BE_LABELS, packets=(12, 10), bytes_=(2000, 1000), connections=(3, 2, 1)),
        flow(FRONTEND, ("net", "", "pub"), 443, "deny", "src", start, src_labels=FE_LABELS,
             enforced=[hit("gnp", "deny-egress", "deny", tier="security", rule=4)], packets=(0, 5),
             connections=(5, 0, 0)),
    ]


def total(text: str, metric: str, **match: str) -> float:
    return sum(v for lab, v in samples(text).get(metric, []) if all(lab.get(k) == x for k, x in match.items()))


@pytest.fixture()
def sock(tmp_path: Path) -> str:
    return str(tmp_path / "flows" / "flows.sock")  # the directory does not exist yet: the agent makes it


def reconnect(felix: StandInFelix) -> int:
    """As Felix does after an agent restart: try until the socket is served (a crashed agent's file
    may still be there), then resend the cache."""
    end = time.monotonic() + 20
    while True:
        try:
            return felix.connect()
        except grpc.RpcError:
            assert time.monotonic() < end, "the new agent never served the socket"
            time.sleep(0.2)


def agent(sock: str, *extra: str) -> AgentProcess:
    a = AgentProcess("--source", f"felix:unix:{sock}", *extra, ready=False)
    end = time.monotonic() + 20
    while not os.path.exists(sock):
        assert time.monotonic() < end, "socket not created"
        time.sleep(0.05)
    return a


def test_exact_totals_without_kubernetes(sock: str) -> None:
    with agent(sock) as a:
        felix = StandInFelix(sock)
        assert felix.send(known_flows()) == 3
        text = a.metrics()
        felix.close()
    assert inputs(text)[("felix", "parsed")] == 3
    started = names.CONNS_STARTED + "_total"
    # Felix's aggregated names become the workloads the Log-line path gives (ReplicaSet hash gone).
    assert total(text, started, source_workload="frontend", destination_workload="backend", reporter="src",
                 action="allow", policy="shop/allow-frontend", direction="egress", destination_port="8080") == 3
    assert total(text, started, reporter="dst", direction="ingress") == 3
    assert total(text, started, destination_kind="public", destination_workload="public", action="deny",
                 policy="deny-egress", tier="security") == 5
    assert total(text, names.CONNS_COMPLETED + "_total") == 4
    assert total(text, names.CONNS_LIVE, reporter="src", action="allow") == 1
    # bytes: "out" is what the source sent, whichever end reported it
    b = names.FLOW_BYTES + "_total"
    assert total(text, b, reporter="src", direction="out") == 2000
    assert total(text, b, reporter="src", direction="in") == 1000
    assert total(text, b, reporter="dst", direction="out") == 2000
    assert total(text, b, reporter="dst", direction="in") == 1000
    assert total(text, names.FLOW_PACKETS + "_total") == 10 + 12 + 12 + 10 + 5
    hits = names.POLICY_HITS + "_total"
    assert total(text, hits, policy="deny-egress", policy_kind="gnp", action="deny", rule_index="4") == 5
    assert total(text, hits, policy="shop/allow-frontend", rule_index="1", reporter="src") == 3
    # the staged policy would deny what is allowed today, seen once per reporting end
    pv = names.POLICY_PREVIEW + "_total"
    assert total(text, pv, policy="shop/lockdown", policy_kind="snp", enforced_action="allow",
                 pending_action="deny", source_workload="frontend", destination_workload="backend") == 6
    assert total(text, pv, policy="deny-egress") == 0  # nothing staged there: no preview
    assert total(text, names.KUBE_OBJECTS) == 0  # no Kubernetes API was asked for anything


def test_resends_after_reconnect_are_not_counted_twice(sock: str) -> None:
    with agent(sock) as a:
        felix = StandInFelix(sock)
        felix.send(known_flows(NOW - 60))
        assert felix.connect() == 3  # Felix resends its last five minutes after a reconnect
        felix.send(known_flows(NOW))  # the next interval: new flows
        assert felix.connect() == 6
        text = a.metrics()
        felix.close()
    assert inputs(text)[("felix", "parsed")] == 6
    assert inputs(text)[("felix", "ignored")] == 9  # 3 + 6 resends
    assert total(text, names.CONNS_STARTED + "_total") == 2 * (3 + 3 + 5)
    # live connections: the newest interval's, not a sum over intervals
    assert total(text, names.CONNS_LIVE) == 2
    assert samples(text)[names.FELIX_CONNECTS + "_total"][0][1] == 3


def test_agent_restart_while_felix_keeps_sending(sock: str) -> None:
    felix = StandInFelix(sock)
    seen = Path(sock).parent / "calico-lens-seen-flows"
    with agent(sock) as a:
        felix.send(known_flows(NOW - 30))
        assert total(a.metrics(), names.CONNS_STARTED + "_total") == 11
    assert not os.path.exists(sock)  # removed on exit
    assert stat.S_IMODE(seen.stat().st_mode) == 0o600  # what it counted, kept for the next agent
    with pytest.raises(grpc.RpcError):
        felix.send(known_flows(NOW)[:1])  # the agent is gone: no receipt, Felix keeps the flow
    with agent(sock) as a:
        reconnect(felix)
        assert not seen.exists()  # read once
        text = a.metrics()
    felix.close()
    # Felix resent all four: the three the old agent counted are known, so only the one that found
    # no agent counts. Prometheus adds the new process's counters to the old ones across the reset.
    assert inputs(text)[("felix", "parsed")] == 1
    assert inputs(text)[("felix", "ignored")] == 3
    assert total(text, names.CONNS_STARTED + "_total") == 3


def test_after_a_crash_only_what_came_since_the_last_save_counts_again(sock: str) -> None:
    felix = StandInFelix(sock)
    seen = Path(sock).parent / "calico-lens-seen-flows"
    conf = ("--config", _config(sock, felix_seen_save_interval="1s"))
    a = agent(sock, *conf)
    try:
        felix.send(known_flows(NOW - 30))
        end = time.monotonic() + 15
        while not seen.exists():  # saved while running
            assert time.monotonic() < end, "no periodic save"
            time.sleep(0.1)
        time.sleep(1.5)  # one more save, after the last record for sure
        a.proc.kill()  # a crash: no clean stop, no last save
        a.proc.wait(10)
    finally:
        a.close()
    felix.close_stream()
    with agent(sock, *conf) as a:  # the crashed agent's socket file is still there: retry until served
        reconnect(felix)
        felix.send(known_flows(NOW)[:1])
        text = a.metrics()
    felix.close()
    assert inputs(text)[("felix", "parsed")] == 1
    assert inputs(text)[("felix", "ignored")] == 3


def test_without_the_seen_file_a_restart_counts_felixs_cache_again(sock: str) -> None:
    felix = StandInFelix(sock)
    off = ("--config", _config(sock, felix_keep_seen=False))
    with agent(sock, *off):
        felix.send(known_flows(NOW - 30))
    assert not (Path(sock).parent / "calico-lens-seen-flows").exists()
    with agent(sock, *off) as a:
        reconnect(felix)
        text = a.metrics()
    felix.close()
    assert inputs(text)[("felix", "parsed")] == 3  # counted by both processes: twice across the restart


def test_an_unreadable_seen_file_is_counted_and_set_aside(sock: str) -> None:
    seen = Path(sock).parent / "calico-lens-seen-flows"
    seen.parent.mkdir(parents=True)
    seen.write_bytes(b"not what an agent writes")
    with agent(sock) as a:
        felix = StandInFelix(sock)
        felix.send(known_flows())
        text = a.metrics()
        felix.close()
    assert source_errors(text)[("felix", "seen_file_unreadable")] == 1
    assert inputs(text)[("felix", "parsed")] == 3
    assert seen.read_bytes().startswith(b"calico-lens seen flows v1 ")  # replaced on stop


def test_garbage_oversize_and_foreign_shapes_are_refused_and_counted(sock: str) -> None:
    with agent(sock, "--config", _config(sock, felix_max_message_bytes=2048)) as a:
        # garbage bytes straight on the socket (not HTTP/2): the connection is dropped, the agent lives
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(sock)
            s.sendall(os.urandom(4096))
            s.settimeout(5)
            try:
                while s.recv(4096):
                    pass
            except OSError:
                pass
        felix = StandInFelix(sock)
        felix.send_raw(b"\x0a\x05\xff\xff\xff\xff\xff", cache=False)  # a gRPC message that is not protobuf
        big = flow(FRONTEND, BACKEND, 80, "allow", "src", NOW, src_labels=[f"k{i}=v" * 10 for i in range(100)])
        felix.send([big])  # over felix_max_message_bytes: refused, counted, receipted
        felix.send_raw(_prerelease_update(), cache=False)  # strings where 3.30 has enums: never misread
        felix.send(known_flows())  # and real flows still count
        with pytest.raises(grpc.RpcError) as refused:  # past gRPC's own limit (2 × ours): refused unread
            felix.send_raw(b"\x0a\x90\x4e" + b"x" * 10000, cache=False)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        text = a.metrics()
        felix.close()
    errors = source_errors(text)
    assert errors[("felix", "malformed")] == 1
    assert errors[("felix", "oversize")] == 1
    assert errors[("felix", "unknown_shape")] == 1
    assert errors[("felix", "stream_broken")] == 1  # the agent saw the stream end, and says so
    assert inputs(text)[("felix", "malformed")] == 3
    assert inputs(text)[("felix", "parsed")] == 3
    assert total(text, names.CONNS_STARTED + "_total") == 11


def test_many_streams_at_once_and_the_stream_limit(sock: str) -> None:
    with agent(sock, "--config", _config(sock, felix_max_streams=4)) as a:
        clients = [StandInFelix(sock) for _ in range(4)]
        for i, c in enumerate(clients):  # four streams open together, each past its first receipt
            c.send([flow(FRONTEND, BACKEND, 9000 + i, "allow", "src", NOW - 1, connections=(1, 0, 0))])
        streams = names.FELIX_STREAMS
        assert samples(a.metrics())[streams][0][1] == 4
        errors: list[Exception] = []

        def run(i: int, c: StandInFelix) -> None:
            try:
                for k in range(25):
                    c.send([flow(FRONTEND, BACKEND, 9000 + i, "allow", "src", NOW + k, connections=(1, 0, 0))])
            except Exception as e:
                errors.append(e)

        threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(clients)]
        for t in threads:
            t.start()
        extra = StandInFelix(sock)
        with pytest.raises(grpc.RpcError) as refused:  # a fifth stream while four are open
            extra.send([flow(FRONTEND, BACKEND, 9999, "allow", "src", NOW, connections=(1, 0, 0))])
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        for t in threads:
            t.join(60)
        assert not errors
        text = a.metrics()
        for c in [*clients, extra]:
            c.close()
    assert inputs(text)[("felix", "parsed")] == 104
    assert total(text, names.CONNS_STARTED + "_total") == 104
    assert source_errors(text)[("felix", "too_many_streams")] == 1


def test_idle_streams_are_cut_and_felix_comes_back(sock: str) -> None:
    with agent(sock, "--config", _config(sock, felix_idle_timeout="1s")) as a:
        felix = StandInFelix(sock)
        felix.send(known_flows()[:1])
        end = time.monotonic() + 15  # silent past the timeout: the agent cuts the stream
        while samples(a.metrics())[names.FELIX_STREAMS][0][1] != 0:
            assert time.monotonic() < end, "idle stream still open"
            time.sleep(0.2)
        with pytest.raises(grpc.RpcError) as cut:
            felix.send(known_flows()[1:2])  # the cut stream answers with an error, no receipt
        assert cut.value.code() == grpc.StatusCode.CANCELLED
        assert felix.connect() == 2  # Felix reconnects and resends both; only the unreceipted one counts
        text = a.metrics()
        felix.close()
    assert source_errors(text)[("felix", "idle_timeout")] == 1
    assert inputs(text)[("felix", "parsed")] == 2
    assert inputs(text)[("felix", "ignored")] == 1


def test_other_methods_are_refused(sock: str) -> None:
    with agent(sock) as a:
        with grpc.insecure_channel("unix:" + sock) as ch:
            with pytest.raises(grpc.RpcError) as refused:
                ch.unary_unary("/goldmane.FlowCollector/Other")(b"", timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
        felix = StandInFelix(sock)
        felix.send(known_flows())  # the socket still serves Felix
        text = a.metrics()
        felix.close()
    assert inputs(text)[("felix", "parsed")] == 3


def test_socket_file_lifecycle_and_readiness(sock: str, tmp_path: Path) -> None:
    Path(sock).parent.mkdir(parents=True)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(sock)  # a stale socket file left by an earlier run
    stale.close()
    assert stat.S_IMODE(os.stat(sock).st_mode) != 0o600
    with agent(sock, "--config", _config(sock, felix_absent_after="1s")) as a:
        end = time.monotonic() + 10
        while time.monotonic() < end:  # the stale file is replaced by the agent's own, owner only
            mode = os.stat(sock).st_mode if os.path.exists(sock) else 0
            if stat.S_IMODE(mode) == 0o600:
                break
            time.sleep(0.05)
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
        while True:  # no Felix for over a second: not ready, and the message says how to fix it
            r = requests.get(a.url + "/readyz", timeout=5)
            if r.status_code == 503 or time.monotonic() > end:
                break
            time.sleep(0.2)
        assert r.status_code == 503 and "flowLogsLocalReporter" in r.text and "kubectl patch" in r.text
        felix = StandInFelix(sock)
        felix.send(known_flows()[:1])  # a connected Felix (its stream stays open): ready
        assert requests.get(a.url + "/readyz", timeout=5).status_code == 200
        felix.close()
    assert not os.path.exists(sock)
    # a regular file where the socket should be is not deleted: the agent is not ready and says why
    Path(sock).write_text("not a socket")
    with AgentProcess("--source", f"felix:unix:{sock}", ready=False) as a:
        end = time.monotonic() + 20
        while "not a socket" not in (r := requests.get(a.url + "/readyz", timeout=5)).text:
            assert time.monotonic() < end, r.text
            time.sleep(0.1)
        assert r.status_code == 503
    assert Path(sock).read_text() == "not a socket"


def _prerelease_update() -> bytes:
    """A FlowUpdate in the pre-release shape: FlowKey.source_type (3), reporter (13) and action (14) as
    strings."""
    def field(num: int, payload: bytes) -> bytes:
        return bytes([num << 3 | 2, len(payload)]) + payload

    key = field(1, b"frontend-*") + field(2, b"shop") + field(3, b"wep") + field(13, b"src") + field(14, b"allow")
    flow_bytes = field(1, key) + bytes([2 << 3]) + _varint(NOW)
    return field(1, flow_bytes)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _config(sock: str, **settings: object) -> str:
    path = Path(sock).parent.parent / "agent.yaml"
    path.write_text(yaml.safe_dump(settings))
    return str(path)

