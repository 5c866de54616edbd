"""The Fluent Bit Forward receiver: every mode, acks, auth, limits, the real fluent-logger client,
and the Fluent Bit parser regexes run with Oniguruma."""

from __future__ import annotations

import re
import socket
import time

import msgpack
import onigurumacffi
import pytest
import yaml
from calico_lens.metrics import names
from calico_lens.parse.kernel_log import parse_text, split_span
from fluent import sender as fluent_sender

from tests.e2e.agent_proc import AgentProcess
from tests.forward_client import ForwardClient, entry
from tests.helpers import KERNEL, ROOT, as_bare, case, flows, inputs, source_errors
from tests.prom import Prometheus, free_port, wait_for_listener

RECORDS, META, SNAP = case("iptables-cut")
LINES = as_bare(RECORDS).splitlines()
TOTAL = sum(META["expected"].values())


def agent(tmp_path, *extra: str, config: dict | None = None, address: str | None = None) -> AgentProcess:
    addr = address or f"127.0.0.1:{free_port()}"
    args = ["--source", f"forward:{addr}", "--snapshot", str(SNAP), "--log-prefix", META["log_prefix"], *extra]
    if config:
        cfg = tmp_path / "agent.yaml"
        cfg.write_text(yaml.safe_dump(config))
        args += ["--config", str(cfg)]
    a = AgentProcess(*args)
    a.forward = addr  # type: ignore[attr-defined]
    return a


def test_every_mode_counts_exactly(tmp_path) -> None:
    with agent(tmp_path) as a:
        wait_for_listener(a.forward)
        c = ForwardClient(a.forward)
        n = len(LINES)
        keys = ["log", "msg", "message", "MESSAGE"]
        third = n // 3
        # Message mode, one record per frame, each with a chunk id → one ack each.
        for i, line in enumerate(LINES[:third]):
            c.message("kernel", {keys[i % 4]: line, "priority": 5}, chunk=f"m{i}")
            assert c.ack() == {"ack": f"m{i}"}
        # Forward mode with Fluent Bit 5's metadata entries.
        c.forward("kernel", [entry({"msg": ln}, metadata=True) for ln in LINES[third:2 * third]], chunk="fwd")
        assert c.ack() == {"ack": "fwd"}
        rest = LINES[2 * third:]
        half = len(rest) // 2
        c.packed("kernel", [entry({"log": ln}) for ln in rest[:half]], chunk="packed")
        assert c.ack() == {"ack": "packed"}
        c.packed("kernel", [entry({"MESSAGE": ln}, metadata=True) for ln in rest[half:]]
                 + [entry({"other": "no message here"}), entry({"log": "systemd[1]: Started."})],
                 chunk="gz", compress=True)
        assert c.ack() == {"ack": "gz"}
        # Acked means counted: no waiting needed before reading the metrics.
        text = a.metrics()
        c.close()
    assert flows(text) == META["expected"]
    got = inputs(text)
    assert got[("forward", "parsed")] == TOTAL
    assert got[("forward", "ignored")] == n - TOTAL + 2
    assert got[("forward", "malformed")] == 0


def test_fluent_logger_client_and_prometheus(tmp_path) -> None:
    with agent(tmp_path) as a, Prometheus([a.address]) as prom:
        wait_for_listener(a.forward)
        host, _, port = a.forward.rpartition(":")
        s = fluent_sender.FluentSender("calico", host=host, port=int(port), nanosecond_precision=True)
        for line in LINES:
            assert s.emit("kernel", {"log": line}), s.last_error
        s.close()
        prom.wait_value(f"sum({names.FLOWS}_total)", TOTAL)
        prom.wait_value(f'sum({names.INPUT_LINES}_total{{source="forward",result="parsed"}})', TOTAL)


