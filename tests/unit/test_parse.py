"""Parser and prefix-template behaviour on every line shape, plus property tests."""

from __future__ import annotations

import ipaddress

import pytest
from calico_lens.config import Config
from calico_lens.demo.cluster import PARTNER_NETS, snapshot
from calico_lens.kube.metadata import MetadataStore
from calico_lens.metrics import names
from calico_lens.parse import kernel_log
from calico_lens.parse.kernel_log import (
    PySynTracker,
    RawKey,
    SynTracker,
    parse_batch_regex,
    parse_lines,
    parse_text,
    split_span,
)
from calico_lens.parse.prefix import PrefixInfo, PrefixMatcher, TemplateError
from calico_lens.pipeline import FlowPipeline
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import KERNEL

LINE = ("calico-packet: IN=cali527b0801ecb OUT=eth0 MAC=ee:ee:ee:ee:ee:ee:02:49:9f:dd:c8:dd:08:00 "
        "SRC=10.244.1.5 DST=93.184.216.34 LEN=60 TOS=0x00 PREC=0x00 TTL=63 ID=58406 DF PROTO=TCP SPT=45588 "
        "DPT=443 WINDOW=64860 RES=0x00 SYN URGP=0 ")
KEY = ("calico-packet: ", "cali527b0801ecb", "eth0", "10.244.1.5", "93.184.216.34", "TCP", "443", "")


def expand(key: RawKey) -> tuple[str, ...]:
    """(head, in, out, src, dst, proto, dport, verdict) of a raw key."""
    head, span, proto, dport, verdict = key
    parts = split_span(span)
    assert parts is not None, span
    return (head, *parts, proto, dport, verdict)


@pytest.mark.parametrize("wrapped", [
    LINE,
    "[  550.891234] " + LINE,
    "6,1234,550891234,-;" + LINE,
    "Nov 23 19:40:05 node-1 kernel: [  550.891234] " + LINE,
    "Nov  3 19:40:05 node-1 kernel: " + LINE,
    "Nov 23 19:40:05.123456 node-1 kernel: " + LINE,
    "2026-11-23T19:40:05+0000 node-1 kernel: " + LINE,
    "2026-11-23T19:40:05.123456+00:00 node-1 kernel: " + LINE,
    "[Mon Nov 23 19:40:05 2026] " + LINE,
    LINE.rstrip(),
    LINE + "\r",
])
def test_wrappers(wrapped: str) -> None:
    res = parse_text(wrapped + "\n")
    assert sum(res.counts.values()) == 1 and res.lines == 1
    key = expand(next(iter(res.counts)))
    assert key[1:] == KEY[1:]
    assert PrefixMatcher("calico-packet").match(key[0]) == PrefixInfo()


def test_empty_interfaces_and_protocols() -> None:
    text = (
        "calico-packet: IN= OUT=eth0 SRC=10.0.0.1 DST=10.0.0.2 LEN=52 TOS=0x00 PREC=0x00 TTL=64 ID=1 DF "
        "PROTO=UDPLITE SPT=1 DPT=9 LEN=32\n"
        "calico-packet: IN=eth0 OUT= SRC=10.0.0.1 DST=10.0.0.2 LEN=52 PROTO=SCTP SPT=1 DPT=38412 \n"
        "calico-packet: IN=eth0 OUT= SRC=10.0.0.1 DST=10.0.0.2 LEN=52 TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=47 \n"
        "calico-packet: IN=eth0 OUT= SRC=10.0.0.1 DST=10.0.0.2 LEN=576 TOS=0x00 PREC=0xC0 TTL=64 ID=9 PROTO=ICMP "
        "TYPE=3 CODE=3 [SRC=10.0.0.2 DST=10.0.0.1 LEN=548 TOS=0x00 PREC=0x00 TTL=64 ID=2 PROTO=UDP SPT=53 "
        "DPT=4444 LEN=528 ] \n"
    )
    res = parse_text(text)
    assert res.lines == 4 and res.malformed == 0 and res.ignored == 0
    got = {(k[1], k[2], k[5], k[6]) for k in map(expand, res.counts)}
    assert got == {("", "eth0", "UDPLITE", "9"), ("eth0", "", "SCTP", "38412"), ("eth0", "", "47", ""),
                   ("eth0", "", "ICMP", "")}


