"""DNS from CoreDNS logs: exact counts on a corpus of every line shape, search-path misses told
apart, a bounded top-K with a stated error bound, and conservation with flow lines mixed in."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import yaml
from calico_lens.config import Config
from calico_lens.demo.cluster import snapshot
from calico_lens.dns import zone_of
from calico_lens.kube.metadata import MetadataStore
from calico_lens.metrics import names
from calico_lens.metrics.topk import OTHER, TopK
from calico_lens.pipeline import FlowPipeline
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import DATA, KERNEL, as_bare, inputs, run_cli, samples

CORPUS = DATA / "coredns" / "queries.log"
FE, BE, CO = ("shop", "frontend"), ("shop", "backend"), ("payments", "checkout")
# (client ns, client workload, qtype, rcode, zone) → queries, worked out by hand from the corpus.
EXPECTED = Counter({
    (*FE, "A", "NOERROR", "cluster"): 2, (*FE, "AAAA", "NOERROR", "cluster"): 1,
    (*FE, "A", "NXDOMAIN", "search_miss"): 6, (*FE, "A", "NXDOMAIN", "cluster"): 1,
    (*FE, "A", "NOERROR", "external"): 2, (*FE, "AAAA", "NOERROR", "external"): 1,
    (*FE, "A", "NXDOMAIN", "external"): 1, (*FE, "A", "SERVFAIL", "external"): 3,
    (*BE, "SRV", "NOERROR", "cluster"): 1, (*BE, "A", "NOERROR", "cluster"): 2, (*BE, "A", "NXDOMAIN", "cluster"): 1,
    (*CO, "A", "NOERROR", "external"): 1, (*CO, "TXT", "REFUSED", "external"): 1,
    (*CO, "ANY", "NOTIMP", "external"): 1, (*CO, "A", "FORMERR", "external"): 1,
    ("", "private", "AAAA", "NOERROR", "external"): 1, ("", "private", "A", "NOERROR", "external"): 1,
})
DOMAINS = Counter({("api.github.com", "NOERROR"): 4, ("broken.partner.example", "SERVFAIL"): 3,
                   ("nosuch", "NXDOMAIN"): 1, ("pay.bank.example", "NOERROR"): 1, ("bank.example", "REFUSED"): 1,
                   ("bank.example", "NOTIMP"): 1, ("bad..name", "FORMERR"): 1, ("localhost", "NOERROR"): 1})


def dns_rows(text: str) -> tuple[Counter, Counter]:
    s = samples(text)
    req = Counter({tuple(lab[k] for k in names.DNS_REQUEST_LABELS): int(v)
                   for lab, v in s.get(names.DNS_REQUESTS + "_total", [])})
    dom = Counter({(lab["domain"], lab["rcode"]): int(v) for lab, v in s.get(names.DNS_DOMAINS + "_total", [])})
    return req, dom


@pytest.fixture(scope="module")
def snap(tmp_path_factory) -> str:
    p = tmp_path_factory.mktemp("dns") / "cluster.yaml"
    p.write_text(yaml.safe_dump(snapshot()))
    return str(p)


@pytest.mark.parametrize("fmt", ["auto", "coredns"])
def test_replay_corpus_exact(snap: str, fmt: str) -> None:
    out = run_cli("replay", "--snapshot", snap, "--format", fmt, str(CORPUS)).stdout.decode()
    req, dom = dns_rows(out)
    assert req == EXPECTED
    assert dom == DOMAINS
    assert inputs(out) == {("file", "parsed"): 27, ("file", "ignored"): 5, ("file", "malformed"): 2}
    s = samples(out)
    count = {(lab["client_namespace"], lab["zone"]): v for lab, v in s[names.DNS_DURATION + "_count"]}
    assert count[("shop", "search_miss")] == 6 and sum(count.values()) == 27
    slow = {lab["le"]: v for lab, v in s[names.DNS_DURATION + "_bucket"]
            if lab["client_namespace"] == "shop" and lab["zone"] == "external"}
    assert slow["1.0"] == 4 and slow["2.5"] == 7 and slow["+Inf"] == 7  # the three SERVFAILs took 2 s


def test_kernel_format_ignores_dns(snap: str) -> None:
    out = run_cli("replay", "--snapshot", snap, "--format", "kernel", str(CORPUS)).stdout.decode()
    assert dns_rows(out) == (Counter(), Counter())
    assert inputs(out)[("file", "ignored")] == 34


@pytest.mark.parametrize("name,rcode,zone", [
    ("backend.shop.svc.cluster.local.", "NOERROR", "cluster"),
    ("backend.shop.svc.cluster.local", "NXDOMAIN", "cluster"),  # a service that is not there: a real miss
    ("api.github.com.shop.svc.cluster.local.", "NXDOMAIN", "search_miss"),  # FQDN without dot + search path
    ("api.github.com.svc.cluster.local.", "NXDOMAIN", "search_miss"),
    ("api.github.com.cluster.local", "NXDOMAIN", "search_miss"),
    ("github.com.svc.cluster.local.", "NXDOMAIN", "search_miss"),  # "com" is no namespace
    ("nosuch.shop.svc.cluster.local.", "NXDOMAIN", "cluster"),  # short name, first search attempt
    ("nosuch.svc.cluster.local.", "NXDOMAIN", "search_miss"),
    ("nosuch.", "NXDOMAIN", "external"),  # the short name as asked: a real miss
    ("api.github.com.", "NOERROR", "external"),  # FQDN with the trailing dot: asked directly
    ("api.github.com", "NXDOMAIN", "external"),
    ("_http._tcp.web.shop.svc.cluster.local.", "NXDOMAIN", "cluster"),
    ("10-244-1-10.shop.pod.cluster.local.", "NXDOMAIN", "cluster"),
    ("cluster.local.", "NOERROR", "cluster"),
    ("web.shop.svc.corp.internal.", "NXDOMAIN", "external"),  # another cluster domain is not ours
])
def test_zones(name: str, rcode: str, zone: str) -> None:
    assert zone_of(name, rcode, "cluster.local", frozenset({"shop", "default"})) == zone


def test_custom_cluster_domain() -> None:
    ns = frozenset({"shop"})
    assert zone_of("web.shop.svc.corp.internal.", "NOERROR", "corp.internal", ns) == "cluster"
    assert zone_of("api.github.com.shop.svc.corp.internal", "NXDOMAIN", "corp.internal", ns) == "search_miss"
    assert zone_of("web.shop.svc.cluster.local.", "NXDOMAIN", "corp.internal", ns) == "external"


def test_topk_bounded_with_error_bound() -> None:
    """1M distinct domains plus heavy hitters: the table stays at its capacity; every domain with
    more than N/capacity queries is tracked; its exposed count is within N/capacity below the truth
    and never above; the rows sum to N."""
    rng = random.Random(5)
    cap = 100
    top = TopK(cap)
    heavy = {f"heavy{i}.example": 20_000 - 1_500 * i for i in range(10)}
    truth: Counter = Counter()
    stream = [f"d{i}.example" for i in range(1_000_000)]
    for d, n in heavy.items():
        stream += [d] * n
    rng.shuffle(stream)
    before: dict = {}
    for i in range(0, len(stream), 50_000):
        batch = Counter((d, "NOERROR") for d in stream[i:i + 50_000])
        truth.update(batch)
        top.add_counts(batch.items())
        assert len(top) <= cap
        snap = top.snapshot()
        # __other__ only grows; a domain's row only grows while it stays tracked (one that is
        # evicted and comes back starts again, which Prometheus reads as a counter reset).
        assert all(snap[k] >= v for k, v in before.items() if k[0] == OTHER)
        before = snap
    total = sum(truth.values())
    assert top.total == total and sum(before.values()) == total
    bound = total / cap
    for d, n in heavy.items():
        if n > bound:
            exposed = before.get((d, "NOERROR"))
            assert exposed is not None, d
            assert n - bound <= exposed <= n


mixed_lines = st.sampled_from(
    CORPUS.read_text().splitlines() + as_bare((KERNEL / "nftables-full.kmsg").read_text()).splitlines()[:40])


@settings(max_examples=100, deadline=None)
@given(st.lists(mixed_lines, min_size=1, max_size=80), st.integers(min_value=2, max_value=5))
def test_conservation_with_flows_and_dns(lines: list[str], cap: int) -> None:
    store = MetadataStore()
    store.load_list(snapshot())
    pipe = FlowPipeline(Config(log_prefix="%k/%p", max_series=cap), store)
    pipe.process("file", "\n".join(lines) + "\n")
    counts = {r: pipe.out.inputs.get(("file", r), 0) for r in names.RESULTS}
    assert sum(counts.values()) == len(lines)
    assert pipe.flows.total() + pipe.dns.requests.total() == counts["parsed"]
    dns_total = pipe.dns.requests.total()
    assert pipe.dns.hist.total() == dns_total
    assert len(pipe.dns.requests) <= cap
