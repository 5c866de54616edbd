"""Label tables, configuration, workloads, the IP index and policy verdicts."""

from __future__ import annotations

import json

import pytest
from calico_lens.config import ConfigError, load
from calico_lens.kube.endpoints import Endpoint, workload_of
from calico_lens.kube.metadata import MetadataStore
from calico_lens.metrics.names import OVERFLOW
from calico_lens.metrics.table import LabelTable
from calico_lens.parse.prefix import PrefixInfo
from hypothesis import given, settings
from hypothesis import strategies as st


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_cap_folds_into_overflow_and_keeps_totals() -> None:
    t = LabelTable("m", ("a",), max_series=3)
    t.add_counts([(("x",), 1), (("y",), 2), (("z",), 3), (("w",), 4), (("x",), 5)])
    rows = dict(t.snapshot())
    assert len(rows) == 3
    assert rows[(OVERFLOW,)] == 7  # z and w folded
    assert rows[("x",)] == 6 and rows[("y",)] == 2
    assert t.total() == 15 and t.overflowed == 7


def test_ttl_expires_idle_series_only() -> None:
    clock = Clock()
    t = LabelTable("m", ("a",), max_series=10, ttl_seconds=60, clock=clock)
    t.add(("old",))
    clock.t += 50
    t.add(("fresh",))
    clock.t += 20
    assert t.expire() == 1
    assert dict(t.snapshot()) == {("fresh",): 1}
    assert t.expired == 1


def test_config_precedence_and_errors(tmp_path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("log_prefix: '%k/%p'\nmax_series: 500\nsources: [kmsg]\nseries_ttl: 30m\n")
    cfg = load(str(f), env={"CALICO_LENS_MAX_SERIES": "700"}, overrides={"sources": ["file:/var/log/kern.log"]})
    assert (cfg.log_prefix, cfg.max_series, cfg.sources, cfg.series_ttl) == ("%k/%p", 700, ["file:/var/log/kern.log"],
                                                                              1800.0)
    env = {"CALICO_LENS_SOURCES": "trace,trace:/sys/kernel/debug/tracing/trace_pipe"}
    assert load(None, env=env).sources == ["trace", "trace:/sys/kernel/debug/tracing/trace_pipe"]
    env = {"CALICO_LENS_SOURCES": "http:127.0.0.1:8888,http:[::1]:9880,forward:0.0.0.0:24224"}
    assert load(None, env=env).sources == ["http:127.0.0.1:8888", "http:[::1]:9880", "forward:0.0.0.0:24224"]
    cases = {
        "source_granularity: node\n": "source_granularity: 'node' is not allowed; use one of namespace, workload, pod",
        "max_series: lots\n": "max_series: 'lots' is not a whole number",
        "sources: [tcp:1]\n": "sources: 'tcp:1' is not a source",
        "sources: ['trace:']\n": "sources: 'trace:' is not a source; use kmsg, trace, trace:PATH",
        "sources: ['http:localhost']\n": "sources: 'http:localhost' is not a source; use .* http:HOST:PORT",
        "sources: ['http:unix:/run/x.sock']\n": "sources: 'http:unix:/run/x.sock' is not a source",
        "log_prefix: 'x-%q'\n": "log_prefix:",
        "metrics_address: nowhere\n": "metrics_address: 'nowhere' is not HOST:PORT",
        "colour: blue\n": "unknown setting 'colour'",
        "- a\n": "top level must be a mapping",
    }
    for body, msg in cases.items():
        f.write_text(body)
        with pytest.raises(ConfigError, match=msg.replace("(", r"\(").replace("[", r"\[")):
            load(str(f), env={})


@pytest.mark.parametrize("pod,workload", [
    ({"metadata": {"name": "web-7d4b9c6f5-x2x9q", "labels": {"pod-template-hash": "7d4b9c6f5"},
                   "ownerReferences": [{"kind": "ReplicaSet", "name": "web-7d4b9c6f5", "controller": True}]}}, "web"),
    ({"metadata": {"name": "db-0", "ownerReferences": [{"kind": "StatefulSet", "name": "db", "controller": True}]}},
     "db"),
    ({"metadata": {"name": "backup-28912345-abcde",
                   "ownerReferences": [{"kind": "Job", "name": "backup-28912345", "controller": True}]}}, "backup"),
    ({"metadata": {"name": "once-xyz", "ownerReferences": [{"kind": "Job", "name": "once", "controller": True}]}},
     "once"),
    ({"metadata": {"name": "debug"}}, "debug"),
    ({"metadata": {"name": "fluent-abcde", "ownerReferences": [{"kind": "DaemonSet", "name": "fluent"}]}}, "fluent"),
])
def test_workload_of(pod: dict, workload: str) -> None:
    assert workload_of(pod) == workload


def _store() -> MetadataStore:
    s = MetadataStore()
    s.load_list({"kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "namespace": "n"},
         "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}]}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "done", "namespace": "n"},
         "status": {"phase": "Succeeded", "podIP": "10.0.0.9"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc", "namespace": "n"},
         "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"]}},
        {"apiVersion": "v1", "kind": "Node",
         "metadata": {"name": "node-1", "annotations": {"projectcalico.org/IPv4Address": "192.168.1.5/24"}},
         "status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.5"}]}},
        {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkSet", "metadata": {"name": "wide"},
         "spec": {"nets": ["8.0.0.0/8", "not-a-cidr"]}},
        {"apiVersion": "crd.projectcalico.org/v1", "kind": "NetworkSet",
         "metadata": {"name": "narrow", "namespace": "n"},
         "spec": {"nets": ["8.8.8.0/24"]}},
        {"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
         "metadata": {"name": "allow-dns", "namespace": "n"},
         "spec": {"tier": "platform", "egress": [
             {"action": "Log", "protocol": "UDP", "destination": {"ports": [53]}},
             {"action": "Allow", "protocol": "UDP", "destination": {"ports": [53]}},
             {"action": "Log"}, {"action": "Deny"}]}},
    ]})
    return s


