"""A MySQL 8 stand-in for password accounts on caching_sha2_password.

Azure Database for MySQL is MySQL 8, where a password account uses
caching_sha2_password; Debian ships only MariaDB, which has no server side
of that plugin. This server speaks just enough of the protocol to hold
tokenpool's `auth: password` login to what MySQL 8 does, strictly:

- the greeting offers TLS and names caching_sha2_password (or
  mysql_native_password, and then switches the account to caching_sha2
  with a fresh nonce, as MySQL 8 does for such an account);
- the scramble is checked against the stored SHA256(SHA256(password));
  the fast path (AuthMoreData 0x03) is taken only for a user whose
  password is cached, i.e. after a full authentication, as in MySQL;
- full authentication (AuthMoreData 0x04) takes the password in clear
  only over TLS; without TLS the client must ask for the public key
  (0x02) and send the password XOR the nonce, RSA-OAEP encrypted. A clear
  password on a plain connection is refused and recorded as a violation;
- a wrong password or an unknown user gets ERR 1045 (28000).

After login: COM_QUERY answers `SELECT CURRENT_USER()` and `SELECT <int>`
with one-row result sets and any other statement with OK; COM_PING,
COM_INIT_DB and COM_RESET_CONNECTION get OK; COM_QUIT closes. No
session tracking and no DEPRECATE_EOF are offered (a MySQL 8 configured
without them), so tokenpool's plainer path is the one exercised.

`logins` records each login: user, method ("fast", "full-tls",
"full-rsa"), whether it ran over TLS, whether the server switched the
client to caching_sha2, and the result.
"""

import hashlib
import os
import socket
import ssl
import struct
import threading

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

SHA2 = "caching_sha2_password"
NATIVE = "mysql_native_password"

CAP_CONNECT_WITH_DB = 0x8
CAP_PROTOCOL_41 = 0x200
CAP_SSL = 0x800
CAP_SECURE_CONNECTION = 0x8000
CAP_PLUGIN_AUTH = 0x80000
CAP_CONNECT_ATTRS = 0x100000
CAP_PLUGIN_AUTH_LENENC = 0x200000
# What this server offers: MySQL 8's usual set less session tracking and
# DEPRECATE_EOF.
SERVER_CAPS = (0x1 | 0x2 | 0x4 | CAP_CONNECT_WITH_DB | CAP_PROTOCOL_41 | CAP_SSL | 0x2000
               | CAP_SECURE_CONNECTION | 0x10000 | 0x20000 | 0x40000 | CAP_PLUGIN_AUTH
               | CAP_CONNECT_ATTRS | CAP_PLUGIN_AUTH_LENENC)
STATUS_AUTOCOMMIT = 0x0002


def sha256(b):
    return hashlib.sha256(b).digest()


class Refused(Exception):
    pass


class Conn:
    """One client connection: packets with sequence numbers, TLS on demand."""

    def __init__(self, sock):
        self.sock = sock
        self.seq = 0

    def _read(self, n):
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise EOFError
            out += chunk
        return out

    def read(self):
        hdr = self._read(4)
        n = hdr[0] | hdr[1] << 8 | hdr[2] << 16
        self.seq = (hdr[3] + 1) & 0xFF
        return self._read(n)

    def write(self, payload):
        self.sock.sendall(struct.pack("<I", len(payload))[:3] + bytes([self.seq]) + payload)
        self.seq = (self.seq + 1) & 0xFF

    def ok(self):
        self.write(b"\x00\x00\x00" + struct.pack("<HH", STATUS_AUTOCOMMIT, 0))

    def err(self, code, state, msg):
        self.write(b"\xff" + struct.pack("<H", code) + b"#" + state.encode() + msg.encode())

    def eof(self):
        self.write(b"\xfe" + struct.pack("<HH", 0, STATUS_AUTOCOMMIT))

    def one_row(self, name, value):
        def lenenc_str(b):
            assert len(b) < 251
            return bytes([len(b)]) + b

        self.write(b"\x01")
        self.write(lenenc_str(b"def") + lenenc_str(b"") * 3 + lenenc_str(name.encode())
                   + lenenc_str(name.encode()) + b"\x0c" + struct.pack("<HIBHB", 33, 256, 0xFD, 0, 0)
                   + b"\x00\x00")
        self.eof()
        self.write(lenenc_str(value.encode()))
        self.eof()


def _cstr(p, pos):
    """The NUL-terminated string at pos, and the position after its NUL."""
    end = p.index(b"\0", pos)
    return p[pos:end].decode(), end + 1


def parse_login(p):
    """HandshakeResponse41 -> dict (caps, user, auth, database, plugin)."""
    caps = struct.unpack_from("<I", p, 0)[0]
    user, pos = _cstr(p, 32)
    # One length byte either way: a length-encoded one under 251 (a
    # scramble is 20 or 32 bytes) reads as the plain one.
    n = p[pos]
    assert n < 251, "long auth response"
    auth = p[pos + 1:pos + 1 + n]
    pos += 1 + n
    database = plugin = ""
    if caps & CAP_CONNECT_WITH_DB and pos < len(p):
        database, pos = _cstr(p, pos)
    if caps & CAP_PLUGIN_AUTH and pos < len(p):
        plugin, pos = _cstr(p, pos)
    return {"caps": caps, "user": user, "auth": auth, "database": database, "plugin": plugin}


