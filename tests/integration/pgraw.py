"""A raw PostgreSQL v3 client for tests that need to see exact protocol
messages (error fields, refusals at each login step): login with
SCRAM-SHA-256, cleartext or md5, optional TLS, message reading."""
import base64
import hashlib
import hmac
import secrets
import socket
import ssl
import struct


class LoginRefused(Exception):
    """An ErrorResponse during login: .fields (code letter -> text),
    .sqlstate, .message."""

    def __init__(self, fields):
        self.fields = fields
        self.sqlstate = fields.get("C")
        self.message = fields.get("M")
        super().__init__(f"{fields.get('S')} {self.sqlstate}: {self.message}")


def recv_exact(sock, n):
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(out)} of {n} bytes")
        out += chunk
    return out


def recv_msg(sock):
    head = recv_exact(sock, 5)
    kind, length = head[:1], struct.unpack("!I", head[1:])[0]
    return kind, recv_exact(sock, length - 4)


def error_fields(body):
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode(errors="replace")
    return fields


def msg(kind, body):
    return kind + struct.pack("!I", len(body) + 4) + body


def pg_login(port, user, password, database, host="127.0.0.1", tls=False, timeout=10):
    """Log in with the raw protocol (SCRAM-SHA-256, cleartext or md5).
    Returns the socket after ReadyForQuery; raises LoginRefused with the
    server's ErrorResponse."""
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        if tls:
            sock.sendall(struct.pack("!II", 8, 80877103))
            if recv_exact(sock, 1) != b"S":
                raise ConnectionError("TLS refused")
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            sock = ctx.wrap_socket(sock)
        params = b"user\0" + user.encode() + b"\0"
        if database is not None:
            params += b"database\0" + database.encode() + b"\0"
        body = struct.pack("!I", 196608) + params + b"\0"
        sock.sendall(struct.pack("!I", len(body) + 4) + body)
        scram = None
        while True:
            kind, body = recv_msg(sock)
            if kind == b"E":
                raise LoginRefused(error_fields(body))
            if kind == b"Z":
                return sock
            if kind != b"R":
                continue
            code = struct.unpack("!I", body[:4])[0]
            data = body[4:]
            if code == 3:
                sock.sendall(msg(b"p", password.encode() + b"\0"))
            elif code == 5:
                inner = hashlib.md5(password.encode() + user.encode()).hexdigest()
                outer = hashlib.md5(inner.encode() + data[:4]).hexdigest()
                sock.sendall(msg(b"p", b"md5" + outer.encode() + b"\0"))
            elif code == 10:
                assert b"SCRAM-SHA-256\0" in data, data
                nonce = base64.b64encode(secrets.token_bytes(18)).decode()
                first_bare = f"n=,r={nonce}"
                first = ("n,," + first_bare).encode()
                sock.sendall(msg(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first))
                scram = (nonce, first_bare)
            elif code == 11:
                nonce, first_bare = scram
                server_first = data.decode()
                attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
                assert attrs["r"].startswith(nonce)
                salted = hashlib.pbkdf2_hmac("sha256", password.encode(),
                                             base64.b64decode(attrs["s"]), int(attrs["i"]))
                client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
                stored_key = hashlib.sha256(client_key).digest()
                without_proof = f"c=biws,r={attrs['r']}"
                auth_msg = f"{first_bare},{server_first},{without_proof}".encode()
                sig = hmac.new(stored_key, auth_msg, hashlib.sha256).digest()
                proof = bytes(a ^ b for a, b in zip(client_key, sig))
                final = f"{without_proof},p={base64.b64encode(proof).decode()}"
                sock.sendall(msg(b"p", final.encode()))
            elif code in (0, 12):
                pass
            else:
                raise AssertionError(f"unexpected authentication request {code}")
    except BaseException:
        sock.close()
        raise


def read_until_ready(sock):
    """Read a query's answer up to ReadyForQuery; raise LoginRefused on an
    ErrorResponse."""
    while True:
        kind, body = recv_msg(sock)
        if kind == b"E":
            raise LoginRefused(error_fields(body))
        if kind == b"Z":
            return