def test_failed_chunk_is_not_acked_and_retry_is_not_lost(tmp_path) -> None:
    with agent(tmp_path) as a:
        wait_for_listener(a.forward)
        c = ForwardClient(a.forward)
        bad = msgpack.packb(["kernel", b"\xc1\xc1 not msgpack", {"chunk": "bad", "size": 1}], use_bin_type=True)
        c.send_raw(bad)
        with pytest.raises((EOFError, ConnectionError)):
            c.ack()
        c.close()
        # A chunk whose connection drops before the ack is read is sent again by Fluent Bit.
        chunk = [entry({"log": ln}) for ln in LINES]
        c1 = ForwardClient(a.forward)
        c1.packed("kernel", chunk, chunk="retry")
        c1.close()
        c2 = ForwardClient(a.forward)
        c2.packed("kernel", chunk, chunk="retry")
        assert c2.ack() == {"ack": "retry"}
        c2.close()
        text = a.metrics()
    parsed = inputs(text)[("forward", "parsed")]
    assert parsed in (TOTAL, 2 * TOTAL)  # at least once: never lost
    assert source_errors(text)[("forward", "malformed_frame")] == 1


def test_shared_key_and_users(tmp_path) -> None:
    cfg = {"forward_shared_key": "s3cret", "forward_users": {"fluent": "bit"}}
    with agent(tmp_path, config=cfg) as a:
        wait_for_listener(a.forward)
        good = ForwardClient(a.forward, shared_key="s3cret", user="fluent", password="bit")
        assert good.pong[:3] == ["PONG", True, ""]
        good.forward("kernel", [entry({"log": LINES[1]})], chunk="ok")
        assert good.ack() == {"ack": "ok"}
        good.close()
        for key, user, pw in (("wrong", "fluent", "bit"), ("s3cret", "fluent", "nope"), ("s3cret", "", "")):
            bad = ForwardClient(a.forward, shared_key=key, user=user, password=pw)
            assert bad.pong[1] is False
            bad.close()
        time.sleep(0.2)
        text = a.metrics()
    assert source_errors(text)[("forward", "auth_failed")] == 3
    assert inputs(text)[("forward", "parsed")] + inputs(text)[("forward", "ignored")] == 1


def test_garbage_huge_and_slow_clients_are_cut_off(tmp_path) -> None:
    cfg = {"forward_max_frame_bytes": 65536, "forward_frame_timeout": "1s", "forward_idle_timeout": "3s"}
    with agent(tmp_path, config=cfg) as a:
        wait_for_listener(a.forward)
        g = ForwardClient(a.forward)
        g.send_raw(b"\xc1" * 64)  # 0xc1 is never valid msgpack
        with pytest.raises((EOFError, ConnectionError)):
            g.ack()
        h = ForwardClient(a.forward)
        big = msgpack.packb(["kernel", [entry({"log": "x" * 200_000})], {"chunk": "big"}])
        with pytest.raises((EOFError, ConnectionError, BrokenPipeError)):
            h.send_raw(big)
            h.ack()
        s = ForwardClient(a.forward)
        frame = msgpack.packb(["kernel", [entry({"log": LINES[1]})], {"chunk": "slow"}])
        # A slow client: one byte at a time, slower than the frame timeout allows.
        with pytest.raises((EOFError, ConnectionError, BrokenPipeError)):
            for b in frame:
                s.send_raw(bytes([b]))
                time.sleep(0.1)
            s.ack()
        # Meanwhile, and after, other connections are served.
        ok = ForwardClient(a.forward)
        ok.forward("kernel", [entry({"log": ln}) for ln in LINES], chunk="fine")
        assert ok.ack() == {"ack": "fine"}
        ok.close()
        text = a.metrics()
    errs = source_errors(text)
    assert errs[("forward", "malformed_msgpack")] == 1
    assert errs[("forward", "frame_too_large")] == 1
    assert errs[("forward", "slow_client")] == 1
    assert inputs(text)[("forward", "parsed")] == TOTAL


