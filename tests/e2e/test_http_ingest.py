"""Fluent Bit's http output into the agent: every body format it sends (msgpack, json, json_lines,
json_stream; gzip), the 200 only after counting, basic auth, and counted refusals."""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import socket
import subprocess
import time

import msgpack
import pytest
import requests
import yaml

from tests.e2e.agent_proc import AgentProcess
from tests.helpers import as_bare, case, flows, inputs, source_errors
from tests.prom import free_port, wait_for_listener

RECORDS, META, SNAP = case("iptables-cut")
LINES = as_bare(RECORDS).splitlines()
TOTAL = sum(META["expected"].values())
FLOW = next(line for line in LINES if " OUT=" in line)  # one line that is a flow
NOW = 1_700_000_000.25


def agent(tmp_path, config: dict | None = None) -> AgentProcess:
    addr = f"127.0.0.1:{free_port()}"
    args = ["--source", f"http:{addr}", "--snapshot", str(SNAP), "--log-prefix", META["log_prefix"]]
    if config:
        (tmp_path / "agent.yaml").write_text(yaml.safe_dump(config))
        args += ["--config", str(tmp_path / "agent.yaml")]
    a = AgentProcess(*args)
    scheme = "https" if config and config.get("forward_tls_cert") else "http"
    a.ingest = f"{scheme}://{addr}/"  # type: ignore[attr-defined]
    wait_for_listener(addr)  # a bare connect: no request, so nothing to refuse or count
    return a


def as_msgpack(lines: list[str], metadata_shape: bool = False) -> bytes:
    """A Fluent Bit chunk: entries back to back; EventTime ext type 0, Fluent Bit 5's metadata shape."""
    t = msgpack.ExtType(0, int(NOW).to_bytes(4, "big") + (250_000_000).to_bytes(4, "big"))
    stamp = [t, {}] if metadata_shape else t
    return b"".join(msgpack.packb([stamp, {"log": line}]) for line in lines)


def test_every_format_counts_exactly(tmp_path) -> None:
    n = len(LINES)
    q = n // 5
    parts = [LINES[:q], LINES[q:2 * q], LINES[2 * q:3 * q], LINES[3 * q:4 * q], LINES[4 * q:]]
    bodies = [
        # format msgpack (the output's default), both entry shapes, one of them gzip-compressed
        (as_msgpack(parts[0]), {"Content-Type": "application/msgpack"}),
        (gzip.compress(as_msgpack(parts[1], metadata_shape=True)),
         {"Content-Type": "application/msgpack", "Content-Encoding": "gzip"}),
        # format json: one array; json_date_key "date" as Fluent Bit writes it
        (json.dumps([{"date": NOW, "message": ln} for ln in parts[2]]).encode(), {"Content-Type": "application/json"}),
        # format json_lines
        ("".join(json.dumps({"date": NOW, "msg": ln}) + "\n" for ln in parts[3]).encode(),
         {"Content-Type": "application/x-ndjson"}),
        # format json_stream: no separator at all; plus two records without a line (ignored)
        ("".join(json.dumps({"date": NOW, "MESSAGE": ln}) for ln in parts[4]).encode()
         + b'{"date": 1, "other": "x"}{"date": 2}', {"Content-Type": "application/json"}),
    ]
    with agent(tmp_path) as a:
        for body, headers in bodies:
            r = requests.post(a.ingest, data=body, headers=headers, timeout=10)  # type: ignore[attr-defined]
            assert r.status_code == 200, r.text
        # The 200 came after counting: no waiting needed before reading /metrics.
        text = a.metrics()
    assert inputs(text)[("http", "parsed")] + inputs(text).get(("http", "ignored"), 0) == n + 2
    assert flows(text) == META["expected"]
    assert sum(flows(text).values()) == TOTAL
    assert not source_errors(text)


