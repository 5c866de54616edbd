"""Shared test helpers: run the real CLI, read the exposition, turn kmsg records into other wrappers."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from calico_lens.metrics import names
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
KERNEL = DATA / "kernel"
CLI = [sys.executable, "-m", "calico_lens"]


def run_cli(*args: str, input: bytes | None = None, check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run([*CLI, *args], capture_output=True, input=input, timeout=120, env=env)
    if check and p.returncode != 0:
        raise AssertionError(f"calico-lens {' '.join(args)} exited {p.returncode}: {p.stderr.decode()}")
    return p


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Exposition text → {sample name: [(labels, value), ...]}."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def flows(text: str) -> Counter[tuple[str, ...]]:
    """calico_lens_flows_total as label tuples in names.FLOW_LABELS order → value."""
    c: Counter[tuple[str, ...]] = Counter()
    for labels, value in samples(text).get(names.FLOWS + "_total", []):
        c[tuple(labels[k] for k in names.FLOW_LABELS)] += int(value)
    return c


def inputs(text: str) -> dict[tuple[str, str], float]:
    return {(lab["source"], lab["result"]): v for lab, v in samples(text).get(names.INPUT_LINES + "_total", [])}


def source_errors(text: str) -> Counter:
    """calico_lens_source_errors_total as (source, reason) → count."""
    return Counter({(lab["source"], lab["reason"]): int(v)
                    for lab, v in samples(text).get(names.SOURCE_ERRORS + "_total", [])})


def case(name: str) -> tuple[str, dict, Path]:
    """(kmsg text, metadata with 'expected' as a Counter, snapshot path) of a captured corpus case."""
    meta = json.loads((KERNEL / f"{name}.json").read_text())
    meta["expected"] = Counter({tuple(r[:-1]): r[-1] for r in meta["expected"]})
    return (KERNEL / f"{name}.kmsg").read_text(), meta, KERNEL / f"{name}.snapshot.yaml"


# --- the wrappers a kernel line arrives in, made from /dev/kmsg records -----------------------
def _split(record: str) -> tuple[int, str]:
    head, _, msg = record.partition(";")
    usec = int(head.split(",")[2])
    return usec, msg


def _rewrap(records: str, fmt: Callable[[int, int, str], str]) -> str:
    """Each kmsg record as fmt(line number, microseconds since boot, message) makes it."""
    return "".join(fmt(i, *_split(r)) + "\n" for i, r in enumerate(records.splitlines()))


def as_bare(records: str) -> str:
    return _rewrap(records, lambda i, usec, msg: msg)


def as_dmesg(records: str) -> str:
    return _rewrap(records, lambda i, usec, msg: f"[{usec // 1_000_000:5d}.{usec % 1_000_000:06d}] {msg}")


def as_syslog(records: str) -> str:
    """rsyslog's kern.log: BSD time, host, 'kernel:', then the dmesg stamp."""
    return _rewrap(records, lambda i, usec, msg:
                   f"Nov 23 19:{40 + i // 60:02d}:{i % 60:02d} node-1 kernel: [{usec / 1e6:12.6f}] {msg}")


def as_journald_iso(records: str) -> str:
    """journalctl -k -o short-iso."""
    return _rewrap(records, lambda i, usec, msg: f"2026-11-23T19:40:{i % 60:02d}+0000 node-1 kernel: {msg}")


WRAPPERS = {"kmsg": lambda t: t, "bare": as_bare, "dmesg": as_dmesg, "syslog": as_syslog,
            "journald": as_journald_iso}


def stop(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Terminate a process the test started, and kill it if it does not go in time."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