def test_ebpf_trace_lines() -> None:
    text = (
        "cali527b0801ecb-E: policy ALLOWED proto 17 src 172.16.193.131:36325 dest 10.43.0.10:53\n"
        "  <idle>-0  [001] d.s.. 1234.567: bpf_trace_printk: cali527b0801ecb-I: policy DENIED proto 6 "
        "src 10.0.0.5:4000 dest 10.0.0.6:5432\n"
        "calie1-I: policy DENIED proto 6 src [fd00::1]:4000 dest [fd00::2]:80\n"
        "cali1-I: policy WEIRD proto 6 src 1.2.3.4:5 dest 6.7.8.9:10\n"
    )
    res = parse_text(text)
    assert res.lines == 4 and res.malformed == 1 and res.parsed == 3
    keys = set(map(expand, res.counts))
    # DESIGN.md's sample: a pod asks the cluster DNS service; "-E" is the pod's egress policy, so
    # the packet comes *from* the workload interface (iptables' IN= side).
    assert ("", "cali527b0801ecb", "", "172.16.193.131", "10.43.0.10", "17", "53", "allow") in keys
    # "-I" is the workload's ingress policy: the packet goes *to* the pod (OUT= side).
    assert ("bpf_trace_printk: ", "", "cali527b0801ecb", "10.0.0.5", "10.0.0.6", "6", "5432", "deny") in keys
    assert any(k[2] == "calie1" and k[3] == "fd00::1" and k[4] == "fd00::2" for k in keys)


@pytest.mark.parametrize("span,prefix,sides", [
    # Calico names the hook by the policy direction of the interface's endpoint (felix/bpf-gpl/log.h):
    # for a workload that is the opposite of the tc hook, for a host endpoint the same.
    ("BPF=cali12-I SRC=a DST=b ", "cali", ("", "cali12")),
    ("BPF=cali12-E SRC=a DST=b ", "cali", ("cali12", "")),
    ("BPF=eth0-I SRC=a DST=b ", "cali", ("eth0", "")),
    ("BPF=eth0-E SRC=a DST=b ", "cali", ("", "eth0")),
    ("BPF=bond0.100-E SRC=a DST=b ", "cali", ("", "bond0.100")),
    ("BPF=tap9-I SRC=a DST=b ", "tap", ("", "tap9")),  # FelixConfiguration interfacePrefix "tap"
    ("BPF=cali12-I SRC=a DST=b ", "tap", ("cali12", "")),
])
def test_ebpf_hook_to_interface_side(span: str, prefix: str, sides: tuple[str, str]) -> None:
    assert split_span(span, prefix) == (*sides, "a", "b")


def test_ignored_and_malformed_are_counted() -> None:
    text = "hello\n\n[  1.0] usb 1-1: new device\ncalico-packet: IN=cali1 OUT= garbage\n" + LINE + "\n"
    res = parse_text(text)
    assert (res.lines, res.parsed, res.ignored, res.malformed) == (5, 1, 3, 1)
    assert "garbage" in res.malformed_sample


