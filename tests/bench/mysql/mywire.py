#!/usr/bin/env python3
"""A tiny MySQL wire client for the benchmarks (test code, not product code).

It speaks just enough of the classic protocol to log in over plain TCP --
HandshakeV10, HandshakeResponse41 with mysql_native_password, an auth switch
to mysql_native_password or caching_sha2_password (fast path) -- and to run
a text query, so that one process can hold thousands of logged-in, idle
client connections with asyncio. Used by bench.py to measure tokenpool's
memory per idle client (the MySQL counterpart of tests/bench/pg/pgwire.py).

No TLS: the bench's tokenpool has client TLS off, like the PostgreSQL one.

CLI (hold N idle clients until Ctrl-C; the password from MYSQL_PWD):
  MYSQL_PWD=secret /usr/bin/python3 mywire.py --port 3307 --user app \
      --database orders --count 1000
"""

import argparse
import asyncio
import hashlib
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import idle_clients  # noqa: E402  (tests/bench/: opens and holds many clients)

# Capability flags (protocol "Capabilities Flags").
LONG_PASSWORD = 0x1
LONG_FLAG = 0x4
CONNECT_WITH_DB = 0x8
PROTOCOL_41 = 0x200
TRANSACTIONS = 0x2000
SECURE_CONNECTION = 0x8000
MULTI_RESULTS = 0x20000
PLUGIN_AUTH = 0x80000
PLUGIN_AUTH_LENENC_CLIENT_DATA = 0x200000
WANT = (LONG_PASSWORD | LONG_FLAG | CONNECT_WITH_DB | PROTOCOL_41 | TRANSACTIONS
        | SECURE_CONNECTION | MULTI_RESULTS | PLUGIN_AUTH | PLUGIN_AUTH_LENENC_CLIENT_DATA)
NEED = PROTOCOL_41 | SECURE_CONNECTION | PLUGIN_AUTH
UTF8MB4_GENERAL_CI = 45
MAX_PACKET = 1 << 24
COM_QUIT = 0x01
COM_QUERY = 0x03


class MyError(Exception):
    """An ERR packet from the server (code, sqlstate, message), or a
    protocol problem this helper cannot handle (code 0)."""

    def __init__(self, code, state, message):
        self.code, self.state, self.message = code, state, message
        super().__init__(f"{code} ({state}): {message}" if code else message)


def _xor(a, b):
    return bytes(x ^ y for x, y in zip(a, b))


def native_scramble(password, nonce):
    """mysql_native_password: SHA1(pw) XOR SHA1(nonce + SHA1(SHA1(pw)))."""
    if not password:
        return b""
    h1 = hashlib.sha1(password.encode()).digest()
    return _xor(h1, hashlib.sha1(nonce + hashlib.sha1(h1).digest()).digest())


def sha2_scramble(password, nonce):
    """caching_sha2_password fast path: SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) + nonce)."""
    if not password:
        return b""
    h1 = hashlib.sha256(password.encode()).digest()
    return _xor(h1, hashlib.sha256(hashlib.sha256(h1).digest() + nonce).digest())


def _lenenc_int(n):
    if n < 251:
        return bytes([n])
    if n < 1 << 16:
        return b"\xfc" + struct.pack("<H", n)
    if n < 1 << 24:
        return b"\xfd" + struct.pack("<I", n)[:3]
    return b"\xfe" + struct.pack("<Q", n)


def _read_lenenc(buf, off):
    """(value, new offset); value None for the NULL marker 0xFB."""
    if off >= len(buf):
        raise MyError(0, "", "truncated length-encoded integer")
    b = buf[off]
    if b < 251:
        return b, off + 1
    if b == 0xFB:
        return None, off + 1
    width = {0xFC: 2, 0xFD: 3, 0xFE: 8}.get(b)
    if width is None or off + 1 + width > len(buf):
        raise MyError(0, "", f"bad length-encoded integer 0x{b:02x}")
    return int.from_bytes(buf[off + 1:off + 1 + width], "little"), off + 1 + width


