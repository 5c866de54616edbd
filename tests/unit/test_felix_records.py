"""Felix's flow records in the flow stage: naming, the deciding policy, the preview, dedupe bounds,
series caps with exact totals, live connections per interval; the proto and the source registry."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from calico_lens.agent import Agent
from calico_lens.config import Config, ConfigError, load
from calico_lens.demo.felix import flow, hit, updates
from calico_lens.kube.metadata import MetadataStore
from calico_lens.metrics.table import LiveTable
from calico_lens.pipeline import FlowPipeline, RecordBatch
from calico_lens.records import aggregate_workload
from calico_lens.sources import registry
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
POD_A = ("pod", "shop", "web-6f7d8c9b5d-*")
POD_B = ("pod", "payments", "ledger-0-*")


def stage(**cfg):
    pipe = FlowPipeline(Config(**cfg), MetadataStore())
    return pipe, pipe.enable_records()


def feed(pipe: FlowPipeline, flows) -> None:
    pipe.accept("felix", RecordBatch(updates(flows)))


def rows(table, **match) -> float:
    idx = {k: table.labels.index(k) for k in match}
    return sum(v for k, v in table.snapshot() if all(k[i] == match[n] for n, i in idx.items()))


@pytest.mark.parametrize(("name", "labels", "workload"), [
    ("web-6f7d8c9b5d-*", ["app=web", "pod-template-hash=6f7d8c9b5d"], "web"),  # Deployment
    ("web-6f7d8c9b5d-*", [], "web"),  # no shared labels: the hash is judged by its shape
    ("db-*", ["app=db", "controller-revision-hash=db-7c9"], "db"),  # StatefulSet / DaemonSet
    ("backup-29112440-*", ["job-name=backup-29112440"], "backup"),  # CronJob's Job
    ("my-app-*", ["app=my-app"], "my-app"),  # a name with dashes is not a hash
    ("standalone", [], "standalone"),  # a pod without generateName
])
def test_aggregate_name_to_workload(name: str, labels: list[str], workload: str) -> None:
    assert aggregate_workload(name, labels) == workload


def test_deciding_policy_pass_end_of_tier_and_profile() -> None:
    pipe, st = stage()
    passed = hit("gnp", "platform-pass", "pass", tier="platform", index=0)
    eot = hit("eot", "", "deny", namespace="", tier="default", index=1,
              trigger=hit("np", "web-ingress", "deny", "shop", index=1))
    prof = hit("pro", "kns.shop", "allow", tier="__PROFILE__", index=2)
    feed(pipe, [
        flow(POD_A, POD_B, 443, "deny", "src", 100, enforced=[passed, eot], connections=(2, 0, 0)),
        flow(POD_A, POD_B, 80, "allow", "src", 100, enforced=[prof], connections=(1, 0, 0)),
    ])
    # the end-of-tier deny is named by the policy that selected the flow in that tier
    assert rows(st.started, policy="shop/web-ingress", tier="default", action="deny") == 2
    assert rows(st.started, policy="__PROFILE__.kns.shop", action="allow") == 1
    assert rows(st.hits, policy="platform-pass", policy_kind="gnp", action="pass") == 2
    assert rows(st.hits, policy_kind="np", action="deny") == 2
    assert rows(st.started, destination_workload="ledger-0") == 3  # a StatefulSet pod's own name


def test_preview_only_where_the_pending_verdict_differs() -> None:
    pipe, st = stage()
    allow = hit("np", "allow-web", "allow", "shop", index=0)
    feed(pipe, [
        # a staged deny before the allow: would deny what is allowed today
        flow(POD_A, POD_B, 80, "allow", "src", 1, enforced=[allow],
             pending=[hit("snp", "lockdown", "deny", "shop", index=0),
                      hit("np", "allow-web", "allow", "shop", index=1)],
             connections=(4, 0, 0)),
        # staged policy agrees with today's verdict: nothing to preview
        flow(POD_A, POD_B, 81, "allow", "src", 1, enforced=[allow], pending=[allow], connections=(7, 0, 0)),
        # a staged allow would open what is denied today
        flow(POD_A, POD_B, 82, "deny", "dst", 1, enforced=[hit("gnp", "default-deny", "deny")],
             pending=[hit("sgnp", "open-82", "allow", index=0)], connections=(3, 0, 0)),
    ])
    assert st.preview.total() == 7
    assert rows(st.preview, policy="shop/lockdown", enforced_action="allow", pending_action="deny") == 4
    assert rows(st.preview, policy="open-82", policy_kind="sgnp", enforced_action="deny",
                pending_action="allow", reporter="dst") == 3


def test_exact_totals_past_the_series_cap_and_every_record_counted_once() -> None:
    pipe, st = stage(max_series=10)
    flows = [flow(POD_A, ("pod", "shop", f"svc{i}-*"), 80, "allow", "src", 10, connections=(i + 1, 0, 0),
                  bytes_=(i, 2 * i)) for i in range(50)]
    feed(pipe, flows + flows[:5])  # five resent
    assert len(st.started) == 10
    assert st.started.total() == sum(range(1, 51))
    assert st.bytes.total() == 3 * sum(range(50))
    assert st.started.overflowed > 0
    assert pipe.out.inputs == {("felix", "parsed"): 50, ("felix", "ignored"): 5}


def test_rows_the_stage_holds_stay_exact_when_tables_drop_them() -> None:
    """The stage updates the rows of a known key in place; a row its table dropped (TTL, pod gone,
    an old interval) must not swallow later counts, and keys folded into the overflow series take
    their own rows once slots are free."""
    pipe, st = stage(max_series=3)  # two label sets and the overflow series
    keys = [("pod", "shop", f"svc{i}-*") for i in range(4)]
    feed(pipe, [flow(POD_A, k, 80, "allow", "src", 10, connections=(1, 0, 2)) for k in keys])
    assert len(st.started) == 3 and st.started.overflowed == 2
    assert st.started.remove_where(lambda k: True) == 2  # both own rows go (as on pod deletion)
    feed(pipe, [flow(POD_A, k, 80, "allow", "src", 25, connections=(10, 0, 1)) for k in reversed(keys)])
    assert st.started.total() == 2 + 40  # the overflow row kept its 2; nothing written into a dropped row
    own = {k[4]: v for k, v in st.started.snapshot() if k[4] != "__overflow__"}
    assert own == {"svc3": 10}  # svc3 was folded into the overflow series; the freed slot is its own now
    assert st.started.overflowed == 2 + 30
    # live: rows retired two intervals later are bound again when their key returns
    feed(pipe, [flow(POD_A, keys[0], 80, "allow", "src", t, connections=(0, 0, 5)) for t in (40, 55)])
    feed(pipe, [flow(POD_A, keys[1], 80, "allow", "src", 70, connections=(0, 0, 7))])
    live = {k[4]: v for k, v in st.live.snapshot()}
    assert live.get("svc1") == 7 and live.get("svc0") == 5


def test_dedupe_memory_is_bounded_and_the_bound_is_reported() -> None:
    pipe, st = stage(felix_dedupe_max=100)
    feed(pipe, [flow(POD_A, POD_B, 80, "allow", "src", 1000 + i, connections=(1, 0, 0)) for i in range(300)])
    assert st.dedupe_entries() == 100
    assert st.dedupe_evicted == 200
    # flows older than Felix can resend are forgotten without counting as evictions
    pipe2, st2 = stage()
    feed(pipe2, [flow(POD_A, POD_B, 80, "allow", "src", t, connections=(1, 0, 0)) for t in (0, 10, 2000)])
    assert st2.dedupe_entries() == 1 and st2.dedupe_evicted == 0


def test_live_connections_follow_the_newest_interval() -> None:
    t = LiveTable("live", ("a",), 100)
    t.update([(("x",), 100, 3), (("x",), 100, 2), (("y",), 100, 1)])
    assert dict(t.snapshot()) == {("x",): 5, ("y",): 1}
    t.update([(("x",), 115, 4)])  # next interval: x replaced, y still within the previous one
    assert dict(t.snapshot()) == {("x",): 4, ("y",): 1}
    t.update([(("x",), 130, 1), (("x",), 100, 9)])  # y two intervals old: gone; a late old flow ignored
    assert dict(t.snapshot()) == {("x",): 1}
    assert t.expired == 1


def test_pod_granularity_and_namespace_granularity() -> None:
    pipe, st = stage(source_granularity="namespace")
    feed(pipe, [flow(POD_A, POD_B, 80, "allow", "src", 1, connections=(1, 0, 0))])
    assert rows(st.started, source_namespace="shop", source_workload="", destination_workload="ledger-0") == 1


def test_proto_generated_code_is_current(tmp_path: Path) -> None:
    proto = ROOT / "exporter" / "calico_lens" / "proto" / "goldmane.proto"
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", str(ROOT / "exporter"),
                    f"--python_out={tmp_path}", str(proto)], check=True)
    fresh = (tmp_path / "calico_lens" / "proto" / "goldmane_pb2.py").read_text()
    assert fresh == (proto.parent / "goldmane_pb2.py").read_text(), \
        "goldmane_pb2.py is stale: regenerate it (command in goldmane.proto)"


def test_proto_field_numbers_match_calico_release() -> None:
    """The numbers Felix 3.30 … 3.33 send (goldmane/proto/api.proto on the release branches)."""
    from calico_lens.proto import goldmane_pb2 as pb

    def numbers(msg) -> dict[str, int]:
        return {f.name: f.number for f in msg.DESCRIPTOR.fields}

    assert numbers(pb.FlowUpdate) == {"flow": 1}
    assert numbers(pb.Flow) == {"Key": 1, "start_time": 2, "end_time": 3, "source_labels": 4, "dest_labels": 5,
                                "packets_in": 6, "packets_out": 7, "bytes_in": 8, "bytes_out": 9,
                                "num_connections_started": 10, "num_connections_completed": 11,
                                "num_connections_live": 12}
    assert numbers(pb.FlowKey)["reporter"] == 13 and numbers(pb.FlowKey)["policies"] == 15
    assert numbers(pb.PolicyHit) == {"kind": 1, "namespace": 2, "name": 3, "tier": 4, "action": 5,
                                     "policy_index": 6, "rule_index": 7, "trigger": 8}
    assert pb.DESCRIPTOR.services_by_name["FlowCollector"].full_name == "goldmane.FlowCollector"


# --- the source registry: one grammar for config, CLI, agent, chart and README ----------------------
@pytest.mark.parametrize(("spec", "kind", "arg"), [
    ("kmsg", "kmsg", ""), ("trace", "trace", ""), ("trace:/t/trace_pipe", "trace", "/t/trace_pipe"),
    ("file:/var/log/kern.log", "file", "/var/log/kern.log"), ("forward:127.0.0.1:24224", "forward", "127.0.0.1:24224"),
    ("forward:unix:/run/fb.sock", "forward", "unix:/run/fb.sock"), ("http::8888", "http", ":8888"),
    ("felix", "felix", "unix:/var/run/calico/flows/flows.sock"),
    ("felix:unix:/tmp/f.sock", "felix", "unix:/tmp/f.sock"),
])
def test_registry_parses(spec: str, kind: str, arg: str) -> None:
    s = registry.parse(spec)
    assert (s.kind, s.arg) == (kind, arg)


@pytest.mark.parametrize("spec", ["felix:/tmp/x.sock", "felix:unix:", "kmsg:x", "file:", "forward:host",
                                  "http:unix:/x", "forward:1.2.3.4:99999", "nope"])
def test_registry_refuses_with_every_form_named(spec: str) -> None:
    with pytest.raises(ConfigError) as e:
        load(overrides={"sources": [spec]})
    assert "felix:unix:PATH" in str(e.value) and "forward:HOST:PORT" in str(e.value)


def test_every_kind_has_a_builder_the_chart_and_the_readme_agree() -> None:
    agent = Agent(Config())
    for kind in registry.KINDS:
        assert callable(getattr(agent, f"_build_{kind.name}", None)), kind.name
    schema = json.loads((ROOT / "helm" / "calico-lens" / "values.schema.json").read_text())
    chart = schema["properties"]["agent"]["properties"]["sources"]["items"]["enum"]
    assert sorted(chart) == sorted(k.name for k in registry.KINDS if k.chart)
    readme = (ROOT / "README.md").read_text()
    for form in registry.forms():
        assert f"`{form}`" in readme, f"README does not name the source form {form}"
    help_text = subprocess.run([sys.executable, "-m", "calico_lens", "agent", "--help"], capture_output=True,
                               text=True, check=True).stdout
    assert "felix:unix:PATH" in " ".join(help_text.split())


def test_c_reader_and_protobuf_agree_on_any_bytes(monkeypatch) -> None:
    """The C reader of the per-record fields gives what protobuf decodes (or leaves the message to it),
    and the record stage counts the same with it and without it."""
    import random

    from calico_lens import records
    from calico_lens.parse import felix_flow

    if felix_flow.fields_fast is None:
        pytest.fail("the C scanner was not built (make setup builds it)", pytrace=False)
    rng = random.Random(4)
    good = list(updates([flow(POD_A, POD_B, 80 + i, "allow", "src", 10**9 + i, src_labels=[f"k{i}=v"],
                              packets=(i, 2 * i), bytes_=(3 * i, 2**40 + i), connections=(i, i // 2, 1))
                         for i in range(50)]))
    cases = good + [g[:rng.randrange(len(g))] for g in good]  # cut anywhere
    cases += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80))) for _ in range(2000)]
    cases += [g[:k] + bytes([rng.randrange(256)]) + g[k + 1:] for g in good for k in rng.sample(range(len(g)), 10)]
    taken = 0
    for raw in cases:
        fast = felix_flow.fields_fast(raw)
        if fast is None:
            continue
        taken += 1
        try:
            rec = felix_flow.decode(raw)
        except felix_flow.RecordError:
            continue  # e.g. bad UTF-8 in the key: the stage decodes every new key with protobuf and refuses it
        assert tuple(fast) == tuple(rec[:10]), raw
    assert taken >= len(good)

    def count(fast) -> tuple:
        monkeypatch.setattr(records, "fields_fast", fast)
        pipe, st = stage()
        pipe.accept("felix", RecordBatch(cases))
        return (dict(pipe.out.inputs), dict(pipe.out.source_errors),
                *(sorted(t.snapshot()) for t in (*st.tables, st.live)))

    assert count(felix_flow.fields_fast) == count(None)


# --- the C path of the record stage and the Python one agree ---------------------------------------
def _records(draw_keys: list[tuple[int, int, int, int]]) -> list[bytes]:
    """Raw FlowUpdates from (key number, interval, started, live) tuples; some garbage between."""
    out = []
    for k, interval, started, live in draw_keys:
        if k == 9:
            out.append(b"\x0a\x05garbage")  # refused: malformed
            continue
        allow = [hit("np", f"allow-{k % 3}", "allow", "shop", index=0, rule=k % 2)]
        pending = [hit("snp", "lockdown", "deny", "shop", index=0)] if k % 4 == 0 else allow
        out.extend(updates([flow(POD_A, ("pod", "shop", f"svc{k}-7d9c5b8f4-*"), 80 + k % 2, "allow",
                                 "src" if k % 2 else "dst", 1000 + 15 * interval, enforced=allow, pending=pending,
                                 src_labels=["app=a"], dst_labels=["app=b", "pod-template-hash=7d9c5b8f4"],
                                 packets=(k, 2), bytes_=(100 * k, 0), connections=(started, started // 2, live))]))
    return out


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 4), st.integers(0, 3), st.integers(0, 2)),
                         max_size=30), min_size=1, max_size=8),
       st.integers(3, 12), st.integers(2, 40), st.booleans())
def test_the_c_path_counts_as_the_python_path(batches, cap, dedupe_max, drop) -> None:
    """felix_batch (C) and the per-record Python path, each with its own dedupe, give the same tables,
    results and dedupe state: resends, new keys, intervals, refusals, the series cap, dropped rows."""
    import calico_lens.records as records

    def run(c: bool) -> tuple:
        saved = records.felix_batch, records.FlowDedupe, records.flow_ident
        if not c:  # as on a machine without a compiler (the C field reader stays: it is the same either way)
            records.felix_batch = records.FlowDedupe = records.flow_ident = None
        try:
            _, stage_ = stage(max_series=cap, felix_dedupe_max=dedupe_max)
            results = []
            for n, b in enumerate(batches):
                results.append(stage_.add(_records(b), lambda reason, k: None))
                if drop and n % 2:
                    stage_.started.remove_where(lambda k: k[4].startswith("svc1"))  # rows dropped under the stage
        finally:
            records.felix_batch, records.FlowDedupe, records.flow_ident = saved
        tables = tuple(sorted(t.snapshot()) for t in (*stage_.tables, stage_.live))
        return results, tables, stage_.dedupe_entries(), stage_.dedupe_evicted, stage_.flush_records()

    assert run(True) == run(False)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.tuples(st.just("add"), st.integers(1, 60), st.integers(0, 40)),
                          st.tuples(st.just("trim"), st.integers(0, 30), st.integers(0, 30))), max_size=300))
def test_c_flow_dedupe_equals_the_python_one(ops) -> None:
    from calico_lens.parse._scan import FlowDedupe
    from calico_lens.records import PyFlowDedupe

    c, py = FlowDedupe(), PyFlowDedupe()
    for op, a, b in ops:
        if op == "add":
            ident = a * 0x9E3779B97F4A7C15 % 2**64 or 1
            assert c.add(ident, b) == py.add(ident, b)
        else:
            c.trim(a, b)
            py.trim(a, b)
        assert (len(c), c.evicted, c.newest) == (len(py), py.evicted, py.newest)
        assert c.dump() == py.dump()


# --- what was counted, across agent restarts (the seen file) ------------------------------------
@pytest.fixture(params=["c", "python"])
def scheme(request, monkeypatch) -> str:
    import calico_lens.records as records

    if request.param == "python":  # as on a machine without a compiler
        for name in ("felix_batch", "FlowDedupe", "flow_ident"):
            monkeypatch.setattr(records, name, None)
    return request.param


def _interval(start: int) -> list:
    return [flow(POD_A, POD_B, 5432, "allow", "src", start, connections=(2, 1, 1)),
            flow(POD_B, POD_A, 8080, "allow", "dst", start, connections=(1, 1, 0))]


def test_a_new_agent_does_not_count_again_what_the_old_one_counted(scheme: str, tmp_path: Path) -> None:
    path = str(tmp_path / "seen")
    old_pipe, old = stage()
    feed(old_pipe, _interval(1000) + _interval(1015))
    assert old.save_seen(path) == 4
    pipe, new = stage()
    assert new.load_seen(path) == 4
    feed(pipe, _interval(1000) + _interval(1015) + _interval(1030))  # Felix resends its cache, then goes on
    assert pipe.out.inputs[("felix", "parsed")] == 2
    assert pipe.out.inputs[("felix", "ignored")] == 4
    assert rows(new.started) == 3


def test_seen_files_that_do_not_fit_are_refused_and_the_newest_kept(scheme: str, tmp_path: Path) -> None:
    from calico_lens.records import SeenFileError

    path = tmp_path / "seen"
    pipe, st_ = stage()
    feed(pipe, [f for t in range(1000, 1150, 15) for f in _interval(t)])  # 20 flows
    st_.save_seen(str(path))
    data = path.read_bytes()
    _, small = stage(felix_dedupe_max=6)
    assert small.load_seen(str(path)) == 6
    pipe2 = small  # the six newest are known: a resend of the newest interval is not counted
    assert pipe2.add(list(updates(_interval(1135))), lambda *_: None) == (0, 2, 0)
    for bad, why in ((data[:-3], "not a multiple"), (b"something else\n" + data[40:], "header"),
                     (data.replace(b" c " if scheme == "c" else b" py ", b" zz ", 1), "header")):
        path.write_bytes(bad)
        with pytest.raises(SeenFileError, match=why):
            stage()[1].load_seen(str(path))


def test_the_size_of_felixs_newest_flush_is_reported(scheme: str) -> None:
    """Felix pushes a flush's records into a buffer of 5,000 and drops the rest: the agent shows how
    many records the newest flush brought, so an alert can tell when it reaches that buffer."""
    def interval(start: int, n: int) -> list:
        return [flow(POD_A, ("pod", "shop", f"svc{k}-7d9c5b8f4-*"), 80, "allow", "src", start) for k in range(n)]

    pipe, st_ = stage()
    assert st_.flush_records() == 0
    feed(pipe, interval(1000, 3))
    assert st_.flush_records() == 3
    feed(pipe, interval(1015, 4)[:2])
    feed(pipe, interval(1015, 4))  # the first two again (resends): not counted twice
    assert st_.flush_records() == 4
    feed(pipe, interval(1000, 3) + interval(1000, 5)[3:])  # a late record of an older interval
    assert st_.flush_records() == 4
    assert pipe.out.inputs[("felix", "parsed")] == 3 + 4 + 2