def test_ip_index() -> None:
    idx = _store().index()
    assert idx.lookup("10.0.0.1") == Endpoint("pod", "n", "a", "a")
    assert idx.lookup("fd00::1").kind == "pod"
    assert idx.lookup("10.0.0.9").kind == "private"  # finished pods give their IP back
    assert idx.lookup("10.96.0.10") == Endpoint("service", "n", "svc")
    assert idx.lookup("192.168.1.5") == Endpoint("host", "", "node-1")
    assert idx.lookup("8.8.8.8") == Endpoint("networkset", "n", "narrow")  # longest prefix wins
    assert idx.lookup("8.1.2.3") == Endpoint("networkset", "", "wide")
    assert idx.lookup("1.1.1.1") == Endpoint("public", "", "public")


def test_policy_verdicts() -> None:
    idx = _store().policies()

    def verdict(info: PrefixInfo, protocol: str, port: str, direction: str):
        """What the policy a prefix names did to a flow of one protocol, port and direction."""
        return idx.port_verdicts(info, idx.find(info), protocol, direction).at(int(port) if port else -1)

    info = PrefixInfo(kind="np", namespace="n", name="allow-dns")
    assert verdict(info, "udp", "53", "egress").action == "allow"
    assert verdict(info, "tcp", "443", "egress").action == "deny"  # the catch-all Log rule
    v = verdict(info, "udp", "53", "")
    assert (v.policy, v.tier, v.direction) == ("n/allow-dns", "platform", "egress")
    assert verdict(PrefixInfo(name="allow-d", truncated=True), "udp", "53", "").policy == "n/allow-dns"
    unknown = verdict(PrefixInfo(kind="gnp", name="gone"), "udp", "53", "")
    assert (unknown.policy, unknown.action) == ("gone", "unknown")


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1) | st.sampled_from(["0.0.0.0", "10.0.0.0", "127.255.255.255", "169.254.1.1",
                                                     "172.15.255.255", "172.16.0.0", "192.0.0.9", "192.0.0.170",
                                                     "198.17.255.255", "198.18.0.0", "255.255.255.255", "100.64.0.1"]))
def test_external_addresses_are_classified_as_ipaddress_does(ip: int | str) -> None:
    import ipaddress

    from calico_lens.kube import endpoints as ep

    addr = ipaddress.IPv4Address(ip)
    want = "private" if addr.is_private or addr.is_loopback or addr.is_link_local else "public"
    assert ep.external(str(addr)).kind == want
    assert ep.normalise_ip(str(addr)) == str(addr)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.fixed_dictionaries(
    {"action": st.sampled_from(["Log", "Allow", "Deny", "Pass"])},
    optional={"protocol": st.sampled_from(["TCP", "UDP", "6", 17, "tcp"]),
              "destination": st.fixed_dictionaries({"ports": st.lists(
                  st.integers(1, 70) | st.sampled_from(["10:20", "30", "http", "5:x", 40]), max_size=3)})}),
    max_size=8), st.sampled_from(["ingress", "egress", ""]), st.sampled_from(["tcp", "udp", "icmp"]))