def _parse_err(body):
    code = struct.unpack("<H", body[1:3])[0] if len(body) >= 3 else 0
    state, msg = "", body[3:]
    if msg[:1] == b"#":
        state, msg = msg[1:6].decode(errors="replace"), msg[6:]
    return MyError(code, state, msg.decode(errors="replace"))


def _is_eof(body):
    return body[:1] == b"\xfe" and len(body) < 9


class MyConn:
    """One logged-in connection."""

    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer
        self.seq = 0
        self.server_version = ""
        self.thread_id = None
        self.caps = 0

    async def read_packet(self):
        """One logical packet (joins 0xFFFFFF continuations)."""
        out = b""
        while True:
            head = await self.reader.readexactly(4)
            n = int.from_bytes(head[:3], "little")
            self.seq = (head[3] + 1) & 0xFF
            out += await self.reader.readexactly(n)
            if n < 0xFFFFFF:
                return out

    def write_packet(self, payload):
        while True:
            chunk, payload = payload[:0xFFFFFF], payload[0xFFFFFF:]
            self.writer.write(len(chunk).to_bytes(3, "little") + bytes([self.seq]) + chunk)
            self.seq = (self.seq + 1) & 0xFF
            if len(chunk) < 0xFFFFFF:
                return

    async def query(self, sql):
        """Run one text query; returns the rows of its (first) result set as
        lists of str/None, [] for a statement without one. Further result
        sets are read and dropped."""
        self.seq = 0
        self.write_packet(bytes([COM_QUERY]) + sql.encode())
        await self.writer.drain()
        first = None
        while True:
            rows, more = await self._read_result()
            if first is None:
                first = rows
            if not more:
                return first

    async def _read_result(self):
        body = await self.read_packet()
        if body[:1] == b"\xff":
            raise _parse_err(body)
        if body[:1] == b"\x00":
            return [], self._ok_more(body)
        if body[:1] == b"\xfb":
            raise MyError(0, "", "LOCAL INFILE request not supported by this helper")
        ncol, _ = _read_lenenc(body, 0)
        for _ in range(ncol):
            await self.read_packet()                 # column definitions
        eof = await self.read_packet()
        if not _is_eof(eof):
            raise MyError(0, "", "expected EOF after column definitions")
        rows = []
        while True:
            body = await self.read_packet()
            if body[:1] == b"\xff":
                raise _parse_err(body)
            if _is_eof(body):
                status = struct.unpack("<H", body[3:5])[0] if len(body) >= 5 else 0
                return rows, bool(status & 0x8)     # SERVER_MORE_RESULTS_EXISTS
            off, row = 0, []
            for _ in range(ncol):
                n, off = _read_lenenc(body, off)
                if n is None:
                    row.append(None)
                else:
                    row.append(body[off:off + n].decode(errors="replace"))
                    off += n
            rows.append(row)

    @staticmethod
    def _ok_more(body):
        _, off = _read_lenenc(body, 1)               # affected rows
        _, off = _read_lenenc(body, off)             # last insert id
        status = struct.unpack("<H", body[off:off + 2])[0] if off + 2 <= len(body) else 0
        return bool(status & 0x8)

    def close(self):
        # COM_QUIT: a 1-byte packet, sequence number 0.
        idle_clients.close_quietly(self.writer, b"\x01\x00\x00\x00" + bytes([COM_QUIT]))


