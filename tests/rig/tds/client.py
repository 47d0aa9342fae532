"""A small blocking TDS client over this package's codec, for the rig's own
tests: what real clients cannot be made to send (a RESETCONNECTION without
tedious' own initial SQL, crafted bad input, a wrong FEDAUTH echo) and quick
probes. Real-client behaviour is proven with tedious, tsql and pymssql.

    cl = TdsClient("127.0.0.1", port, ca_file)
    cl.login(token=tok, database="orders")       # -> login reply tokens
    cl.batch("SELECT 1")                           # -> reply tokens
    cl.batch("SELECT 1", status=codec.ST_RESETCONNECTION)
"""

import socket
import ssl

import codec as c


class LoginFailed(Exception):
    def __init__(self, tokens):
        self.tokens = tokens
        errs = [f for k, f in tokens if k == "ERROR"]
        super().__init__("; ".join(f"{e['number']}: {e['message']}" for e in errs) or "login failed")
        self.numbers = [e["number"] for e in errs]


class TdsClient:
    def __init__(self, host, port, ca_file=None, server_name="localhost", timeout=10):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.ca_file = ca_file
        self.server_name = server_name
        self.tls = None
        self.inc = self.out = None
        self.buf = bytearray()
        self.packet_size = 4096
        self.descriptor = b"\0" * 8
        self.spid = None

    # -- raw I/O
    def _recv_raw(self):
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("server closed the connection")
        return data

    def _fill(self):
        if self.tls is None:
            self.buf += self._recv_raw()
            return
        while True:
            try:
                self.buf += self.tls.read(65536)
                return
            except ssl.SSLWantReadError:
                self.inc.write(self._recv_raw())

    def _read(self, n):
        while len(self.buf) < n:
            self._fill()
        b = bytes(self.buf[:n])
        del self.buf[:n]
        return b

    def send_raw(self, data):
        if self.tls is not None:
            self.tls.write(data)
            data = self.out.read()
        self.sock.sendall(data)

    def send(self, ptype, payload, status=0):
        self.send_raw(c.packetize(ptype, payload, self.packet_size, 0, status))

    def read_message(self):
        """(type, payload, spid of the last packet) of the next message."""
        payload = bytearray()
        while True:
            ptype, status, length, spid, _ = c.parse_header(self._read(8))
            payload += self._read(length - 8)
            if status & c.ST_EOM:
                return ptype, bytes(payload), spid

    def closed_by_server(self, timeout=5):
        """True if the server closes the connection (EOF or reset) in time."""
        self.sock.settimeout(timeout)
        try:
            while True:
                if not self.sock.recv(65536):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    # -- handshake
    def prelogin(self, encryption=c.ENCRYPT_ON, fedauth_required=True):
        opts = [(c.PL_VERSION, bytes(6)), (c.PL_ENCRYPTION, bytes([encryption])),
                (c.PL_INSTOPT, b"\0"), (c.PL_THREADID, bytes(4)), (c.PL_MARS, b"\0")]
        if fedauth_required:
            opts.append((c.PL_FEDAUTHREQUIRED, b"\x01"))
        self.send(c.PT_PRELOGIN, c.build_prelogin(opts))
        ptype, payload, _ = self.read_message()
        if ptype != c.PT_REPLY:
            raise AssertionError(f"PRELOGIN answered in a packet of type 0x{ptype:02x}")
        return c.parse_prelogin(payload)

    def start_tls(self):
        ctx = ssl.create_default_context(cafile=self.ca_file)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(self.inc, self.out, server_hostname=self.server_name)
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                flight = self.out.read()
                if flight:
                    self.sock.sendall(c.packetize(c.PT_PRELOGIN, flight, 4096))
                ptype, payload, _ = self.read_message()
                if ptype != c.PT_PRELOGIN:
                    raise AssertionError(f"TLS handshake came back in packet type 0x{ptype:02x}")
                self.inc.write(payload)
        flight = self.out.read()
        if flight:
            self.sock.sendall(c.packetize(c.PT_PRELOGIN, flight, 4096))
        self.tls = obj

    def login(self, token=None, user="", password="", database="orders", packet_size=4096,
              fedauth_required=True, echo=None, tds_version=0x74000004):
        pre = self.prelogin(fedauth_required=fedauth_required)
        assert pre[c.PL_ENCRYPTION] in (bytes([c.ENCRYPT_ON]), bytes([c.ENCRYPT_REQ]))
        self.start_tls()
        l7 = c.build_login7(user=user, password=password, database=database, app="rig-client",
                            host="rig-host", server="localhost", packet_size=packet_size,
                            fedauth_token=token, tds_version=tds_version,
                            fedauth_echo=(1 if fedauth_required else 0) if echo is None else echo)
        self.send(c.PT_LOGIN7, l7)
        ptype, payload, spid = self.read_message()
        tokens = c.parse_tokens(payload)
        if not any(k == "LOGINACK" for k, _ in tokens):
            raise LoginFailed(tokens)
        for k, f in tokens:
            if k == "ENVCHANGE" and f["type"] == c.ENV_PACKETSIZE:
                self.packet_size = int(f["new"])
        self.spid = spid
        return tokens

    # -- requests
    def batch(self, sql, status=0):
        """Send a SQLBatch (ALL_HEADERS with the current transaction
        descriptor) and return the reply's tokens."""
        self.send(c.PT_SQLBATCH, c.build_all_headers(self.descriptor) + sql.encode("utf-16-le"), status)
        return self.reply()

    def reply(self):
        ptype, payload, _ = self.read_message()
        tokens = c.parse_tokens(payload)
        for k, f in tokens:
            if k == "ENVCHANGE" and f["type"] == c.ENV_BEGINTRAN:
                self.descriptor = f["new"]
            elif k == "ENVCHANGE" and f["type"] in (c.ENV_COMMITTRAN, c.ENV_ROLLBACKTRAN):
                self.descriptor = b"\0" * 8
        return tokens

    def attention(self):
        self.send(c.PT_ATTENTION, b"")

    def scalar(self, sql, status=0):
        rows = [f for k, f in self.batch(sql, status) if k == "ROW"]
        return rows[0][0] if rows else None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def rows_of(tokens):
    return [f for k, f in tokens if k == "ROW"]


def errors_of(tokens):
    return [f["number"] for k, f in tokens if k == "ERROR"]
