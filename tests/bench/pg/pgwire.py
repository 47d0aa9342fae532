#!/usr/bin/env python3
"""A tiny PostgreSQL wire client for the benchmarks (test code, not product code).

It speaks just enough of the protocol to log in -- startup message, then
SCRAM-SHA-256 (or cleartext/trust) -- and optionally run a simple query, so
that one process can hold thousands of logged-in, idle client connections
with asyncio. Used by bench.py to measure a proxy's memory per idle client.

Also: scram_verifier(password, iterations) builds the
`SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>` string that both
tokenpool (password_hash) and PgBouncer (auth_file) accept.

CLI (hold N idle clients until Ctrl-C):
  /usr/bin/python3 pgwire.py --port 6432 --user app --password secret \
      --dbname orders --count 1000
"""

import argparse
import asyncio
import base64
import hashlib
import hmac
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import idle_clients  # noqa: E402  (tests/bench/: opens and holds many clients)

PROTOCOL_3 = 196608


class PgError(Exception):
    """An ErrorResponse from the server (fields: S, C, M, ...)."""

    def __init__(self, fields):
        self.fields = fields
        super().__init__(f"{fields.get('S', 'ERROR')} {fields.get('C', '?????')}: {fields.get('M', '')}")


def _b64(b):
    return base64.b64encode(b).decode()


def scram_keys(salted):
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return client_key, stored_key, server_key


def scram_verifier(password, iterations=4096, salt=None):
    """The stored form of a SCRAM-SHA-256 secret, as PostgreSQL writes it."""
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    _, stored_key, server_key = scram_keys(salted)
    return f"SCRAM-SHA-256${iterations}:{_b64(salt)}${_b64(stored_key)}:{_b64(server_key)}"


class _SaltCache:
    """PBKDF2 once per (password, salt, iterations): clients of a benchmark
    all log in with the same stored verifier, and the point is to measure the
    proxy, not this helper's CPU."""

    def __init__(self):
        self._d = {}

    def salted(self, password, salt, iterations):
        key = (password, salt, iterations)
        v = self._d.get(key)
        if v is None:
            v = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
            self._d[key] = v
        return v


SALT_CACHE = _SaltCache()


def _msg(tag, payload):
    return tag + struct.pack("!i", len(payload) + 4) + payload


async def _read_msg(reader):
    head = await reader.readexactly(5)
    tag, n = head[:1], struct.unpack("!i", head[1:])[0]
    if n < 4 or n > 1 << 24:
        raise PgError({"M": f"bad message length {n} for {tag!r}"})
    return tag, await reader.readexactly(n - 4)


def _error_fields(body):
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode(errors="replace")
    return fields


class PgConn:
    """One logged-in connection (reader, writer, server parameters)."""

    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer
        self.params = {}
        self.backend_key = None

    async def simple_query(self, sql):
        """Run one simple query; returns the rows as lists of str/None."""
        self.writer.write(_msg(b"Q", sql.encode() + b"\0"))
        await self.writer.drain()
        rows, err = [], None
        while True:
            tag, body = await _read_msg(self.reader)
            if tag == b"D":
                ncol = struct.unpack("!h", body[:2])[0]
                off, row = 2, []
                for _ in range(ncol):
                    ln = struct.unpack("!i", body[off:off + 4])[0]
                    off += 4
                    if ln < 0:
                        row.append(None)
                    else:
                        row.append(body[off:off + ln].decode())
                        off += ln
                rows.append(row)
            elif tag == b"E":
                err = PgError(_error_fields(body))
            elif tag == b"Z":
                if err:
                    raise err
                return rows

    def close(self):
        idle_clients.close_quietly(self.writer, _msg(b"X", b""))     # Terminate


async def connect(host, port, user, password, dbname, timeout=30, salt_cache=SALT_CACHE):
    """Open a TCP connection (no TLS), send the startup message and log in.
    Returns a PgConn once ReadyForQuery arrived; raises PgError otherwise."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    conn = PgConn(reader, writer)
    try:
        await asyncio.wait_for(_login(conn, user, password, dbname, salt_cache), timeout)
    except BaseException:
        writer.close()
        raise
    return conn


async def _login(conn, user, password, dbname, salt_cache):
    r, w = conn.reader, conn.writer
    params = b"".join(k + b"\0" + v.encode() + b"\0" for k, v in (
        (b"user", user), (b"database", dbname), (b"application_name", "pgwire-idle"))) + b"\0"
    w.write(struct.pack("!ii", len(params) + 8, PROTOCOL_3) + params)
    await w.drain()
    client_first_bare = server_first = None
    nonce = server_key = None
    while True:
        tag, body = await _read_msg(r)
        if tag == b"R":
            code = struct.unpack("!i", body[:4])[0]
            if code == 0:                                   # AuthenticationOk
                continue
            if code == 3:                                   # cleartext
                w.write(_msg(b"p", password.encode() + b"\0"))
            elif code == 10:                                # SASL: mechanisms
                mechs = body[4:].split(b"\0")
                if b"SCRAM-SHA-256" not in mechs:
                    raise PgError({"M": f"no SCRAM-SHA-256 in {mechs}"})
                nonce = _b64(os.urandom(18))
                client_first_bare = f"n=,r={nonce}"
                first = ("n,," + client_first_bare).encode()
                w.write(_msg(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first))
            elif code == 11:                                # SASL continue
                server_first = body[4:].decode()
                attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
                if not attrs["r"].startswith(nonce):
                    raise PgError({"M": "server nonce does not extend ours"})
                salted = salt_cache.salted(password, base64.b64decode(attrs["s"]), int(attrs["i"]))
                client_key, stored_key, server_key = scram_keys(salted)
                final_wo_proof = f"c=biws,r={attrs['r']}"
                auth_msg = f"{client_first_bare},{server_first},{final_wo_proof}".encode()
                sig = hmac.new(stored_key, auth_msg, hashlib.sha256).digest()
                proof = bytes(a ^ b for a, b in zip(client_key, sig))
                conn._auth_msg = auth_msg
                w.write(_msg(b"p", f"{final_wo_proof},p={_b64(proof)}".encode()))
            elif code == 12:                                # SASL final
                attrs = dict(kv.split("=", 1) for kv in body[4:].decode().split(","))
                want = hmac.new(server_key, conn._auth_msg, hashlib.sha256).digest()
                if not hmac.compare_digest(base64.b64decode(attrs.get("v", "")), want):
                    raise PgError({"M": "server signature does not verify"})
                continue
            else:
                raise PgError({"M": f"unsupported authentication request {code}"})
            await w.drain()
        elif tag == b"E":
            raise PgError(_error_fields(body))
        elif tag == b"S":
            parts = body.split(b"\0")
            if len(parts) >= 2:
                conn.params[parts[0].decode()] = parts[1].decode()
        elif tag == b"K":
            conn.backend_key = struct.unpack("!ii", body[:8])
        elif tag == b"Z":
            return
        # 'N' notices and anything else: ignore


def main(argv=None):
    ap = argparse.ArgumentParser(description="hold N logged-in idle PostgreSQL connections")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", default=os.environ.get("PGPASSWORD", ""))
    ap.add_argument("--dbname", default="postgres")
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=64)
    args = ap.parse_args(argv)
    return idle_clients.hold(
        lambda: connect(args.host, args.port, args.user, args.password, args.dbname),
        args.count, args.concurrency)


if __name__ == "__main__":
    sys.exit(main())