async def connect(host, port, user, password, database, timeout=30):
    """Open a TCP connection (no TLS) and log in. Returns a MyConn once the
    server's OK arrived; raises MyError otherwise."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    conn = MyConn(reader, writer)
    try:
        await asyncio.wait_for(_login(conn, user, password, database), timeout)
    except BaseException:
        writer.close()
        raise
    return conn


def _parse_greeting(conn, body):
    if body[:1] == b"\xff":
        raise _parse_err(body)
    if body[:1] != b"\x0a":
        raise MyError(0, "", f"unsupported protocol version {body[:1]!r}")
    end = body.index(b"\0", 1)
    conn.server_version = body[1:end].decode(errors="replace")
    off = end + 1
    conn.thread_id = struct.unpack("<I", body[off:off + 4])[0]
    nonce = body[off + 4:off + 12]
    off += 13                                        # 8 nonce bytes + filler
    caps = struct.unpack("<H", body[off:off + 2])[0]
    off += 3                                         # + character set
    off += 2                                         # status flags
    caps |= struct.unpack("<H", body[off:off + 2])[0] << 16
    off += 2
    nonce_len = body[off]
    off += 11                                        # length + 10 reserved
    if caps & SECURE_CONNECTION:
        n = max(13, nonce_len - 8)
        nonce += body[off:off + n].rstrip(b"\0")
        off += n
    plugin = b"mysql_native_password"
    if caps & PLUGIN_AUTH and off < len(body):
        plugin = body[off:].split(b"\0", 1)[0]
    return caps, nonce, plugin


def _scramble(plugin, password, nonce):
    if plugin == b"mysql_native_password":
        return native_scramble(password, nonce[:20])
    if plugin == b"caching_sha2_password":
        return sha2_scramble(password, nonce[:20])
    raise MyError(0, "", f"unsupported authentication plugin {plugin.decode(errors='replace')}")


async def _login(conn, user, password, database):
    caps, nonce, plugin = _parse_greeting(conn, await conn.read_packet())
    if caps & NEED != NEED:
        raise MyError(0, "", f"server lacks protocol 4.1 authentication (capabilities 0x{caps:x})")
    conn.caps = mine = (WANT & caps) | (CONNECT_WITH_DB if database else 0)
    if plugin not in (b"mysql_native_password", b"caching_sha2_password"):
        plugin = b"mysql_native_password"           # the server switches us if it must
    auth = _scramble(plugin, password, nonce)
    body = struct.pack("<IIB", mine, MAX_PACKET, UTF8MB4_GENERAL_CI) + b"\0" * 23
    body += user.encode() + b"\0"
    if mine & PLUGIN_AUTH_LENENC_CLIENT_DATA:
        body += _lenenc_int(len(auth)) + auth
    else:
        body += bytes([len(auth)]) + auth
    if database:
        body += database.encode() + b"\0"
    body += plugin + b"\0"
    conn.write_packet(body)
    await conn.writer.drain()
    while True:
        pkt = await conn.read_packet()
        tag = pkt[:1]
        if tag == b"\x00":
            return
        if tag == b"\xff":
            raise _parse_err(pkt)
        if tag == b"\xfe":                           # AuthSwitchRequest
            name, _, data = pkt[1:].partition(b"\0")
            plugin, nonce = name, data.rstrip(b"\0")
            conn.write_packet(_scramble(plugin, password, nonce))
            await conn.writer.drain()
        elif tag == b"\x01":                         # AuthMoreData (caching_sha2)
            if pkt[1:2] == b"\x03":                  # fast auth success: OK follows
                continue
            raise MyError(0, "", "server wants caching_sha2 full authentication "
                                 "(needs TLS or RSA; not in this helper)")
        else:
            raise MyError(0, "", f"unexpected packet 0x{pkt[0]:02x} during login")


def main(argv=None):
    ap = argparse.ArgumentParser(description="hold N logged-in idle MySQL connections")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--database", default="")
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=64)
    args = ap.parse_args(argv)
    password = os.environ.get("MYSQL_PWD", "")

    async def first(c):
        return "first: " + repr(await c.query("SELECT CURRENT_USER(), CONNECTION_ID()"))

    return idle_clients.hold(
        lambda: connect(args.host, args.port, args.user, password, args.database),
        args.count, args.concurrency, show=first)


if __name__ == "__main__":
    sys.exit(main())
