"""Parse batches of kernel LOG lines (iptables and nftables dataplanes) and eBPF trace lines.

A batch of complete lines goes in; out come counts per *raw flow key* plus the number of lines
that were ignored (not a flow line) or malformed (looked like a flow line but could not be read).
Every line lands in exactly one of the three buckets. Given a SynTracker, a bare TCP SYN that resends
an attempt seen within its window is counted under ``retried`` instead of ``counts``.

Three paths, one result: the C scanner (``_scan.c``, built by setup.py where a compiler exists)
reads a batch line by line at C speed, counting lines per distinct key in its own table so that
Python objects are made once per key; without it, one ``findall`` runs over the whole batch (a
single C call in sre) and ``Counter`` counts identical keys; ``parse_lines`` is the plain
line-by-line reference that the other two are tested against, and what batches with eBPF trace
lines take.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from calico_lens.parse.coredns import QUERY_MARK

try:  # the C scanner (setup.py builds it where a compiler is found); same results as parse_lines
    from calico_lens.parse import _scan
except ImportError:  # pragma: no cover - exercised on machines without a compiler
    _scan = None
# What the scanner may fold (see _scan.c); None without the C scanner.
AddressClasses = getattr(_scan, "AddressClasses", None)

# (head, span, proto, dport, verdict). The span runs from "IN=" to just before "LEN=": interfaces,
# MAC, SRC and DST, which stay the same for every packet of a flow, so one capture replaces four;
# it is taken apart once per distinct key (``split_span``). eBPF lines get a span of their own
# ("BPF=<iface>-<hook> SRC=… DST=…") and a verdict.
RawKey = tuple[str, str, str, str, str]

# Wrappers a kernel line arrives in: /dev/kmsg records, syslog / journald (BSD or ISO time),
# then an optional dmesg "[ seconds]" or "[date]" stamp.
_WRAPPER = (
    r"(?:\d+,\d+,\d+,[^;\n]*;"
    r"|[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d(?:\.\d+)? \S+ kernel: "
    r"|\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)? \S+ kernel: )?"
    r"(?:\[[^\]\n]*\] )?"
)
# A LOG line: the head (everything up to the first "IN="), the span, then PROTO and DPT. DPT's value is
# taken as it stands (not only digits), so that a DPT=-5 reaches enrichment and is refused there.
# Unrolled loops ([^X]*(?:X(?!...)[^X]*)*) keep sre scanning in tight C loops.
_LOG_BODY = (
    _WRAPPER + r"([^I\n]*(?:I(?!N=)[^I\n]*)*)"
    r"(IN=[^ \n]* OUT=[^ \n]* [^L\n]*)LEN="
    r"[^P\n]*(?:P(?!ROTO=)[^P\n]*)*PROTO=([^ \n]+)(?: SPT=\d+ DPT=([^ \n]+))?"
)
LOG_RX = re.compile(_LOG_BODY)
# Over a batch: each match starts at a newline (a literal, so sre jumps between lines with a fast
# search). The long middle stretches leave "\n" out of their classes, which makes sre about half
# again as fast; ``parse_text`` then proves that no match ran past its line (the captures hold no
# newline and every " OUT=" belongs to exactly one match) or redoes the batch line by line.
# A line that mentions " OUT=" but is not a readable flow line matches the second branch: malformed.
BATCH_RX = re.compile(
    r"\n(?:" + _WRAPPER + r"([^I\n]*(?:I(?!N=)[^I\n]*)*)"
    r"(IN=[^ ]* OUT=[^ ]* [^L]*)LEN=[^P]*(?:P(?!ROTO=)[^P]*)*PROTO=([^ \n]+)(?: SPT=\d+ DPT=([^ \n]+))?"
    r"|[^\n]*?( OUT=))"
)
_SPAN_RX = re.compile(r"IN=(\S*) OUT=(\S*) (?:\S+ )*?SRC=(\S+) DST=(\S+)")
_BPF_SPAN_RX = re.compile(r"BPF=(\S+)-([IE]) SRC=(\S+) DST=(\S+)")

# eBPF dataplane (trace pipe): "cali527b0801ecb-E: policy ALLOWED proto 17 src A:P dest B:P",
# possibly behind a trace_pipe header and/or a log prefix.
EBPF_MARK = ": policy "
EBPF_RX = re.compile(
    r"(?:^|[\s:])([A-Za-z0-9_.\-]+)-([IE]): policy ([A-Za-z]+) proto (\d+) "
    r"src (\[[0-9a-fA-F:.]+\]|[0-9a-fA-F:.]+):(\d+) dest (\[[0-9a-fA-F:.]+\]|[0-9a-fA-F:.]+):(\d+)"
)
_EBPF_HEAD = re.compile(r"(?:^|\s)((?:[^\s:]|:(?! ))*: )\Z")

# A bare SYN (a connection attempt): the TCP flags between RES= and URGP= hold SYN and not ACK.
# Its source port and IP ID tell a retransmission (same 5-tuple, new ID) from the same packet
# logged again by another Log rule with the same prefix (same ID). IPv6 lines carry no ID.
_SYN_FLAGS_RX = re.compile(r"RES=0x[0-9a-fA-F]+ ((?:[A-Z]+ )*)URGP=")
_ID_RX = re.compile(r" ID=(\d+)")
_SPT_RX = re.compile(r" SPT=(\d+) DPT=")
Syn = tuple[RawKey, int, int]  # (raw key, attempt id: a hash of the raw key and the source port, IP ID)
_FNV_OFFSET, _FNV_PRIME, _MASK = 14695981039346656037, 1099511628211, (1 << 64) - 1


def attempt_id(key: RawKey, sport: str) -> int:
    """A connection attempt's id, from its raw key (a scan's probes differ in the port only) and
    source port: the C scanner's hash where it is built (so that a SYN read by either path meets the
    same tracker entry), FNV-1a without it."""
    parts = (*key[:4], sport)
    if _scan is not None:
        return _scan.attempt_id(*(part.encode("latin-1", "replace") for part in parts))
    h = _FNV_OFFSET
    for b in "\0".join(parts).encode("latin-1", "replace"):
        h = ((h ^ b) * _FNV_PRIME) & _MASK
    return h

OUT_MARK = " OUT="
VERDICTS = {"ALLOWED": "allow", "DENIED": "deny", "PASSED": "pass", "ALLOW": "allow", "DENY": "deny"}


@dataclass(slots=True)
class ParseResult:
    counts: dict[RawKey, int] = field(default_factory=dict)  # flow lines per raw key (resent SYNs not here)
    lines: int = 0
    ignored: int = 0
    malformed: int = 0
    malformed_sample: str = ""  # one bad line per batch, for a debug log
    retried: dict[RawKey, int] = field(default_factory=dict)  # resent SYNs per raw key
    dns: bool = False  # a line that is not a flow line holds "[INFO] ": the batch may hold CoreDNS lines
    syns: list[Syn] = field(default_factory=list)  # Python paths: bare TCP SYNs in line order, before the split

    @property
    def parsed(self) -> int:
        return self.lines - self.ignored - self.malformed


class PySynTracker:
    """Recent connection attempts (attempt id → first IP ID << 32 | last second seen), to tell a
    resent SYN from a new attempt: what ``_scan.SynTracker`` does, for machines without the C
    scanner. Bounded by two generations of at most limit/2 attempts: when the current one fills it
    becomes the old one, and the old one goes."""

    def __init__(self, window: float, limit: int):
        self.window = window
        self.half = max(limit // 2, 1)
        self._cur: dict[int, int] = {}
        self._old: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._cur) + len(self._old)

    def check(self, attempt: int, ip_id: int, now: int) -> bool:
        """True when this SYN resends an attempt seen within the window (same attempt, other IP ID)."""
        v = self._cur.get(attempt)
        if v is None:
            v = self._old.get(attempt)
        retry = False
        if v is None or now - (v & 0xFFFFFFFF) > self.window:
            v = ip_id << 32 | now
        else:
            retry = v >> 32 != ip_id
            v = (v >> 32) << 32 | now
        cur = self._cur
        cur[attempt] = v
        if len(cur) >= self.half:
            self._old, self._cur = cur, {}
        return retry


SynTracker = PySynTracker if _scan is None else _scan.SynTracker


def _split_retries(res: ParseResult, tracker, now: int) -> None:
    """Move the resent SYNs of ``res.syns`` from counts to retried, in line order."""
    for key, attempt, ip_id in res.syns:
        if tracker.check(attempt, ip_id, now):
            res.retried[key] = res.retried.get(key, 0) + 1
            left = res.counts[key] - 1
            if left:
                res.counts[key] = left
            else:
                del res.counts[key]


def count_lines(text: str) -> int:
    if not text:
        return 0
    return text.count("\n") + (0 if text.endswith("\n") else 1)


def split_span(span: str, workload_prefix: str = "cali") -> tuple[str, str, str, str] | None:
    """(in_iface, out_iface, src, dst) of a span, or None when it cannot be read.

    An eBPF span names the interface and the hook letter Calico logs: the *policy* direction of the
    endpoint that owns the interface (felix/bpf-gpl/log.h and cali_bpf.h). For a workload interface
    "-I" (its ingress policy) runs as packets leave the node towards the pod — iptables' OUT= side —
    and "-E" as they come from it (IN=); for a host interface "-I" sees packets arriving (IN=) and
    "-E" packets leaving (OUT=)."""
    m = _SPAN_RX.match(span)
    if m is not None:
        return m.groups()  # type: ignore[return-value]
    b = _BPF_SPAN_RX.match(span)
    if b is None:
        return None
    iface, hook, src, dst = b.groups()
    if (hook == "I") == iface.startswith(workload_prefix):
        return "", iface, src, dst
    return iface, "", src, dst


def parse_text(text: str, tracker=None, now: int = 0, classes=None) -> ParseResult:
    """Parse a batch of complete lines (newline separated, the last newline optional). With a
    ``tracker`` (a ``SynTracker``), bare SYNs it has seen within its window are counted as retried.
    With ``classes`` (an ``AddressClasses``), the C scanner folds the addresses that label alike."""
    if _scan is not None and (tracker is None or isinstance(tracker, _scan.SynTracker)):
        got = _scan.scan(text, tracker, now, classes)
        if got is not None:  # None: not a 1-byte string, or an eBPF line: take the Python path
            counts, retried, lines, ignored, malformed, sample, dns = got
            return ParseResult(counts, lines, ignored, malformed, sample, retried, dns)
    if EBPF_MARK in text:
        return parse_lines(text, tracker, now)
    return parse_batch_regex(text, tracker, now)


def parse_batch_regex(text: str, tracker=None, now: int = 0) -> ParseResult:
    """The pure-Python batch path."""
    if EBPF_MARK in text:
        return parse_lines(text, tracker, now)
    res = ParseResult(lines=count_lines(text), dns=QUERY_MARK in text)
    if not res.lines:
        return res
    found = Counter(BATCH_RX.findall("\n" + text))
    if sum(found.values()) != text.count(OUT_MARK) or any("\n" in k[1] for k in found):
        return parse_lines(text, tracker, now)  # a match ran past its line (a line cut short, a stray " OUT=")
    matched = 0
    for (head, span, proto, dport, bad), n in found.items():
        matched += n
        if bad:
            res.malformed += n
        else:
            key = (head, span, proto, dport, "")
            res.counts[key] = res.counts.get(key, 0) + n
    res.ignored = res.lines - matched
    if tracker is not None and " SYN " in text:
        for line in text.split("\n")[: res.lines]:
            m = LOG_RX.match(line) if " SYN " in line else None
            if m is not None:
                _syn(line, m, res)
        _split_retries(res, tracker, now)
    if res.malformed:
        res.malformed_sample = next((ln for ln in text.split("\n") if OUT_MARK in ln and not LOG_RX.match(ln)), "")
    return res


def parse_lines(text: str, tracker=None, now: int = 0) -> ParseResult:
    """The exact line-by-line path: same result as ``parse_text``, slower."""
    res = ParseResult(lines=count_lines(text), dns=QUERY_MARK in text)
    for line in text.split("\n")[: res.lines]:
        _classify(line, res)
    if tracker is not None:
        _split_retries(res, tracker, now)
    return res


def _classify(line: str, res: ParseResult) -> None:
    m = LOG_RX.match(line)
    if m is not None:
        head, span, proto, dport = m.groups(default="")
        key = (head, span, proto, dport, "")
        res.counts[key] = res.counts.get(key, 0) + 1
        _syn(line, m, res)
        return
    e = EBPF_RX.search(line)
    if e is not None:
        key = ebpf_key(line, e)
        if key is not None:
            res.counts[key] = res.counts.get(key, 0) + 1
            return
    if OUT_MARK in line or EBPF_MARK in line:
        res.malformed += 1
        if not res.malformed_sample:
            res.malformed_sample = line[:300]
    else:
        res.ignored += 1


def _syn(line: str, m: re.Match[str], res: ParseResult) -> None:
    """Record a bare SYN of a matched LOG line (what the C scanner's syn_fields reads)."""
    head, span, proto, dport = m.groups()
    if proto != "TCP" or dport is None:
        return
    sport = _SPT_RX.match(line, m.end(3))
    ip_id = _ID_RX.search(line, m.end(2), m.start(3))
    flags = _SYN_FLAGS_RX.search(line, m.end())
    if sport is None or ip_id is None or flags is None or len(ip_id.group(1)) > 5 or int(ip_id.group(1)) > 65535:
        return  # an IP ID is 16 bits
    tokens = flags.group(1).split()
    if "SYN" in tokens and "ACK" not in tokens:
        key = (head, span, proto, dport, "")
        res.syns.append((key, attempt_id(key, sport.group(1)), int(ip_id.group(1))))


def _strip_brackets(addr: str) -> str:
    return addr[1:-1] if addr.startswith("[") else addr


def ebpf_key(line: str, m: re.Match[str]) -> RawKey | None:
    iface, hook, verdict, proto, src, _sport, dst, dport = m.groups()
    action = VERDICTS.get(verdict.upper())
    if action is None:
        return None
    head_m = _EBPF_HEAD.search(line, 0, m.start(1))
    head = head_m.group(1) if head_m else ""
    port = dport if proto in ("6", "17", "132", "136") else ""
    # Which side of the node the interface is on depends on whether it is a workload's (the
    # configured interface prefix), which ``split_span`` is told; the span keeps the hook as written.
    span = f"BPF={iface}-{hook} SRC={_strip_brackets(src)} DST={_strip_brackets(dst)} "
    return (head, span, proto, port, action)