def test_unix_socket_listener(tmp_path) -> None:
    path = tmp_path / "forward.sock"
    with agent(tmp_path, address=f"unix:{path}") as a:
        end = time.monotonic() + 10
        while not path.exists() and time.monotonic() < end:
            time.sleep(0.05)
        c = ForwardClient(f"unix:{path}")
        c.forward("kernel", [entry({"msg": ln}) for ln in LINES], chunk="u")
        assert c.ack() == {"ack": "u"}
        c.close()
        assert flows(a.metrics()) == META["expected"]


def test_fluentbit_parser_regex_matches_the_agent_parser() -> None:
    """Oniguruma (Fluent Bit's regex engine) extracts the same fields as the agent's parser."""
    doc = yaml.safe_load((ROOT / "fluentbit" / "parsers.yaml").read_text())
    parser = next(p for p in doc["parsers"] if p["name"] == "calico_flow")
    names_in_order = re.findall(r"\(\?<(\w+)>", parser["regex"])
    rx = onigurumacffi.compile(parser["regex"])
    checked = 0
    for f in sorted(KERNEL.glob("*.kmsg")):
        for line in as_bare(f.read_text()).splitlines():
            ours = parse_text(line + "\n")
            m = rx.search(line)
            if not ours.counts:
                assert m is None or " OUT=" in line, line
                continue
            ((head, span, proto, dport, _),) = ours.counts
            assert m is not None, line
            got = {n: m.group(i + 1) for i, n in enumerate(names_in_order)}
            in_if, out_if, src, dst = split_span(span)
            assert (got["prefix"], got["in_iface"], got["out_iface"], got["src"], got["dst"], got["proto"],
                    got["dport"] or "") == (head, in_if, out_if, src, dst, proto, dport), line
            checked += 1
    assert checked > 100


def test_pipelines_are_fluentbit_yaml() -> None:
    for f in [*sorted((ROOT / "fluentbit").glob("kernel-*.yaml")), ROOT / "fluentbit" / "coredns.yaml"]:
        doc = yaml.safe_load(f.read_text())
        out = doc["pipeline"]["outputs"][0]
        assert out["name"] == "forward" and out["require_ack_response"] is True, f
        assert f.name == "coredns.yaml" or doc["service"]["parsers_file"] == "parsers.yaml"
        assert any(i.get("storage.type") == "filesystem" for i in doc["pipeline"]["inputs"]), f
        grep = next(x for x in doc["pipeline"]["filters"] if x["name"] == "grep")
        _key, pattern = grep["regex"].split(" ", 1)
        rx = onigurumacffi.compile(pattern)
        if f.name == "coredns.yaml":
            from tests.unit.test_dns import CORPUS

            kept = [ln for ln in CORPUS.read_text().splitlines() if ln.startswith("[INFO]") and rx.search(ln)]
            # 23 query lines, and the cut-off one, which the agent then reports as malformed.
            assert len(kept) == 24 and rx.search("[INFO] plugin/reload: Running configuration") is None
        else:
            assert rx.search(LINES[1]) is not None and rx.search("usb 1-1: new device") is None


def test_coredns_lines_through_forward(tmp_path) -> None:
    """CoreDNS lines as Fluent Bit's tail + cri parser ship them (the line in `log`) are counted
    exactly as replay counts them."""
    from calico_lens.demo.cluster import snapshot

    from tests.unit.test_dns import CORPUS, DOMAINS, EXPECTED, dns_rows

    snap = tmp_path / "cluster.yaml"
    snap.write_text(yaml.safe_dump(snapshot()))
    addr = f"127.0.0.1:{free_port()}"
    with AgentProcess("--source", f"forward:{addr}", "--snapshot", str(snap)) as a:
        wait_for_listener(addr)
        c = ForwardClient(addr)
        records = [entry({"log": ln, "stream": "stdout", "logtag": "F"}) for ln in CORPUS.read_text().splitlines()]
        c.packed("coredns", records, chunk="dns", compress=True)
        assert c.ack() == {"ack": "dns"}
        c.close()
        text = a.metrics()
    assert dns_rows(text) == (EXPECTED, DOMAINS)
    assert inputs(text) == {("forward", "parsed"): 27, ("forward", "ignored"): 5, ("forward", "malformed"): 2}