@pytest.mark.parametrize("template,head,info", [
    ("calico-packet", "calico-packet: ", PrefixInfo()),
    ("%k/%p", "np/shop/allow-web: ", PrefixInfo(kind="np", namespace="shop", name="allow-web")),
    ("%k/%p", "gnp/deny-all: ", PrefixInfo(kind="gnp", name="deny-all")),
    ("%k/%p", "np/shop/allow-http-8080-from-", PrefixInfo(kind="np", namespace="shop", name="allow-http-8080-from-",
                                                          truncated=True)),
    ("%k/%p", "np/payments/deny-all-ingress:", PrefixInfo(kind="np", namespace="payments", name="deny-all-ingress",
                                                         truncated=True)),
    ("%k/%p", "np/some-very-long-namespace-n", PrefixInfo(kind="np", namespace="some-very-long-namespace-n",
                                                         truncated=True)),
    ("LOG-%t|%k/%p", "LOG-api|gnp/default.very-long", PrefixInfo(tier="api", kind="gnp", name="default.very-long",
                                                                 truncated=True)),
    ("calico|%t|%k|%n", "calico|security|gnp|block-x: ", PrefixInfo(tier="security", kind="gnp", name="block-x")),
    ("%t-%n", "t-a: ", PrefixInfo(tier="t", name="a")),
])
def test_prefix_templates(template: str, head: str, info: PrefixInfo) -> None:
    assert PrefixMatcher(template).match(head) == info


@pytest.mark.parametrize("template,head", [
    ("calico-packet", "other-packet: "),
    ("calico-packet", "calico-packet "),
    ("%k/%p", "xcalico-np/shop/allow-web-longer-than-29"),
    ("%k/%p", "short"),
])
def test_prefix_not_calico(template: str, head: str) -> None:
    assert PrefixMatcher(template).match(head) is None


def test_bad_template() -> None:
    with pytest.raises(TemplateError, match="%x"):
        PrefixMatcher("calico-%x")


# --- properties ------------------------------------------------------------------------------
corpus_lines = [ln for f in sorted(KERNEL.glob("*.kmsg")) for ln in f.read_text().splitlines()]
line_st = st.one_of(
    st.sampled_from(corpus_lines),
    st.sampled_from(corpus_lines).map(lambda s: s[: len(s) // 2]),
    st.sampled_from(corpus_lines).map(lambda s: s.replace("SRC=", "SRC=zz")),
    st.sampled_from(corpus_lines).map(lambda s: s.split(" LEN=")[0]),
    st.sampled_from(corpus_lines).map(lambda s: s.split(" PROTO=")[0] + " PROTO="),
    st.sampled_from(corpus_lines).map(lambda s: s.rstrip()),
    # TCP flags and IP IDs as retransmissions and other packets show them
    st.sampled_from(corpus_lines).map(lambda s: s.replace(" ID=", " ID=1")),
    st.sampled_from(corpus_lines).map(lambda s: s.replace("RES=0x00 SYN ", "RES=0x00 ACK SYN ")),
    st.sampled_from(corpus_lines).map(lambda s: s.replace("RES=0x00 SYN ", "RES=0x00 ")),
    st.sampled_from(corpus_lines).map(lambda s: s.replace("RES=0x00 SYN URGP=", "RES=0x0 CWR ECE SYN URGP=")),
    st.sampled_from(corpus_lines).map(lambda s: s.replace(" URGP=", "URGP=")),
    st.text(alphabet=st.characters(blacklist_characters="\n"), max_size=200),
    st.binary(max_size=200).map(lambda b: b.decode("utf-8", "replace").replace("\n", " ")),
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_parser_never_raises_on_bytes(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    res = parse_text(text)
    assert res.parsed + res.ignored + res.malformed == res.lines
    assert sum(res.counts.values()) == res.parsed


def test_lines_cut_short_do_not_swallow_the_next_line() -> None:
    text = (LINE.split(" LEN=")[0] + "\n"  # no LEN= and no PROTO=
            + LINE.split(" PROTO=")[0] + "\n"  # no PROTO=
            + "eth0: link up\n" + LINE + "\n")
    res = parse_text(text)
    assert (res.lines, res.parsed, res.ignored, res.malformed) == (4, 1, 1, 2)
    assert [expand(k)[1:] for k in res.counts] == [KEY[1:]]


def test_c_scanner_is_built() -> None:
    """make setup builds the C scanner here (gcc and the Python headers are on every machine); the
    product falls back to the regex path without it, but the tests must exercise it."""
    assert kernel_log._scan is not None, "the C scanner was not built: run `make setup` (needs gcc)"


fragment = st.lists(st.sampled_from([*"IN=OUT LEN=PROTO=SPT=DPT=[]0123456789:; -kernelZT+", "IN=", " OUT=", "LEN=",
                                     "PROTO=", " SPT=1 DPT=2", "Nov 23 19:40:05 h kernel: ", "[ 1.0] ", "5,1,2,-;",
                                     "2026-11-23T19:40:05+0000 n kernel: "]), max_size=25).map("".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(line_st, fragment), max_size=40), st.booleans(), st.integers(min_value=1, max_value=8))
def test_every_path_equals_the_line_path(lines: list[str], trailing: bool, limit: int) -> None:
    """The C scanner and the batch regex give exactly what the plain line-by-line parse gives, resent
    SYNs included (each path with its own tracker, in two batches so that state carries over)."""
    text = "\n".join(lines) + ("\n" if trailing else "")
    cut = text.find("\n", len(text) // 2) + 1 or len(text)

    def run(path, tracker) -> list[tuple]:
        out = []
        for now, part in ((100, text[:cut]), (130, text[cut:])):
            r = path(part, tracker, now)
            out.append((r.counts, r.retried, r.lines, r.ignored, r.malformed))
        return out

    want = run(parse_lines, PySynTracker(60, limit))
    assert run(parse_text, SynTracker(60, limit)) == want
    assert run(parse_batch_regex, PySynTracker(60, limit)) == want
    assert run(parse_text, None) == [(c | {k: c.get(k, 0) + n for k, n in r.items()}, {}, *rest)
                                     for c, r, *rest in want]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 3), st.integers(0, 5)), max_size=200),
       st.integers(min_value=1, max_value=9), st.sampled_from([0.0, 2.0, 60.0]))