def test_port_verdicts_answer_every_port_as_the_rules_do(rules: list[dict], direction: str, protocol: str) -> None:
    """One bisect per port (what a scan needs) gives what walking the rules gives, for every port."""
    from calico_lens.kube.policies import PolicyIndex

    nums = {"tcp": "6", "udp": "17", "icmp": "1"}

    def walk(rs: list[dict], port: int) -> str | None:  # the first Log rule that matches: the rule after it
        for i, r in enumerate(rs):
            if r["action"] != "Log":
                continue
            want = r.get("protocol")
            if want is not None and nums.get(str(want).lower(), str(want).lower()) != nums[protocol]:
                continue
            ports = (r.get("destination") or {}).get("ports")
            if ports and port >= 0 and not any(
                    p == port if isinstance(p, int) else
                    (p.isdigit() and int(p) == port) or (":" in p and p.replace(":", "").isdigit()
                                                         and int(p.split(":")[0]) <= port <= int(p.split(":")[1]))
                    or not (p.isdigit() or p.replace(":", "").isdigit()) for p in ports):
                continue
            nxt = rs[i + 1]["action"].lower() if i + 1 < len(rs) else "unknown"
            return nxt if nxt in ("allow", "deny", "pass") else "unknown"
        return None

    idx = PolicyIndex([("gnp", {"metadata": {"name": "p"}, "spec": {"ingress": rules, "egress": rules[::-1]}})])
    info = PrefixInfo(kind="gnp", name="p")
    table = idx.port_verdicts(info, idx.find(info), protocol, direction)
    for port in range(-1, 75):
        found = [(d, a) for d, rs in (("ingress", rules), ("egress", rules[::-1]))
                 if direction in ("", d) and (a := walk(rs, port)) is not None]
        got = table.at(port)
        if len(found) == 1:
            assert (got.action, got.direction) == (found[0][1], found[0][0]), port
        else:
            assert got.direction == "" and got.action == (found[0][1] if len({a for _, a in found}) == 1 else "unknown")


def test_enrich_cache_eviction_keeps_every_line_of_the_batch() -> None:
    """A batch whose new keys overflow the cache used to read keys the eviction had just dropped
    (KeyError: the whole batch lost). Every line is still counted, and the cache stays bounded."""
    from calico_lens.config import Config
    from calico_lens.kube.metadata import MetadataStore
    from calico_lens.pipeline import FlowPipeline

    line = "calico-packet: IN=calia1 OUT=calib2 SRC={} DST=198.18.0.2 LEN=60 PROTO=TCP SPT=1 DPT=80"
    # external_by_ip: every address is a key of its own (otherwise the scanner folds external ones)
    pipe = FlowPipeline(Config(enrich_cache_size=100, external_by_ip=True), MetadataStore())
    pipe.process("file", "\n".join(line.format("198.18.0.1") for _ in range(3)) + "\n")  # cached first
    batch = [line.format(f"10.0.{i >> 8 & 255}.{i & 255}") for i in range(300)] + [line.format("198.18.0.1")]
    pipe.process("file", "\n".join(batch) + "\n")
    assert pipe.out.inputs[("file", "parsed")] == 304
    assert pipe.flows.total() == 304
    assert all(len(c) <= 100 for c in pipe.enricher._caches) and pipe.enricher.evictions >= 1


def test_forward_users_without_a_shared_key_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="forward_shared_key"):
        load(env={}, overrides={"sources": ["forward:127.0.0.1:24224"], "forward_users": {"fluent": "pw"}})
    load(env={}, overrides={"sources": ["forward:127.0.0.1:24224"], "forward_users": {"fluent": "pw"},
                            "forward_shared_key": "k"})
    load(env={}, overrides={"sources": ["http:127.0.0.1:8888"], "forward_users": {"fluent": "pw"}})  # basic auth