def test_tls_listener(tmp_path) -> None:
    """With forward_tls_cert/key the listener speaks TLS: a TLS client is served, a plain one is cut off."""
    import ssl
    import subprocess as sp

    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    sp.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
            "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    with agent(tmp_path, config={"forward_tls_cert": str(cert), "forward_tls_key": str(key)}) as a:
        wait_for_listener(a.forward)
        host, _, port = a.forward.rpartition(":")
        ctx = ssl.create_default_context(cafile=str(cert))
        ctx.check_hostname = False
        with socket.create_connection((host, int(port)), timeout=5) as raw, ctx.wrap_socket(raw) as tls:
            tls.sendall(msgpack.packb(["kernel", [entry({"log": ln}) for ln in LINES], {"chunk": "tls"}]))
            unpacker = msgpack.Unpacker(raw=False)
            while True:
                unpacker.feed(tls.recv(4096))
                try:
                    assert next(unpacker) == {"ack": "tls"}
                    break
                except StopIteration:
                    continue
        plain = ForwardClient(a.forward)
        plain.send_raw(msgpack.packb(["kernel", [entry({"log": LINES[1]})], {"chunk": "plain"}]))
        with pytest.raises((EOFError, ConnectionError)):
            plain.ack()
        time.sleep(0.3)
        text = a.metrics()
    assert inputs(text)[("forward", "parsed")] == TOTAL
    assert source_errors(text)[("forward", "tls_error")] == 1