def test_c_syn_tracker_equals_the_python_one(events: list[tuple[int, int, int]], limit: int, window: float) -> None:
    """The C tracker and the Python one answer every SYN alike, also where the bound bites."""
    c, py, now = SynTracker(window, limit), PySynTracker(window, limit), 1000
    for attempt, ip_id, step in events:
        now += step
        assert c.check(attempt * 0x9E3779B97F4A7C15 % 2**64, ip_id, now) == \
            py.check(attempt * 0x9E3779B97F4A7C15 % 2**64, ip_id, now)
        assert len(c) == len(py) <= 2 * max(limit // 2, 1)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(line_st, min_size=1, max_size=60), st.integers(min_value=2, max_value=6),
       st.sampled_from(["calico-packet", "%k/%p", "calico|%t|%k|%n"]))
def test_conservation_through_the_pipeline(lines: list[str], cap: int, template: str) -> None:
    """parsed + ignored + malformed == lines read; sum(flows) == parsed, also past the series cap."""
    cfg = Config(log_prefix=template, max_series=cap)
    pipe = FlowPipeline(cfg, MetadataStore())
    text = "\n".join(lines) + "\n"
    half = len(lines) // 2
    pipe.process("file", "\n".join(lines[:half]) + "\n" if half else "")
    pipe.process("file", "\n".join(lines[half:]) + "\n")
    counts = {r: pipe.out.inputs.get(("file", r), 0) for r in names.RESULTS}
    assert sum(counts.values()) == text.count("\n")
    assert pipe.flows.total() + pipe.retries.total() == counts["parsed"]  # a retried SYN is in one of them
    assert len(pipe.flows) <= cap


