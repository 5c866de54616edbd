"""The source registry: every source kind, its spec grammar and its help, defined once.

Config validation, ``--help``, the agent's factory and the tests that check the chart's schema and
the README all read this table, so a new source is added here and nowhere else's grammar changes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

FELIX_SOCKET = "/var/run/calico/flows/flows.sock"  # felix/collector/local/server.go (release-v3.30+)
_ADDRESS = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.\-]*):(\d{1,5})$")


class SpecError(ValueError):
    """A source spec does not fit the grammar; the message lists the forms that do."""


@dataclass(frozen=True)
class SourceSpec:
    kind: str  # registry name: kmsg, trace, stdin, file, forward, http, felix
    arg: str = ""  # path or address, "" when the kind takes none (or uses its default)
    text: str = ""  # the spec as written


@dataclass(frozen=True)
class SourceKind:
    name: str
    forms: tuple[str, ...]  # the spec forms, as shown to users
    help: str
    arg: str  # "" (none), "optional-path", "path", "address", "address-or-unix", "unix"
    default: str = ""  # the argument a bare spec means
    chart: bool = False  # offered by the Helm chart's agent.sources


KINDS: tuple[SourceKind, ...] = (
    SourceKind("kmsg", ("kmsg",), "iptables/nftables LOG lines from the node's /dev/kmsg", "", chart=True),
    SourceKind("trace", ("trace", "trace:PATH"), "the eBPF dataplane's trace pipe", "optional-path", chart=True),
    SourceKind("stdin", ("stdin",), "lines on standard input", ""),
    SourceKind("file", ("file:PATH",), "a log file, followed like tail -F", "path"),
    SourceKind("forward", ("forward:HOST:PORT", "forward:unix:PATH"), "Fluent Bit's forward output",
               "address-or-unix", chart=True),
    SourceKind("http", ("http:HOST:PORT",), "Fluent Bit's http output", "address"),
    SourceKind("felix", ("felix", "felix:unix:PATH"),
               "Felix's own flow records over its local gRPC socket (Calico >= 3.30.1, flowLogsLocalReporter)",
               "unix", default="unix:" + FELIX_SOCKET, chart=True),
)
BY_NAME = {k.name: k for k in KINDS}


def forms() -> list[str]:
    return [f for k in KINDS for f in k.forms]


def usage() -> str:
    """One line per kind, for --help and error messages."""
    return "; ".join(f"{' or '.join(k.forms)} ({k.help})" for k in KINDS)


def parse(spec: str) -> SourceSpec:
    spec = spec.strip()
    name, sep, arg = spec.partition(":")
    kind = BY_NAME.get(name)
    if kind is not None and _arg_ok(kind, sep, arg):
        return SourceSpec(kind.name, arg or kind.default, spec)
    raise SpecError(f"{spec!r} is not a source; use {', '.join(forms())}")


def _arg_ok(kind: SourceKind, sep: str, arg: str) -> bool:
    if kind.arg == "":
        return not sep
    if kind.arg == "optional-path":
        return not sep or bool(arg)
    if kind.arg == "path":
        return bool(sep and arg)
    if kind.arg == "unix":
        return not sep or (arg.startswith("unix:") and len(arg) > 5)
    if kind.arg == "address-or-unix" and arg.startswith("unix:"):
        return len(arg) > 5
    m = _ADDRESS.match(arg) if sep else None
    return bool(m) and int(m.group(2)) < 65536
