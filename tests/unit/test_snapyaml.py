"""The C snapshot YAML reader gives exactly what PyYAML's CSafeLoader gives: the same values of the
same types, or it leaves the text to PyYAML (anchors, tags, errors), never a different answer."""

from __future__ import annotations

import datetime
import math

import pytest
import yaml
from calico_lens.kube import snapyaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def strict(v: object) -> object:
    """A value with its types spelled out: True != 1, 1.0 != 1, and NaN equals NaN."""
    if isinstance(v, dict):
        return ("dict", [(strict(k), strict(x)) for k, x in v.items()])
    if isinstance(v, list):
        return ("list", [strict(x) for x in v])
    if isinstance(v, float) and math.isnan(v):
        return ("float", "nan")
    return (type(v).__name__, v)


def pyyaml(data: bytes) -> object:
    try:
        return strict(list(yaml.load_all(data, Loader=snapyaml.LOADER)))
    except Exception as e:
        return type(e)


def fast(data: bytes) -> object:
    """The C reader's own answer: its documents, or None where it leaves the text to PyYAML."""
    docs = snapyaml._snapyaml.load_all(data, snapyaml._plain, snapyaml._FALLBACK)
    return None if docs is None else strict(docs)


def test_the_c_reader_is_built() -> None:
    assert snapyaml._snapyaml is not None, "the C snapshot YAML reader was not built: run `make setup` (libyaml-dev)"


def test_a_kubectl_list_is_read_in_c_as_pyyaml_reads_it() -> None:
    text = b"""apiVersion: v1
items:
- apiVersion: v1
  kind: Pod
  metadata:
    creationTimestamp: "2026-11-20T10:00:00Z"
    labels: {app: web, pod-template-hash: 7d4b9c6f5, "yes": "no", enabled: yes, tier: ~}
    name: web-7d4b9c6f5-x2x9k
    namespace: shop
    managedFields:
    - fieldsV1:
        f:metadata:
          f:labels: {.: {}, f:app: {}}
        f:spec:
          f:containers:
            k:{"name":"main"}:
              .: {}
              k:{"containerPort":8080,"protocol":"TCP"}: {}
      manager: kube-controller-manager
    uid: 0b7c3e9a-1c2d-4e5f-8a9b-000000000001
  spec:
    containers:
    - ports: [{containerPort: 8080, protocol: TCP}]
      args: [--ratio=0.5, "1.5", 1.5, 0x1F, 0o17, 017, 1e3, 1.0e+3, .inf, -.inf, .nan, 190:20:30, 0b101]
      resources: {requests: {cpu: 100m, memory: 128Mi}}
      note: |
        two
        lines
    hostNetwork: false
    nodeName: node-1
    priority: -5
    started: 2001-12-14t21:59:43.10-05:00
    day: 2002-12-14
  status: {podIP: 10.0.0.7, phase: Running, empty: , list: []}
kind: List
"""
    got = fast(text)
    assert got is not None, "the C reader left a plain kubectl list to PyYAML"
    assert got == pyyaml(text)
    pod = snapyaml.load_all(text)[0]["items"][0]
    assert pod["spec"]["containers"][0]["args"][3] == 31 and pod["spec"]["day"] == datetime.date(2002, 12, 14)
    assert pod["metadata"]["labels"]["enabled"] is True and pod["status"]["empty"] is None


@pytest.mark.parametrize("text", [
    b"a: &x {b: 1}\nc: *x\n",  # anchor and alias
    b"base: &b {x: 1}\nd:\n  <<: *b\n  y: 2\n",  # merge key
    b"a: !!str 5\nb: !!binary aGk=\n",  # explicit tags
    b"%YAML 1.1\n---\na: 1\n",  # a directive
    b"? [a, b]\n: 1\n",  # a collection as a key: PyYAML's own error
    b"a: 2001-13-01\n",  # a date with month 13: PyYAML's ValueError
    b"a: =\n",  # the value key
    b"a: b: c\n",  # not YAML
    b"a: 'unterminated\n",
    b"- " * 600 + b"x\n",  # deeper than the C reader goes
])
def test_what_the_c_reader_leaves_to_pyyaml(text: bytes) -> None:
    assert fast(text) is None
    want = pyyaml(text)
    try:
        got = strict(snapyaml.load_all(text))
    except Exception as e:
        got = type(e)
    assert got == want


@pytest.mark.parametrize("text", [b"", b"# only a comment\n", b"---\n", b"--- a\n--- b\n...\n", b"a: 1\n---\nb: 2\n",
                                  "\ufeffa: \u00e9t\u00e9\n".encode(), "a: 1\n".encode("utf-16"),
                                  b"a: 1\na: 2\n", b"1: x\n1.0: y\ntrue: z\n"])
def test_streams_documents_and_encodings(text: bytes) -> None:
    got = fast(text)
    assert got is not None and got == pyyaml(text)


# Every character PyYAML's implicit resolvers look at, and some they do not; and strings each of its
# resolvers matches (ints, floats, timestamps, the bool and null words), alone or with a near miss.
PLAIN = "0123456789_+-.:eExXbBcCdDaAfFiInNTtZyYoOsSuUlLrR ~<=!&*/\t"
_RESOLVED = st.sampled_from(sorted({rx.pattern for rs in yaml.resolver.Resolver.yaml_implicit_resolvers.values()
                                    for _, rx in rs})).flatmap(
    lambda p: st.from_regex(next(rx for rs in yaml.resolver.Resolver.yaml_implicit_resolvers.values()
                                 for _, rx in rs if rx.pattern == p), fullmatch=True))
scalars = (st.text(alphabet=PLAIN, max_size=24) | _RESOLVED
           | st.tuples(_RESOLVED, st.text(alphabet=PLAIN, max_size=2)).map("".join)
           | st.tuples(st.text(alphabet=PLAIN, max_size=2), _RESOLVED).map("".join))


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(scalars, min_size=1, max_size=6))
def test_plain_scalars_are_typed_as_pyyaml_types_them(values: list[str]) -> None:
    """As values, as keys and as list items: where PyYAML reads the text, the C reader gives the same
    values of the same types, or leaves the text to PyYAML."""
    for text in ("\n".join(f"k{i}: {v}" for i, v in enumerate(values)),
                 "\n".join(f"{v}: {i}" for i, v in enumerate(values)),
                 "\n".join(f"- {v}" for v in values),
                 "[" + ", ".join(values) + "]"):
        data = text.encode()
        got, want = fast(data), pyyaml(data)
        if got is not None:
            assert got == want, text


values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=True) | st.text(max_size=12)
    | st.dates() | st.datetimes(timezones=st.none() | st.just(datetime.UTC)),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8) | st.integers(-99, 99) | st.booleans(), inner, max_size=4),
    max_leaves=25)


@settings(max_examples=400, deadline=None)
@given(values, st.sampled_from([False, True, None]), st.booleans(), st.integers(20, 120))
def test_documents_pyyaml_writes_are_read_back_in_c(doc: object, flow: bool | None, unicode: bool,
                                                    width: int) -> None:
    data = yaml.safe_dump(doc, default_flow_style=flow, allow_unicode=unicode, width=width).encode()
    got = fast(data)
    if got is None:  # left to PyYAML only where safe_dump wrote an explicit tag (a split timestamp)
        assert any(getattr(e, "tag", None) for e in yaml.parse(data, Loader=snapyaml.LOADER)), data
    else:
        assert got == pyyaml(data)