def test_syn_retries_told_from_the_same_packet_logged_twice() -> None:
    syn = ("np/shop/allow-web: IN=calia OUT=calib MAC=aa SRC=198.18.0.1 DST=198.18.0.2 LEN=60 TOS=0x00 "
           "PREC=0x00 TTL=63 ID={id} DF PROTO=TCP SPT={sport} DPT=80 WINDOW=64240 RES=0x00 {flags}URGP=0 ")
    v6 = ("np/shop/allow-web: IN=calia OUT=calib MAC=aa SRC=2001:db8::1 DST=2001:db8::2 LEN=80 TC=0 HOPLIMIT=63 "
          "FLOWLBL=1 PROTO=TCP SPT=5 DPT=80 WINDOW=64240 RES=0x00 SYN URGP=0 ")

    def run(lines: list[str], **cfg) -> tuple[float, float]:
        pipe = FlowPipeline(Config(log_prefix="%k/%p", **cfg), MetadataStore())
        for ln in lines:  # one batch each: the window spans batches
            pipe.process("kmsg", ln + "\n")
        return pipe.flows.total(), pipe.retries.total()

    first, again = syn.format(id=1, sport=5, flags="SYN "), syn.format(id=2, sport=5, flags="SYN ")
    assert run([first, again, syn.format(id=3, sport=5, flags="SYN ")]) == (1, 2)  # resent twice
    assert run([first, first]) == (2, 0)  # one packet, two Log rules with the same prefix
    assert run([first, syn.format(id=9, sport=6, flags="SYN ")]) == (2, 0)  # another source port
    assert run([first, syn.format(id=2, sport=5, flags="ACK ")]) == (2, 0)  # not a connection attempt
    assert run([first, again], syn_retry_window=0) == (2, 0)  # switched off
    assert run([v6, v6]) == (2, 0)  # IPv6 has no IP ID: a resend cannot be told from a second log point
    assert run([first, again], syn_retry_max=1) == (1, 1)
    # a SYN scan (nmap -sS) sends every probe from one source port: each port is a new flow
    scan = [first.replace("DPT=80", f"DPT={p}") for p in range(1, 6)]
    assert run(scan) == (5, 0)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(line_st, min_size=1, max_size=60), st.sampled_from(["calico-packet", "%k/%p", "calico|%t|%k|%n"]))
def test_enrichment_caches_change_no_label(lines: list[str], template: str) -> None:
    """Keys that share a span, a prefix or an address are labelled as if each were the first: a
    cache that holds one entry (evicted all the time) and a roomy one give the same tables."""
    from calico_lens.demo.cluster import snapshot

    def tables(cache: int) -> tuple:
        store = MetadataStore()
        store.load_list(snapshot())
        pipe = FlowPipeline(Config(log_prefix=template, enrich_cache_size=cache), store)
        for ln in lines:
            pipe.process("file", ln + "\n")
        pipe.process("file", "\n".join(lines) + "\n")
        return dict(pipe.flows.snapshot()), dict(pipe.retries.snapshot()), dict(pipe.out.inputs)

    assert tables(1) == tables(50000)


def test_a_c_tracker_made_without_init_is_refused_not_a_crash() -> None:
    tracker = SynTracker.__new__(SynTracker)
    with pytest.raises(TypeError, match="not initialised"):
        tracker.check(1, 2, 3)
    with pytest.raises(TypeError, match="not initialised"):
        parse_text("x\n", tracker, 0)


# --- folding external addresses in the C scanner --------------------------------------------------
def _demo_store() -> MetadataStore:
    store = MetadataStore()
    store.load_list(snapshot())
    return store


_KNOWN = sorted(_demo_store().index()._exact)
_NETS = [ipaddress.ip_network(n) for n in PARTNER_NETS]
address_st = st.one_of(
    st.sampled_from(_KNOWN),  # pods, services, nodes of the demo cluster
    st.tuples(st.sampled_from(_NETS), st.integers(0, 2**32)).map(  # inside its network sets
        lambda t: str(t[0].network_address + t[1] % t[0].num_addresses)),
    st.integers(0, 2**32 - 1).map(lambda v: ".".join(str(v >> s & 255) for s in (24, 16, 8, 0))),
    st.sampled_from(["10.255.255.254", "1.0.0.254", "198.51.100.7", "203.0.113.9", "01.2.3.4", "1.2.3.04",
                     "256.1.1.1", "1.2.3", "1.2.3.4.5", "1..2.3", "2001:db8::1", "::ffff:1.2.3.4", "", " ",
                     "1.2.3.4\t", "١.2.3.4"]),
    st.text(alphabet="0123456789.:abcf", max_size=18),
)


