"""A Forward-protocol sender that frames each mode exactly as Fluent Bit's `forward` output does."""

from __future__ import annotations

import gzip
import hashlib
import socket
import struct
import time
import uuid

import msgpack


def event_time(t: float) -> msgpack.ExtType:
    sec = int(t)
    return msgpack.ExtType(0, struct.pack(">II", sec, int((t - sec) * 1e9)))


def entry(record: dict, t: float | None = None, metadata: bool = False) -> list:
    ts = event_time(time.time() if t is None else t)
    return [[ts, {}], record] if metadata else [ts, record]


class ForwardClient:
    def __init__(self, address: str, shared_key: str = "", hostname: str = "node-1", user: str = "",
                 password: str = "", timeout: float = 5.0):
        if address.startswith("unix:"):
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.settimeout(timeout)
            self.sock.connect(address[5:])
        else:
            host, _, port = address.rpartition(":")
            self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.unpacker = msgpack.Unpacker(raw=False)
        self.pong: list | None = None
        if shared_key:
            self._handshake(shared_key, hostname, user, password)

    def _read(self) -> object:
        while True:
            try:
                return next(self.unpacker)
            except StopIteration:
                data = self.sock.recv(65536)
                if not data:
                    raise EOFError("server closed the connection") from None
                self.unpacker.feed(data)

    def _handshake(self, key: str, hostname: str, user: str, password: str) -> None:
        helo = self._read()
        assert helo[0] == "HELO", helo
        nonce, auth = helo[1]["nonce"], helo[1].get("auth", b"")
        salt = uuid.uuid4().hex.encode()
        digest = hashlib.sha512(salt + hostname.encode() + nonce + key.encode()).hexdigest()
        pw = hashlib.sha512(auth + user.encode() + password.encode()).hexdigest() if user else ""
        self.sock.sendall(msgpack.packb(["PING", hostname, salt, digest, user, pw]))
        self.pong = self._read()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _opts(self, chunk: str | None, size: int, compressed: bool = False) -> dict:
        o: dict = {"size": size}
        if chunk:
            o["chunk"] = chunk
        if compressed:
            o["compressed"] = "gzip"
        return o

    def message(self, tag: str, record: dict, chunk: str | None = None) -> None:
        frame = [tag, event_time(time.time()), record] + ([self._opts(chunk, 1)] if chunk else [])
        self.sock.sendall(msgpack.packb(frame))

    def forward(self, tag: str, entries: list, chunk: str | None = None) -> None:
        self.sock.sendall(msgpack.packb([tag, entries, self._opts(chunk, len(entries))]))

    def packed(self, tag: str, entries: list, chunk: str | None = None, compress: bool = False) -> None:
        stream = b"".join(msgpack.packb(e) for e in entries)
        if compress:
            stream = gzip.compress(stream)
        self.sock.sendall(msgpack.packb([tag, stream, self._opts(chunk, len(entries), compress)], use_bin_type=True))

    def ack(self) -> object:
        return self._read()

    def close(self) -> None:
        self.sock.close()