def _nonce():
    """20 printable bytes, no NUL, as MySQL's scramble."""
    return bytes(b % 94 + 33 for b in os.urandom(20))


class Mysql8Server:
    """Serves on 127.0.0.1:<port> in a thread per connection until stop().

    accounts: {user: password} (stored as SHA256(SHA256(password)) only).
    cert_file/key_file: the TLS certificate (TLS is offered always; a
    client may go on without it). greeting_plugin: SHA2 or NATIVE."""

    def __init__(self, accounts, cert_file, key_file, greeting_plugin=SHA2):
        self.stage2 = {u: sha256(sha256(pw.encode())) for u, pw in accounts.items()}
        self.cached = set()  # users whose fast path is open
        self.greeting_plugin = greeting_plugin
        self.logins = []
        self.violations = []
        self.queries = []
        self.lock = threading.Lock()
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.load_cert_chain(cert_file, key_file)
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.rsa_pem = self.rsa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.thread_id = 100
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self):
        self.stopped = True
        self.listener.close()

    def _accept(self):
        while not self.stopped:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _record(self, **kw):
        with self.lock:
            self.logins.append(kw)

    def _serve(self, sock):
        try:
            c = Conn(sock)
            user = self._login(c)
            if user is not None:
                self._commands(c, user)
        except (EOFError, OSError, ssl.SSLError, ValueError, AssertionError, IndexError):
            pass
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def _greeting(self, c, nonce):
        with self.lock:
            self.thread_id += 1
            tid = self.thread_id
        plugin = self.greeting_plugin.encode()
        c.write(b"\x0a" + b"8.0.36-tokenpool-rig\0" + struct.pack("<I", tid) + nonce[:8] + b"\0"
                + struct.pack("<HBHH", SERVER_CAPS & 0xFFFF, 255, STATUS_AUTOCOMMIT, SERVER_CAPS >> 16)
                + bytes([21]) + b"\0" * 10 + nonce[8:] + b"\0" + plugin + b"\0")

    def _login(self, c):
        nonce = _nonce()
        self._greeting(c, nonce)
        p = c.read()
        tls = False
        if len(p) == 32:  # SSLRequest
            caps = struct.unpack_from("<I", p, 0)[0]
            assert caps & CAP_SSL, "32-byte packet without CLIENT_SSL"
            c.sock = self.tls.wrap_socket(c.sock, server_side=True)
            tls = True
            p = c.read()
        login = parse_login(p)
        user, auth = login["user"], login["auth"]
        switched = login["plugin"] != SHA2
        if switched:
            # MySQL 8: the account's plugin is caching_sha2; switch with a
            # fresh nonce.
            nonce = _nonce()
            c.write(b"\xfe" + SHA2.encode() + b"\0" + nonce + b"\0")
            auth = c.read()
        try:
            method = self._sha2(c, user, auth, nonce, tls)
        except Refused as e:
            self._record(user=user, method=str(e), tls=tls, switched=switched, result="refused")
            c.err(1045, "28000", f"Access denied for user '{user}'@'localhost' (using password: YES)")
            return None
        self._record(user=user, method=method, tls=tls, switched=switched, result="ok",
                     database=login["database"])
        c.ok()
        return user

    def _sha2(self, c, user, auth, nonce, tls):
        """The caching_sha2_password exchange after the scramble; returns
        the method that let the user in, raises Refused(method) otherwise."""
        stage2 = self.stage2.get(user)
        if stage2 is not None and user in self.cached and len(auth) == 32:
            stage1 = bytes(a ^ b for a, b in zip(auth, sha256(stage2 + nonce)))
            if sha256(stage1) != stage2:
                raise Refused("fast")
            c.write(b"\x01\x03")
            return "fast"
        c.write(b"\x01\x04")  # perform full authentication
        p = c.read()
        if tls:
            method = "full-tls"
            password = p.rstrip(b"\0")
        elif p == b"\x02":
            method = "full-rsa"
            c.write(b"\x01" + self.rsa_pem)
            plain = self.rsa.decrypt(c.read(), padding.OAEP(
                mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None))
            plain = bytes(b ^ nonce[i % len(nonce)] for i, b in enumerate(plain))
            password = plain.rstrip(b"\0")
        else:
            with self.lock:
                self.violations.append(f"{user}: password-sized packet without TLS or RSA")
            raise Refused("clear-without-tls")
        if stage2 is None or sha256(sha256(password)) != stage2:
            raise Refused(method)
        with self.lock:
            self.cached.add(user)
        return method

    def _commands(self, c, user):
        while True:
            c.seq = 0
            p = c.read()
            cmd = p[:1]
            if cmd == b"\x01":  # COM_QUIT
                return
            if cmd == b"\x03":  # COM_QUERY
                sql = p[1:].decode(errors="replace").strip().rstrip(";")
                with self.lock:
                    self.queries.append(sql)
                low = sql.lower()
                if low == "select current_user()":
                    c.one_row("CURRENT_USER()", f"{user}@%")
                elif low.startswith("select ") and low[7:].strip().isdigit():
                    c.one_row(sql[7:].strip(), low[7:].strip())
                else:
                    c.ok()
            elif cmd in (b"\x0e", b"\x1f", b"\x02"):  # PING, RESET_CONNECTION, INIT_DB
                c.ok()
            else:
                c.err(1047, "08S01", "Unknown command")