def test_out_of_range_ports_and_protocols_are_malformed(monkeypatch) -> None:
    from calico_lens.config import Config
    from calico_lens.kube.metadata import MetadataStore
    from calico_lens.metrics import names
    from calico_lens.pipeline import FlowPipeline

    base = "calico-packet: IN=calia1 OUT=calib2 SRC=198.18.0.1 DST=198.18.0.2 LEN=60 PROTO={p} SPT=1 DPT={d}"
    lines = [base.format(p="TCP", d="80"), base.format(p="TCP", d="65535"), base.format(p="TCP", d="65536"),
             base.format(p="UDP", d="9" * 32), base.format(p="99999999999999999999", d="1"),
             base.format(p="256", d="1"), base.format(p="132", d="1"), base.format(p="TCP", d="-5"),
             base.format(p="TCP", d="8\u00b2"), base.format(p="UDP", d="0x50")]
    from calico_lens.parse import kernel_log

    assert kernel_log._scan is not None, "the C scanner is not built (make setup builds it)"
    for scanner in (kernel_log._scan, None):  # the C scanner and the regex path agree
        monkeypatch.setattr(kernel_log, "_scan", scanner)
        pipe = FlowPipeline(Config(), MetadataStore())
        pipe.process("file", "\n".join(lines) + "\n")
        assert pipe.out.inputs[("file", "parsed")] == 3
        assert pipe.out.inputs[("file", "malformed")] == 7
    ports = {k[names.FLOW_LABELS.index("destination_port")] for k, _ in pipe.flows.snapshot()}
    assert ports == {"80", "65535", "1"}  # 132 is SCTP, a protocol with ports


def test_every_cli_flag_that_names_a_setting_reaches_the_config() -> None:
    """A flag whose dest is a Config field must be passed on (--web-config-file once was not)."""
    import dataclasses

    from calico_lens import cli
    from calico_lens.config import Config

    fields = {f.name for f in dataclasses.fields(Config)}
    parser = cli.build_parser()
    subs = next(a for a in parser._actions if a.dest == "command").choices
    dests = {a.dest for sub in subs.values() for a in sub._actions} & fields
    assert dests <= set(cli._SETTINGS), dests - set(cli._SETTINGS)


@pytest.mark.parametrize("body,message", [
    ("kind: List\nitems: 5\n", "items must be a list of objects"),
    ("kind: List\nitems: [1, x]\n", "item 0 is not a Kubernetes object"),
    ("kind: List\nitems: [{kind: Pod, metadata: 5}]\n", "item 0 is not a Kubernetes object"),
    ("[1, 2]\n", "must hold a Kubernetes List"),
    ("a: [\n", "is not valid YAML"),
    ("kind: List\nitems:\n- {kind: Pod, metadata: {creationTimestamp: 2026-13-01}}\n", "is not valid YAML"),
    ("kind: List\nitems: [{<<: *nothing}]\n", "is not valid YAML"),
    ("kind: List\nitems:\n" + "".join(" " * i + "k:\n" for i in range(1, 1200)), "is not valid YAML"),  # too deep
    ('{"kind": "List", "items": [\n', "is not valid JSON"),
    ("[" * 100000, "is not valid JSON"),
])
def test_a_bad_snapshot_is_a_one_line_configuration_error(body: str, message: str, tmp_path) -> None:
    from tests.helpers import run_cli

    snap = tmp_path / "cluster.yaml"
    snap.write_text(body)
    p = run_cli("replay", "--snapshot", str(snap), "/dev/null", check=False)
    err = p.stderr.decode()
    assert p.returncode == 2 and message in err and "Traceback" not in err, err


def test_a_slow_yaml_snapshot_points_to_json(tmp_path, monkeypatch, caplog) -> None:
    import yaml
    from calico_lens import agent
    from calico_lens.demo.cluster import snapshot

    (tmp_path / "c.yaml").write_text(yaml.safe_dump(snapshot()))
    (tmp_path / "c.json").write_text(json.dumps(snapshot()))
    monkeypatch.setattr(agent, "SLOW_YAML_SECONDS", 0.0)  # every read is slow: the hint must show
    agent.load_snapshot(MetadataStore(), str(tmp_path / "c.json"))
    assert "-o json" not in caplog.text  # JSON is the quick form already
    agent.load_snapshot(MetadataStore(), str(tmp_path / "c.yaml"))
    assert "kubectl get ... -A -o json" in caplog.text


def test_a_json_snapshot_loads_as_its_yaml_does(tmp_path) -> None:
    """kubectl get -o json is the quick form of a snapshot (the stdlib reads it); it must mean what the
    same objects in YAML mean."""
    import json

    import yaml
    from calico_lens.agent import load_snapshot
    from calico_lens.demo.cluster import snapshot

    (tmp_path / "c.json").write_text(json.dumps(snapshot(), indent=1))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(snapshot()))
    stores = []
    for name in ("c.json", "c.yaml"):
        store = MetadataStore()
        assert load_snapshot(store, str(tmp_path / name)) == len(snapshot()["items"])
        stores.append(store)
    assert stores[0].all_objects() == stores[1].all_objects()
    assert stores[0].index().lookup("10.244.1.20") == stores[1].index().lookup("10.244.1.20") != \
        MetadataStore().index().lookup("10.244.1.20")
