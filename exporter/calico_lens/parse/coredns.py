"""Parse CoreDNS ``log`` plugin lines (the default format) in batches.

    [INFO] 10.244.1.5:43210 - 29008 "A IN example.org. udp 41 false 4096" NOERROR qr,rd,ra,ad 68 0.037990251s
    {remote}:{port} - {id} "{type} {class} {name} {proto} {size} {do} {bufsize}" {rcode} {rflags} {rsize} {duration}

IPv6 clients come as ``[::1]:50759``. The line may sit inside a CRI container-log line
(``2026-11-23T19:40:05.123456789Z stdout F [INFO] ...``) or a JSON record whose quotes are
escaped (``{"log":"[INFO] ... \\"A IN ...\\" ..."}``). Other CoreDNS lines (``[INFO] plugin/reload``,
``[ERROR] plugin/errors``) are not queries: ignored. A line that starts like a query but cannot be
read is malformed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MARK = "] "  # every CoreDNS log line has "[LEVEL] "
QUERY_MARK = "[INFO] "  # every query line has it (the C scanner looks for the same text)
# (client_ip, qtype, qname, proto, rcode, duration_seconds)
DnsKey = tuple[str, str, str, str, str, str]

_QUERY = (
    r"\[INFO\] (\[[0-9a-fA-F:.]+\]|[0-9.]+):\d+ - \d+ \\?\"([A-Za-z0-9]+) [A-Za-z0-9]+ (\S+) (udp|tcp) \d+ "
    r"(?:true|false) \d+\\?\" ([A-Z0-9]+) \S* \d+ ([0-9.]+(?:e-?\d+)?)s"
)
_QUERY_RX = re.compile(_QUERY)
# A line that claims to be a query log line: [INFO] then an address and " - ".
_LOOKS_LIKE_QUERY = re.compile(r"\[INFO\] (?:\[[0-9a-fA-F:.]*\]|[0-9.]+):\S* - ")


@dataclass(slots=True)
class DnsResult:
    queries: list[DnsKey] = field(default_factory=list)
    matched_lines: int = 0  # lines that are CoreDNS query lines (parsed) or claim to be (malformed)
    malformed: int = 0
    malformed_sample: str = ""


def has_dns(text: str) -> bool:
    return QUERY_MARK in text


def parse_dns(text: str) -> DnsResult:
    """Queries in a batch of lines; lines that are not CoreDNS queries are left to the caller."""
    res = DnsResult()
    for line in text.split("\n"):
        if QUERY_MARK not in line or " OUT=" in line:
            continue  # not CoreDNS, or a kernel flow line (those are the kernel parser's)
        m = _QUERY_RX.search(line)
        if m is not None:
            ip, qtype, name, proto, rcode, dur = m.groups()
            res.queries.append((ip.strip("[]"), qtype.upper(), name, proto, rcode, dur))
            res.matched_lines += 1
        elif _LOOKS_LIKE_QUERY.search(line):
            res.matched_lines += 1
            res.malformed += 1
            if not res.malformed_sample:
                res.malformed_sample = line[:300]
    return res