def test_a_chunk_cut_short_is_refused_not_acked(tmp_path) -> None:
    """A PackedForward chunk whose last entry is cut, or a gzip member cut in half, was acked with
    records counted nowhere. It is refused now (no ack, counted) and a whole resend counts fully.
    A chunk past a limit (more than a million entries) is refused and counted under its own reason."""
    import gzip

    stream = b"".join(msgpack.packb(entry({"log": ln})) for ln in LINES)
    cut = [["kernel", stream[:-5], {"chunk": "c1"}],
           ["kernel", gzip.compress(stream)[: len(gzip.compress(stream)) // 2], {"chunk": "c2", "compressed": "gzip"}],
           ["kernel", gzip.compress(b"\x92\x00\x80" * 1000)[:40], {"chunk": "c3", "compressed": "gzip"}],
           ["kernel", gzip.compress(b"\x92\x00\x80" * 1_000_001, 9), {"chunk": "c4", "compressed": "gzip"}]]
    with agent(tmp_path) as a:
        wait_for_listener(a.forward)
        for frame in cut:
            c = ForwardClient(a.forward)
            c.send_raw(msgpack.packb(frame, use_bin_type=True))
            with pytest.raises((EOFError, ConnectionError)):
                c.ack()
            c.close()
        c = ForwardClient(a.forward)
        c.send_raw(msgpack.packb(["kernel", gzip.compress(stream), {"chunk": "whole", "compressed": "gzip"}],
                                 use_bin_type=True))
        assert c.ack() == {"ack": "whole"}
        c.close()
        text = a.metrics()
    assert source_errors(text)[("forward", "malformed_frame")] == 3
    assert source_errors(text)[("forward", "too_many_entries")] == 1
    assert inputs(text)[("forward", "parsed")] == TOTAL  # only the whole chunk, every record of it


def test_refusals_that_were_not_counted_are_now(tmp_path) -> None:
    """A map keyed by a list (no dict can hold it) and a client that never reads its acks: each is
    refused with its reason counted, and the receiver keeps serving others."""
    with agent(tmp_path) as a:
        wait_for_listener(a.forward)
        host, port = a.forward.rsplit(":", 1)
        s = socket.create_connection((host, int(port)))
        s.sendall(b"\x93\xa6kernel\xce\x00\x00\x00\x01\x81\x91\x01\xa1x")  # ["kernel", 1, {[1]: "x"}]
        s.settimeout(5)
        assert s.recv(10) == b""  # closed, not hung, not a crash of the receiver
        s.close()
        # A client that sends chunks with long ids and never reads the acks: the agent's send buffer
        # fills and it gives up on the connection, after counting what it received.
        greedy = socket.socket()
        greedy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        greedy.connect((host, int(port)))
        greedy.settimeout(0.5)
        frame = msgpack.packb(["kernel", [entry({"log": "not a flow line"})], {"chunk": "c" * 60000, "size": 1}])
        sent = 0
        end = time.monotonic() + 30
        while time.monotonic() < end and source_errors(a.metrics())[("forward", "ack_not_read")] == 0:
            try:
                greedy.sendall(frame)
                sent += 1
            except OSError:
                time.sleep(0.2)
        errors = source_errors(a.metrics())
        greedy.close()
        assert errors[("forward", "malformed_msgpack")] == 1
        assert errors[("forward", "ack_not_read")] == 1, (sent, errors)
        c = ForwardClient(a.forward)  # others are still served
        c.forward("kernel", [entry({"log": LINES[0]})], chunk="after")
        assert c.ack() == {"ack": "after"}
        c.close()


def test_a_peer_holding_every_slot_does_not_lock_out_a_good_client(tmp_path) -> None:
    """On a node every client shares 127.0.0.1: one peer opening more idle connections than there are
    slots must not keep Fluent Bit out. The longest-idle connection gives up its slot (counted)."""
    with agent(tmp_path, config={"forward_max_connections": 8}) as a:
        wait_for_listener(a.forward)
        host, port = a.forward.rsplit(":", 1)
        hogs = []
        for _ in range(40):
            hogs.append(socket.create_connection((host, int(port))))
            time.sleep(0.01)
        time.sleep(0.3)
        ok = 0
        for i in range(10):
            c = ForwardClient(a.forward)
            c.forward("kernel", [entry({"log": LINES[0]})], chunk=f"good{i}")
            ok += c.ack() == {"ack": f"good{i}"}
            c.close()
        for h in hogs:
            h.close()
        assert ok == 10
        assert source_errors(a.metrics())[("forward", "evicted_idle")] >= 32


def test_frames_being_read_share_a_memory_budget(tmp_path) -> None:
    """Big frames read at once on many connections are bounded together: past
    forward_max_buffered_bytes a connection is closed unacked and counted, the others are counted
    whole, and the refused chunk sent again later counts exactly once."""
    import threading

    stream = b"".join(msgpack.packb(entry({"log": ln})) for ln in LINES)
    big = stream * (400_000 // len(stream) + 1)  # each frame ~400 kB; the budget holds one and a half
    copies = len(big) // len(stream)
    cfg = {"forward_max_buffered_bytes": 2 * len(big) * 3 // 2, "forward_max_connections": 8}
    with agent(tmp_path, config=cfg) as a:
        wait_for_listener(a.forward)
        clients = [ForwardClient(a.forward, timeout=30) for _ in range(4)]
        for c in clients:  # every frame begun before any ends: they are all held at once
            c.send_raw(msgpack.packb(["kernel", big, {"chunk": "b"}], use_bin_type=True)[:-100])
        time.sleep(0.5)
        answers: list = []

        def finish(c: ForwardClient) -> None:
            try:
                c.send_raw(msgpack.packb(["kernel", big, {"chunk": "b"}], use_bin_type=True)[-100:])
                answers.append(c.ack())
            except (EOFError, OSError):
                answers.append("refused")
            c.close()

        threads = [threading.Thread(target=finish, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        acked = answers.count({"ack": "b"})
        assert 1 <= acked < 4 and answers.count("refused") == 4 - acked, answers
        c = ForwardClient(a.forward, timeout=30)  # the budget is free again: a resend is taken
        c.send_raw(msgpack.packb(["kernel", big, {"chunk": "again"}], use_bin_type=True))
        assert c.ack() == {"ack": "again"}
        c.close()
        text = a.metrics()
    assert source_errors(text)[("forward", "over_memory_budget")] == 4 - acked
    assert inputs(text)[("forward", "parsed")] == TOTAL * copies * (acked + 1)
