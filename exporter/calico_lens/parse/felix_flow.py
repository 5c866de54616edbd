"""Felix's flow records (goldmane.FlowUpdate, Calico >= 3.30.1): raw gRPC message → FlowRecord.

The key's bytes identify a flow: records are deduplicated by (key bytes, start, end) and labelled
once per distinct key, so the per-record work is one protobuf decode and a few dict lookups.
A message whose *known* fields arrive with another wire type (the pre-release shape: strings for
the endpoint-type, reporter and action enums, a flat policy list) is refused, never misread;
fields we do not know (a newer Calico) are ignored, as protobuf intends.
"""

from __future__ import annotations

from typing import NamedTuple

from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet

from calico_lens.proto import goldmane_pb2 as pb

try:  # the C reader of the per-record fields (built with the kernel-line scanner); None: protobuf only
    from calico_lens.parse._scan import FlowDedupe, felix_batch, flow_ident
    from calico_lens.parse._scan import flow_fields as fields_fast
except ImportError:  # pragma: no cover - without a compiler at install
    fields_fast = felix_batch = flow_ident = FlowDedupe = None


class RecordError(ValueError):
    """A record refused; ``reason`` is the label it is counted under."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class FlowRecord(NamedTuple):
    key: bytes  # the serialized FlowKey: identity for dedupe and the label cache
    start: int
    end: int
    packets_in: int
    packets_out: int
    bytes_in: int
    bytes_out: int
    started: int
    completed: int
    live: int
    flow: pb.Flow  # the decoded message (its key and labels are read once per distinct key)


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise RecordError("malformed", "truncated varint")
        b = buf[i]
        result |= (b & 0x7F) << shift
        i += 1
        if b < 0x80:
            return result, i
        shift += 7


def key_slice(raw: bytes) -> bytes | None:
    """The FlowKey's bytes inside a FlowUpdate, when laid out as Go's marshaller writes it (flow
    first, its key first); None otherwise (then the key is re-serialized from the decoded message)."""
    if len(raw) < 4 or raw[0] != 0x0A:
        return None
    _, i = _varint(raw, 1)
    if i >= len(raw) or raw[i] != 0x0A:
        return None
    n, j = _varint(raw, i + 1)
    return raw[j:j + n] if j + n <= len(raw) else None


def decode(raw: bytes) -> FlowRecord:
    try:
        upd = pb.FlowUpdate.FromString(raw)
    except DecodeError as e:
        raise RecordError("malformed", str(e)) from None
    if not upd.HasField("flow"):
        raise RecordError("malformed", "FlowUpdate without a flow")
    f = upd.flow
    if not f.HasField("Key"):
        raise RecordError("malformed", "Flow without a key")
    kb = key_slice(raw)
    if kb is None:
        kb = f.Key.SerializeToString(deterministic=True)
    return FlowRecord(kb, f.start_time, f.end_time, f.packets_in, f.packets_out, f.bytes_in, f.bytes_out,
                      f.num_connections_started, f.num_connections_completed, f.num_connections_live, f)


_KNOWN = {
    pb.Flow: set(range(1, 13)),
    pb.FlowKey: set(range(1, 16)),
    pb.PolicyTrace: {1, 2},
    pb.PolicyHit: set(range(1, 9)),
}


def check_shape(flow: pb.Flow) -> None:
    """Refuse a flow whose known fields came with another wire type (another release's shape)."""
    _check(flow)
    _check(flow.Key)
    pol = flow.Key.policies
    _check(pol)
    for hit in (*pol.enforced_policies, *pol.pending_policies):
        _check(hit)
        if hit.HasField("trigger"):
            _check(hit.trigger)
    for v in (*flow.source_labels, *flow.dest_labels):
        if v and "=" not in v:
            raise RecordError("unknown_shape", f"label {v[:40]!r} is not key=value")


def _check(msg) -> None:
    known = _KNOWN[type(msg)]
    for u in UnknownFieldSet(msg):
        if u.field_number in known:
            raise RecordError("unknown_shape", f"{type(msg).__name__} field {u.field_number} has wire type "
                                               f"{u.wire_type}: a pre-release or newer Calico message shape")