def test_refusals_are_counted_and_the_agent_keeps_serving(tmp_path) -> None:
    config = {"forward_users": {"fluent": "s3cret"}, "forward_max_frame_bytes": 4096}
    auth = {"Authorization": "Basic " + base64.b64encode(b"fluent:s3cret").decode()}
    with agent(tmp_path, config) as a:
        url = a.ingest  # type: ignore[attr-defined]
        body = json.dumps([{"log": FLOW}]).encode()
        assert requests.post(url, data=body, timeout=5).status_code == 401
        bad = {"Authorization": "Basic " + base64.b64encode(b"fluent:wrong").decode()}
        assert requests.post(url, data=body, headers=bad, timeout=5).status_code == 401
        assert requests.post(url, data=b"[{not json", headers=auth, timeout=5).status_code == 400
        assert requests.post(url, data=b'["a string, not a record"]', headers=auth, timeout=5).status_code == 400
        assert requests.post(url, data=b"\x1f\x8b\x08 not gzip at all", timeout=5,
                             headers={**auth, "Content-Encoding": "gzip"}).status_code == 400
        # A body cut short (a gzip member without its end, msgpack without its last entry): refused,
        # never a 200 for part of it.
        packed = b"".join(msgpack.packb([0, {"log": FLOW}]) for _ in range(10))  # under the 4 KiB limit
        half = gzip.compress(packed)[: len(gzip.compress(packed)) // 2]
        as_msgpack_ = {**auth, "Content-Type": "application/msgpack"}
        assert requests.post(url, data=half, timeout=5,
                             headers={**as_msgpack_, "Content-Encoding": "gzip"}).status_code == 400
        assert requests.post(url, data=packed[:-3], timeout=5, headers=as_msgpack_).status_code == 400
        # Past a limit once decompressed (3 kB of gzip, a million and one empty records): 413, its reason
        bomb = gzip.compress(b"\x92\x00\x80" * 1_000_001, 9)
        assert requests.post(url, data=bomb, timeout=30,
                             headers={**as_msgpack_, "Content-Encoding": "gzip"}).status_code == 413
        # Announced too large: refused before a byte of the body is read.
        host, port = url[7:-1].rsplit(":", 1)
        big = http.client.HTTPConnection(host, int(port), timeout=5)
        big.putrequest("POST", "/")
        big.putheader("Authorization", auth["Authorization"])
        big.putheader("Content-Length", "100000")
        big.endheaders()
        assert big.getresponse().status == 413
        big.close()
        assert requests.post(url, data=body, headers=auth, timeout=5).status_code == 200  # still serving
        text = a.metrics()
    errors = source_errors(text)
    assert errors[("http", "auth_failed")] == 2
    assert errors[("http", "malformed_body")] == 5
    assert errors[("http", "frame_too_large")] == 1
    assert errors[("http", "too_many_entries")] == 1
    assert inputs(text)[("http", "parsed")] == 1


def test_slow_and_surplus_connections_are_cut_off(tmp_path) -> None:
    """Both slots held, one by a body that does not come and one by an idle connection: a good
    request still gets in, taking the slot of the one that has waited longest (counted); what is
    left idle is cut at the idle timeout."""
    config = {"forward_max_connections": 2, "forward_idle_timeout": "2s"}
    with agent(tmp_path, config) as a:
        host, port = a.ingest[7:-1].rsplit(":", 1)  # type: ignore[attr-defined]
        stalled = socket.create_connection((host, int(port)))
        stalled.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{\"log\": ")  # and nothing more
        time.sleep(0.2)
        idle = socket.create_connection((host, int(port)))
        time.sleep(0.3)
        r = requests.post(a.ingest, data=json.dumps({"log": FLOW}), timeout=5)  # type: ignore[attr-defined]
        assert r.status_code == 200
        stalled.settimeout(2)
        assert stalled.recv(100) == b""  # the longest waiting gave up its slot
        idle.settimeout(4)
        assert idle.recv(100) == b""  # cut at the idle timeout
        text = a.metrics()
        stalled.close()
        idle.close()
    errors = source_errors(text)
    assert errors[("http", "evicted_idle")] == 1
    assert errors[("http", "too_many_connections")] == 0
    assert inputs(text)[("http", "parsed")] == 1


def test_tls(tmp_path) -> None:
    """With forward_tls_cert/key the ingest speaks HTTPS: Fluent Bit's tls on is served, plain HTTP refused."""
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    with agent(tmp_path, {"forward_tls_cert": str(cert), "forward_tls_key": str(key)}) as a:
        url = a.ingest  # type: ignore[attr-defined]
        assert url.startswith("https://")
        r = requests.post(url, data=json.dumps([{"log": ln} for ln in LINES]), verify=str(cert), timeout=10)
        assert r.status_code == 200
        with pytest.raises(requests.ConnectionError):
            requests.post("http://" + url[8:], data=json.dumps({"log": FLOW}), timeout=5)
        time.sleep(0.3)
        text = a.metrics()
    assert sum(flows(text).values()) == TOTAL
    assert source_errors(text) == {("http", "tls_error"): 1}


def test_bodies_that_broke_the_decoder_get_an_answer_and_a_count(tmp_path) -> None:
    """100k-deep JSON and a msgpack map keyed by a list used to drop the connection with no
    response (Fluent Bit retries such a chunk forever); now: 400, counted as malformed_body."""
    with agent(tmp_path) as a:
        deep = b"[" * 100_000 + b"]" * 100_000
        r = requests.post(a.ingest, data=deep, headers={"Content-Type": "application/json"}, timeout=10)
        assert r.status_code == 400
        listkey = b"\x92\xce\x00\x00\x00\x01\x81\x91\x01\xa1x"  # [1, {[1]: "x"}]
        r = requests.post(a.ingest, data=listkey, headers={"Content-Type": "application/msgpack"}, timeout=10)
        assert r.status_code == 400
        assert source_errors(a.metrics())[("http", "malformed_body")] == 2
        ok = requests.post(a.ingest, data=json.dumps([{"log": FLOW}]), timeout=10)
        assert ok.status_code == 200


def test_a_body_trickled_byte_by_byte_is_cut_at_the_deadline(tmp_path) -> None:
    """1 byte a second keeps the socket's timeout from ever firing; the whole body has
    forward_frame_timeout, then the connection is cut and counted as slow_client."""
    with agent(tmp_path, {"forward_frame_timeout": "2s", "forward_idle_timeout": "5s"}) as a:
        host, port = a.ingest[7:-1].rsplit(":", 1)  # type: ignore[attr-defined]
        s = socket.create_connection((host, int(port)))
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n")
        s.settimeout(0.1)
        closed_after = None
        start = time.monotonic()
        while time.monotonic() - start < 8:
            try:
                s.sendall(b" ")
                if s.recv(100) == b"":
                    closed_after = time.monotonic() - start
                    break
            except TimeoutError:
                pass
            except OSError:
                closed_after = time.monotonic() - start
                break
            time.sleep(0.9)
        s.close()
        assert closed_after is not None and closed_after < 4, closed_after
        assert source_errors(a.metrics())[("http", "slow_client")] == 1


def test_requests_that_never_send_their_body_do_not_lock_out_good_ones(tmp_path) -> None:
    with agent(tmp_path, {"forward_max_connections": 8}) as a:
        host, port = a.ingest[7:-1].rsplit(":", 1)  # type: ignore[attr-defined]
        hogs = []
        for _ in range(30):
            s = socket.create_connection((host, int(port)))
            s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
            hogs.append(s)
            time.sleep(0.01)
        time.sleep(0.3)
        codes = [requests.post(a.ingest, data=json.dumps({"log": FLOW}), timeout=10).status_code  # type: ignore[attr-defined]
                 for _ in range(5)]
        text = a.metrics()
        for s in hogs:
            s.close()
    assert codes == [200] * 5
    assert inputs(text)[("http", "parsed")] == 5
    assert source_errors(text)[("http", "evicted_idle")] >= 22


def test_bodies_share_the_frame_budget(tmp_path) -> None:
    """A body the receiver's frame budget cannot hold gets a 503 (Fluent Bit sends it again later)
    and a counted refusal; one that fits is counted whole."""
    small = json.dumps([{"log": ln} for ln in LINES]).encode()
    big = json.dumps([{"log": ln} for ln in LINES * 40]).encode()
    config = {"forward_max_frame_bytes": 4 * len(big), "forward_max_buffered_bytes": 2 * len(small) + 100}
    with agent(tmp_path, config) as a:
        r = requests.post(a.ingest, data=big, headers={"Content-Type": "application/json"},  # type: ignore[attr-defined]
                          timeout=10)
        assert r.status_code == 503 and "over_memory_budget" in r.text
        r = requests.post(a.ingest, data=small, headers={"Content-Type": "application/json"},  # type: ignore[attr-defined]
                          timeout=10)
        assert r.status_code == 200, r.text
        text = a.metrics()
    assert source_errors(text)[("http", "over_memory_budget")] == 1
    assert sum(flows(text).values()) == TOTAL  # the small body, every record of it, once