def _with_addresses(line: str, src: str, dst: str) -> str:
    import re

    line = re.sub(r"SRC=\S*", lambda _: "SRC=" + src, line, count=1)
    return re.sub(r"DST=\S*", lambda _: "DST=" + dst, line, count=1)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(line_st, address_st, address_st), min_size=1, max_size=40),
       st.sampled_from(["calico-packet", "%k/%p"]), st.sampled_from(["workload", "pod", "namespace"]))
def test_folding_external_addresses_changes_no_label(rows, template: str, granularity: str) -> None:
    """The C scanner writes one representative in place of every external address (a flood from a
    new address each line is then a few keys): the tables are exactly those without folding."""
    lines = [_with_addresses(ln, s, d) for ln, s, d in rows]

    def tables(fold: bool) -> tuple:
        pipe = FlowPipeline(Config(log_prefix=template, source_granularity=granularity), _demo_store())
        if not fold:
            pipe.enricher.address_classes = lambda: None  # type: ignore[method-assign]
        else:
            assert pipe.enricher.address_classes() is not None
        half = len(lines) // 2
        for part in (lines[:half], lines[half:]):
            pipe.process("file", "\n".join(part) + "\n")
        return dict(pipe.flows.snapshot()), dict(pipe.retries.snapshot()), dict(pipe.out.inputs)

    assert tables(True) == tables(False)


def test_a_flood_from_new_external_addresses_is_a_few_keys() -> None:
    pipe = FlowPipeline(Config(), _demo_store())
    classes = pipe.enricher.address_classes()
    pod = _KNOWN[0]
    text = "".join(f"calico-packet: IN=eth0 OUT=calia MAC=aa SRC={i >> 8 & 255}.{i & 255}.7.{1 + i % 200} "
                   f"DST={pod} LEN=60 PROTO=TCP SPT=1 DPT=80\n" for i in range(256, 5256))
    assert len(parse_text(text, None, 0).counts) == 5000
    counts = parse_text(text, None, 0, classes).counts
    assert sum(counts.values()) == 5000 and len(counts) == 2  # one public, one private representative
    assert {classes.fold(pod)} == {pod}  # a known endpoint is never folded
    assert Config(external_by_ip=True) and FlowPipeline(Config(external_by_ip=True), _demo_store()) \
        .enricher.address_classes() is None  # labels that name external addresses: nothing folds


@settings(max_examples=300, deadline=None)
@given(st.one_of(address_st, st.text(max_size=20)))
def test_only_what_inet_pton_reads_is_folded(text: str) -> None:
    import socket

    classes = FlowPipeline(Config(), _demo_store()).enricher.address_classes()
    if classes.fold(text) != text:
        socket.inet_pton(socket.AF_INET, text)  # raises for anything the kernel would not print
        assert text not in _KNOWN


def test_many_folded_keys_in_one_batch() -> None:
    """Folded spans of new keys are kept for the batch in 64 KiB chunks: a batch with far more than
    one chunk of them still gives every key its own span."""
    pipe = FlowPipeline(Config(), _demo_store())
    classes = pipe.enricher.address_classes()
    lines = [f"calico-packet: IN=eth{i} OUT=calia MAC=aa SRC=8.8.{i >> 8 & 255}.{i & 255} DST={_KNOWN[0]} "
             f"LEN=60 PROTO=TCP SPT=1 DPT=80" for i in range(3000)]  # ≈ 200 kB of spans, each a new key
    text = "\n".join(lines * 2) + "\n"
    folded, plain = parse_text(text, None, 0, classes).counts, parse_text(text, None, 0).counts
    assert len(folded) == len(plain) == 3000 and set(folded.values()) == {2}
    assert {k[1].replace(k[1].split("SRC=")[1].split()[0], "X") for k in plain} == \
        {k[1].replace(classes.fold("8.8.0.0"), "X") for k in folded}
