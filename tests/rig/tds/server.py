#!/usr/bin/env python3
"""A TDS server standing in for Azure SQL Database in tokenpool's tests.

Strict like Azure: TLS is required (TLS 1.2 inside PRELOGIN packets, or TDS 8
"strict" TLS-first with ALPN tds/8.0), logins carry an Entra access token
in the FEDAUTH feature extension (validated like tests/rig/pam_jwt.c: HS256
with the rig key, exp/nbf, audience https://database.windows.net) or, when
configured, SQL authentication. It can answer as Azure's gateway does under
the Redirect connection policy (ENVCHANGE 20 routing to another port), and
it honours RESETCONNECTION, Attention, transactions and a small SQL subset
(sql.py). Its own codec (codec.py) shares nothing with tokenpool's C code.

CLI (see README.md):
  python3 server.py --port 0 --cert C --key K --jwt-key-file F \
      [--audience https://database.windows.net] [--redirect-to HOST:PORT] \
      [--packet-size N] [--name NAME] [--databases orders,master] \
      [--sql-user U --sql-password-file F] [--admin-port 0] \
      [--log-file F] [--ready-file F] [--parent-pid PID]

Python API: TdsServerProcess.start(...) runs it as a child process and
talks to its admin port; TdsControl(admin_url) does the latter alone;
TdsServer(config) is the asyncio server itself.
"""

import argparse
import asyncio
import collections
import hmac
import json
import os
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import auth  # noqa: E402
import codec as c  # noqa: E402
import sql as sqlmod  # noqa: E402

DEFAULT_AUDIENCE = "https://database.windows.net"
TOKEN_PRINCIPAL_PLACEHOLDER = "<token-identified principal>"
VERSION_STRING = ("Microsoft SQL Azure (RTM) - 12.0.2000.8 \n\tCopyright (C) 2022 Microsoft Corporation\n"
                  "\t(tokenpool test rig stand-in)")
PRELOGIN_MAX = 65535
LOGIN_MAX = 256 * 1024
MESSAGE_MAX = 64 * 1024 * 1024
LOGIN_PHASE_TIMEOUT = 60
SERVER_MAX_PACKET = 32767
DEFAULT_PACKET = 4096
EVENTS_MAX = 5000
QUIET_EVENTS = {"batch", "rpc", "transmgr", "attention", "reset", "interrupted"}   # --quiet drops these


def now_iso():
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


class Config:
    def __init__(self, **kw):
        self.host = kw.get("host", "127.0.0.1")
        self.port = kw.get("port", 0)
        self.admin_host = kw.get("admin_host", "127.0.0.1")
        self.admin_port = kw.get("admin_port", 0)
        self.cert = kw["cert"]
        self.key = kw["key"]
        self.jwt_key = kw.get("jwt_key")                # bytes
        self.audiences = kw.get("audiences") or [DEFAULT_AUDIENCE]
        self.user_claim = kw.get("user_claim", "db_user")
        self.token_users = kw.get("token_users")        # None = any db_user
        self.skew = kw.get("skew", 1)
        self.redirect_to = kw.get("redirect_to")        # (host, port) or None
        self.packet_size = kw.get("packet_size")        # forced size or None
        self.name = kw.get("name", "tokenpool-rig-tds")
        self.databases = kw.get("databases") or ["orders", "master"]
        self.default_database = kw.get("default_database") or (
            "master" if "master" in self.databases else self.databases[0])
        self.sql_user = kw.get("sql_user")
        self.sql_password = kw.get("sql_password")
        self.log_file = kw.get("log_file")
        self.strict_tls = kw.get("strict_tls", True)    # accept TDS 8 TLS-first
        self.max_replicate = kw.get("max_replicate", 16 * 1024 * 1024)
        self.quiet = kw.get("quiet", False)


# ---------------------------------------------------------------- transport

class Closed(Exception):
    """The peer went away (or we decided to hang up)."""


class Message:
    __slots__ = ("type", "status", "last_status", "payload")

    def __init__(self, mtype, status, last_status, payload):
        self.type = mtype
        self.status = status
        self.last_status = last_status
        self.payload = payload


class Channel:
    """A TCP connection that may carry TLS: plain until start_tls_*(), then
    every read and write goes through an ssl.SSLObject over memory BIOs
    (that is what lets the TLS handshake travel inside PRELOGIN packets)."""

    def __init__(self, reader, writer, sni_seen):
        self.reader = reader
        self.writer = writer
        self.plain = bytearray()
        self.tls = None
        self.inc = None
        self.out = None
        self.sni_seen = sni_seen
        self.sni = None
        self.alpn = None
        sock = writer.get_extra_info("socket")
        self.sock = sock if sock is not None and hasattr(socket, "TCP_QUICKACK") else None

    def _quickack(self):
        # Clients that leave Nagle on (tedious) send LOGIN7 in pieces and
        # wait for our ACK in between; delayed ACKs would cost ~40 ms.
        if self.sock is not None:
            try:
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            except OSError:
                self.sock = None

    async def _fill(self):
        self._quickack()
        if self.tls is None:
            data = await self.reader.read(65536)
            if not data:
                raise Closed("peer closed")
            self.plain += data
            return
        while True:
            try:
                data = self.tls.read(65536)
            except ssl.SSLWantReadError:
                self._pump_out()
                raw = await self.reader.read(65536)
                if not raw:
                    raise Closed("peer closed")
                self._quickack()
                self.inc.write(raw)
                continue
            except ssl.SSLZeroReturnError:
                raise Closed("TLS close_notify") from None
            except ssl.SSLError as e:
                raise Closed(f"TLS error: {e}") from None
            if not data:
                raise Closed("TLS EOF")
            self.plain += data
            return

    def _pump_out(self):
        if self.out is not None:
            pending = self.out.read()
            if pending:
                self.writer.write(pending)

    async def peek_byte(self):
        while not self.plain:
            await self._fill()
        return self.plain[0]

    async def read_exact(self, n):
        while len(self.plain) < n:
            await self._fill()
        b = bytes(self.plain[:n])
        del self.plain[:n]
        return b

    async def read_message(self, max_packet, max_total):
        payload = bytearray()
        mtype = None
        first = 0
        while True:
            hdr = await self.read_exact(c.HEADER_LEN)
            ptype, status, length, _spid, _pid = c.parse_header(hdr)
            if length > max_packet:
                raise c.ProtocolError(f"packet length {length} exceeds the negotiated packet size {max_packet}")
            body = await self.read_exact(length - c.HEADER_LEN)
            if mtype is None:
                mtype, first = ptype, status
            elif ptype != mtype:
                raise c.ProtocolError(f"packet type changed from 0x{mtype:02x} to 0x{ptype:02x} inside a message")
            payload += body
            if len(payload) > max_total:
                raise c.ProtocolError(f"message over {max_total} bytes")
            if status & c.ST_EOM:
                return Message(mtype, first, status, bytes(payload))

    async def send(self, data):
        if self.tls is not None:
            view = memoryview(data)
            while view:
                n = self.tls.write(view)
                view = view[n:]
            self._pump_out()
        else:
            self.writer.write(data)
        await self.writer.drain()

    async def send_raw(self, data):
        self.writer.write(data)
        await self.writer.drain()

    async def start_tls_wrapped(self, ctx):
        """TLS handshake carried in PRELOGIN (0x12) messages: one client
        flight per message, answered by one message (EOM) holding our flight,
        as tedious and FreeTDS expect. Afterwards TLS records flow bare."""
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(self.inc, self.out, server_side=True)
        while True:
            msg = await self.read_message(PRELOGIN_MAX, LOGIN_MAX)
            if msg.type != c.PT_PRELOGIN:
                raise c.ProtocolError(f"expected the TLS handshake in PRELOGIN packets, got packet type 0x{msg.type:02x}")
            self.inc.write(msg.payload)
            done = False
            err = None
            try:
                obj.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as e:
                err = e
            data = self.out.read()
            if data:
                await self.send_raw(c.packetize(c.PT_PRELOGIN, data, DEFAULT_PACKET))
            if err is not None:
                raise Closed(f"TLS handshake failed: {err.reason or err}")
            if done:
                break
        self.tls = obj
        if self.plain:        # records that followed the handshake (none with tedious/FreeTDS)
            self.inc.write(bytes(self.plain))
            self.plain.clear()
        self.sni = self.sni_seen.pop(id(obj), None)

    async def start_tls_direct(self, ctx):
        """TDS 8 strict: the connection starts with a TLS handshake."""
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(self.inc, self.out, server_side=True)
        self.inc.write(bytes(self.plain))
        self.plain.clear()
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                data = self.out.read()
                if data:
                    await self.send_raw(data)
                raw = await self.reader.read(65536)
                if not raw:
                    raise Closed("peer closed during the TLS handshake")
                self.inc.write(raw)
            except ssl.SSLError as e:
                data = self.out.read()
                if data:
                    await self.send_raw(data)
                raise Closed(f"TLS handshake failed: {e.reason or e}") from None
        data = self.out.read()
        if data:
            await self.send_raw(data)
        self.tls = obj
        self.alpn = obj.selected_alpn_protocol()
        self.sni = self.sni_seen.pop(id(obj), None)

    def tls_info(self):
        if self.tls is None:
            return None, None
        cipher = self.tls.cipher()
        return self.tls.version(), cipher[0] if cipher else None

    def close(self):
        try:
            self.writer.close()
        except Exception:
            pass

    def abort(self):
        try:
            self.writer.transport.abort()
        except Exception:
            pass


# ---------------------------------------------------------------- replies

class Reply:
    """A token stream being built for one response message."""

    def __init__(self, server_name):
        self.buf = bytearray()
        self.server_name = server_name

    def add(self, b):
        self.buf += b

    def error(self, number, message, cls=16, state=1, line=1, proc=""):
        self.buf += c.message_token(number, state, cls, message, self.server_name, proc, line)

    def info(self, number, message, cls=0, state=1):
        self.buf += c.message_token(number, state, cls, message, self.server_name, "", 1, info=True)

    def envchange(self, kind, new, old):
        self.buf += c.envchange(kind, new, old)

    def done(self, status=0, curcmd=0, count=0, token=c.TOK_DONE):
        self.buf += c.done(status, curcmd, count, token)


LOGIN_FAIL_TEXT = "Login failed for user '{}'."


class LoginRefused(Exception):
    def __init__(self, reason, principal, errors=None):
        super().__init__(reason)
        self.reason = reason
        self.principal = principal
        self.errors = errors or []     # extra (number, message, class) before 18456


# ---------------------------------------------------------------- session

class Session:
    def __init__(self, server, reader, writer):
        self.srv = server
        self.ch = Channel(reader, writer, server.sni_seen)
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.spid = server.alloc_spid(self)
        self.state = None                 # sql.SessionState after login
        self.packet_size = DEFAULT_PACKET
        self.tds_version = None
        self.login_info = {}
        self.strict = False
        self.logged_in = False
        self.busy = False
        self.requests = 0
        self.resets = 0
        self.attentions = 0
        self.attn_pending = 0
        self.attn_answered = 0
        self.attn_event = asyncio.Event()
        self.killed = False
        self.peer_gone = None
        self.task = None
        self.connected_at = now_iso()
        self.last_request = None

    def log(self, event, **kw):
        self.srv.event(event, spid=self.spid, peer=self.peer, **kw)

    # -- sending
    async def send_message(self, payload, ptype=c.PT_REPLY, packet_size=None):
        spid = self.spid if self.logged_in else 0
        await self.ch.send(c.packetize(ptype, payload, packet_size or self.packet_size, spid))

    # -- main
    async def run(self):
        reason = "closed"
        try:
            await asyncio.wait_for(self.login_phase(), LOGIN_PHASE_TIMEOUT)
            if self.logged_in:
                await self.serve()
        except asyncio.TimeoutError:
            reason = "login phase timed out"
        except Closed as e:
            reason = str(e)
        except c.ProtocolError as e:
            reason = f"protocol error: {e}"
            self.srv.stats["protocol_errors"] += 1
            self.log("protocol_error", error=str(e))
        except (ConnectionError, OSError) as e:
            reason = f"socket: {e}"
        except asyncio.CancelledError:
            reason = "killed" if self.killed else "cancelled"
        except Exception as e:  # a bug in the rig: log it, never crash the server
            reason = f"internal error: {type(e).__name__}: {e}"
            self.log("internal_error", error=repr(e))
            import traceback
            self.srv.logline(traceback.format_exc())
        finally:
            self.ch.close()
            self.srv.release_spid(self)
            self.log("close", reason=reason)

    # -- PRELOGIN, TLS, LOGIN7
    async def login_phase(self):
        first = await self.ch.peek_byte()
        if first == 0x16 and self.srv.config.strict_tls:
            await self.ch.start_tls_direct(self.srv.strict_ctx)
            self.strict = True
            self.srv.stats["strict"] += 1
        msg = await self.ch.read_message(PRELOGIN_MAX, LOGIN_MAX)
        if msg.type != c.PT_PRELOGIN:
            raise c.ProtocolError(f"first message is type 0x{msg.type:02x} "
                                  f"({c.PACKET_TYPE_NAMES.get(msg.type, '?')}), not PRELOGIN")
        opts = c.parse_prelogin(msg.payload)
        enc = opts.get(c.PL_ENCRYPTION, bytes([c.ENCRYPT_NOT_SUP]))[0]
        want_fedauth = c.PL_FEDAUTHREQUIRED in opts
        self.login_info.update(prelogin_encryption=c.ENCRYPT_NAMES.get(enc, hex(enc)),
                               prelogin_fedauth_required=want_fedauth,
                               prelogin_options=sorted(opts))
        if self.strict:
            reply_enc = c.ENCRYPT_STRICT if enc == c.ENCRYPT_STRICT else c.ENCRYPT_NOT_SUP
        else:
            if enc == c.ENCRYPT_STRICT:
                raise c.ProtocolError("ENCRYPT_STRICT in a PRELOGIN sent before TLS")
            reply_enc = c.ENCRYPT_REQ
        reply = [(c.PL_VERSION, bytes([12, 0]) + struct.pack(">H", 2000) + b"\0\0"),
                 (c.PL_ENCRYPTION, bytes([reply_enc])),
                 (c.PL_INSTOPT, b"\0"),
                 (c.PL_THREADID, b""),
                 (c.PL_MARS, b"\0")]
        if want_fedauth:
            reply.append((c.PL_FEDAUTHREQUIRED, b"\x01"))
        self.fedauth_required_sent = 1 if want_fedauth else 0
        self.log("prelogin", encryption=self.login_info["prelogin_encryption"], fedauth_required=want_fedauth,
                 strict=self.strict)
        # FreeTDS only takes the PRELOGIN answer in a "tabular result" packet.
        await self.send_message(c.build_prelogin(reply), c.PT_REPLY, DEFAULT_PACKET)

        if not self.strict:
            if enc in (c.ENCRYPT_OFF, c.ENCRYPT_ON, c.ENCRYPT_REQ):
                await self.ch.start_tls_wrapped(self.srv.ctx)
            else:
                # Azure requires encryption: a client that cannot do TLS is
                # told so in the PRELOGIN answer (REQ). If it goes on anyway
                # it gets an error and the connection is closed.
                self.srv.stats["refused_no_tls"] += 1
                msg = await self.ch.read_message(PRELOGIN_MAX, LOGIN_MAX)
                r = Reply(self.srv.config.name)
                r.error(18456, "Login failed: the server requires encryption (TLS) and the client does not "
                               "support it.", 14)
                r.done(c.DONE_ERROR)
                await self.send_message(bytes(r.buf), packet_size=DEFAULT_PACKET)
                self.log("login", result="fail", reason="no_encryption",
                         encryption=self.login_info["prelogin_encryption"],
                         next_message=c.PACKET_TYPE_NAMES.get(msg.type, hex(msg.type)))
                self.srv.count_login_failure("no_encryption", dict(self.login_info, reason="no_encryption"))
                raise Closed("client does not support encryption")
        ver, cipher = self.ch.tls_info()
        self.login_info.update(tls_version=ver, cipher=cipher, strict=self.strict, alpn=self.ch.alpn, sni=self.ch.sni)
        self.srv.stats["tls"][ver] = self.srv.stats["tls"].get(ver, 0) + 1
        self.log("tls", version=ver, cipher=cipher, sni=self.ch.sni, alpn=self.ch.alpn)

        msg = await self.ch.read_message(PRELOGIN_MAX, LOGIN_MAX)
        if msg.type != c.PT_LOGIN7:
            raise c.ProtocolError(f"expected LOGIN7 after TLS, got packet type 0x{msg.type:02x}")
        await self.login(c.parse_login7(msg.payload))

    def negotiate_packet_size(self, requested):
        forced = self.srv.runtime.get("packet_size")
        if forced:
            return forced
        if requested == 0:
            return DEFAULT_PACKET
        return max(512, min(SERVER_MAX_PACKET, requested))

    async def login(self, l7):
        cfg = self.srv.config
        info = self.login_info
        fa = l7.fedauth
        info.update(spid=self.spid, tds_version=f"0x{l7.tds_version:08x}",
                    tds_version_name=c.TDS_VERSIONS.get(l7.tds_version, "unknown"),
                    packet_size_requested=l7.packet_size, database_requested=l7.database,
                    app_name=l7.app_name, host_name=l7.host_name, library_name=l7.library_name,
                    user_name=l7.user_name, language=l7.language,
                    features=[f"0x{f:02x}" for f in l7.feature_order],
                    option_flags1=l7.option_flags1, option_flags2=l7.option_flags2,
                    type_flags=l7.type_flags, option_flags3=l7.option_flags3,
                    fedauth_library=None if fa is None else fa["library"],
                    fedauth_echo=None if fa is None else fa["echo"],
                    token_chars=None if fa is None or fa["token"] is None else len(fa["token"]),
                    time=now_iso())
        self.srv.stats["logins"]["attempts"] += 1
        rt = self.srv.runtime
        if rt.get("login_delay"):
            await asyncio.sleep(rt["login_delay"])
        try:
            principal, extra = self.authenticate(l7)
            database = l7.database or cfg.default_database
            if database.lower() not in self.srv.databases:
                raise LoginRefused("unknown_database", principal, [
                    (4060, f'Cannot open database "{database}" requested by the login. The login failed.', 11)])
            database = self.srv.canonical_db(database)
            fault = rt.get("fail_logins")
            if fault and fault.get("count", 0) != 0:
                if fault["count"] > 0:
                    fault["count"] -= 1
                raise LoginRefused("injected_fault", principal, [
                    (fault.get("number", 40613),
                     fault.get("message", f"Database '{database}' on server '{cfg.name}' is not currently available. "
                                          "Please retry the connection later."),
                     fault.get("class", 17))])
        except LoginRefused as e:
            await self.refuse_login(e)
            return
        if l7.tds_version >= 0x74000004 or l7.tds_version == 0x08000000:
            self.tds_version = 0x74000004
        elif l7.tds_version in c.TDS_VERSIONS and l7.tds_version >= 0x71000000:
            self.tds_version = l7.tds_version
        else:
            await self.refuse_login(LoginRefused("tds_version", principal))
            return
        self.packet_size = self.negotiate_packet_size(l7.packet_size)
        info.update(result="ok", reason="ok", principal=principal, database=database,
                    packet_size=self.packet_size, **extra)
        self.login_info = info
        acks = []
        if fa is not None:
            acks.append((c.FEATURE_FEDAUTH, b""))
        if c.FEATURE_UTF8_SUPPORT in l7.features:
            acks.append((c.FEATURE_UTF8_SUPPORT, b"\x01"))

        r = Reply(cfg.name)
        if rt.get("redirect_to"):
            host, port = rt["redirect_to"]
            r.add(c.loginack(self.tds_version))
            if acks:
                r.add(c.featureextack(acks))
            r.add(c.envchange_routing(host, port))
            r.done(0)
            info.update(redirected_to=f"{host}:{port}")
            self.srv.record_login(info, redirected=True)
            self.log("login", result="redirect", principal=principal, auth=info["auth"], to=f"{host}:{port}",
                     database=database)
            await self.send_message(bytes(r.buf), packet_size=DEFAULT_PACKET)
            raise Closed(f"redirected to {host}:{port}")
        self.state = sqlmod.SessionState(self.spid, principal, database, l7.option_flags2)
        self.state.app_name = l7.app_name
        self.state.host_name = l7.host_name
        r.envchange(c.ENV_DATABASE, database, "master")
        r.info(5701, f"Changed database context to '{database}'.")
        r.envchange(c.ENV_COLLATION, c.COLLATION, b"")
        r.envchange(c.ENV_LANGUAGE, "us_english", "")
        r.info(5703, "Changed language setting to us_english.")
        r.add(c.loginack(self.tds_version))
        if acks and l7.option_flags3 & 0x10:
            r.add(c.featureextack(acks))
        r.envchange(c.ENV_PACKETSIZE, str(self.packet_size), str(DEFAULT_PACKET))
        r.done(0)
        self.logged_in = True
        self.srv.record_login(info)
        self.log("login", result="ok", principal=principal, auth=info["auth"], database=database,
                 tds=info["tds_version"], packet_size=self.packet_size, echo=info["fedauth_echo"],
                 app=l7.app_name, library=l7.library_name)
        await self.send_message(bytes(r.buf), packet_size=DEFAULT_PACKET)

    def authenticate(self, l7):
        """(principal, extra info) or LoginRefused."""
        cfg = self.srv.config
        fa = l7.fedauth
        if fa is not None:
            extra = {"auth": "token"}
            if fa["library"] != c.FEDAUTH_LIB_SECURITYTOKEN:
                raise LoginRefused(f"fedauth_library_{fa['library']}", TOKEN_PRINCIPAL_PLACEHOLDER)
            if fa["echo"] != self.fedauth_required_sent:
                raise LoginRefused("fedauth_echo_mismatch", TOKEN_PRINCIPAL_PLACEHOLDER)
            if l7.user_name or l7.password:
                raise LoginRefused("fedauth_with_user_or_password", TOKEN_PRINCIPAL_PLACEHOLDER)
            if l7.sspi:
                raise LoginRefused("fedauth_with_sspi", TOKEN_PRINCIPAL_PLACEHOLDER)
            if l7.tds_version < 0x74000004 and l7.tds_version != 0x08000000:
                raise LoginRefused("fedauth_needs_tds_7_4", TOKEN_PRINCIPAL_PLACEHOLDER)
            try:
                claims = auth.validate_token(fa["token"], cfg.jwt_key, cfg.audiences, cfg.user_claim, cfg.skew)
            except auth.TokenRejected as e:
                cl = e.claims
                self.login_info.update(aud=cl.get("aud"), appid=cl.get("appid"), db_user=cl.get(cfg.user_claim))
                raise LoginRefused(e.reason, TOKEN_PRINCIPAL_PLACEHOLDER) from None
            principal = claims[cfg.user_claim]
            extra.update(aud=claims.get("aud"), appid=claims.get("appid"), oid=claims.get("oid"),
                         tid=claims.get("tid"), db_user=principal, exp=claims.get("exp"))
            if cfg.token_users is not None and principal not in cfg.token_users:
                raise LoginRefused("unknown_user", TOKEN_PRINCIPAL_PLACEHOLDER)
            return principal, extra
        if l7.user_name:
            extra = {"auth": "sql"}
            if cfg.sql_user is None:
                raise LoginRefused("sql_auth_not_configured", l7.user_name)
            ok_user = hmac.compare_digest(l7.user_name.lower().encode(), cfg.sql_user.lower().encode())
            ok_pw = hmac.compare_digest(l7.password.encode(), (cfg.sql_password or "").encode())
            if not ok_user:
                raise LoginRefused("unknown_sql_user", l7.user_name)
            if not ok_pw:
                raise LoginRefused("bad_password", l7.user_name)
            return cfg.sql_user, extra
        if l7.sspi:
            raise LoginRefused("sspi_not_supported", "")
        raise LoginRefused("no_credentials", "")

    async def refuse_login(self, e):
        r = Reply(self.srv.config.name)
        for number, message, cls in e.errors:
            r.error(number, message, cls)
        r.error(18456, LOGIN_FAIL_TEXT.format(e.principal), 14)
        r.done(c.DONE_ERROR)
        self.login_info.update(result="fail", reason=e.reason, principal=e.principal,
                               error_numbers=[n for n, _, _ in e.errors] + [18456])
        self.srv.count_login_failure(e.reason, self.login_info)
        self.log("login", result="fail", reason=e.reason, principal=e.principal,
                 auth="token" if self.login_info.get("fedauth_library") is not None else "sql")
        await self.send_message(bytes(r.buf), packet_size=DEFAULT_PACKET)
        raise Closed(f"login refused: {e.reason}")

    # -- requests
    async def serve(self):
        queue = asyncio.Queue()
        reader = asyncio.ensure_future(self.read_loop(queue))
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                msg = item
                if msg.type == c.PT_ATTENTION:
                    await self.on_attention_message()
                    continue
                await self.handle(msg)
        finally:
            reader.cancel()

    async def read_loop(self, queue):
        try:
            while True:
                msg = await self.ch.read_message(self.packet_size, MESSAGE_MAX)
                if msg.type == c.PT_ATTENTION:
                    self.attentions += 1
                    self.srv.stats["attentions"] += 1
                    self.attn_pending += 1
                    self.attn_event.set()
                    self.log("attention", busy=self.busy)
                await queue.put(msg)
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # hand the reason to the executor
            self.peer_gone = e
            self.attn_event.set()     # wake a WAITFOR: nobody is listening any more
            await queue.put(e)

    def interrupted(self):
        return self.attn_pending - self.attn_answered > 0

    async def on_attention_message(self):
        if self.attn_answered:
            self.attn_answered -= 1
        else:
            r = Reply(self.srv.config.name)
            r.done(c.DONE_ATTN)
            await self.send_message(bytes(r.buf))
        self.attn_pending -= 1
        if self.attn_pending <= 0:
            self.attn_pending = 0
            self.attn_event.clear()

    async def wait_or_attention(self, secs):
        """True when the wait ran out, False when an Attention cut it short."""
        if self.interrupted():
            return False
        try:
            await asyncio.wait_for(self._wait_attn(), secs)
        except asyncio.TimeoutError:
            return True
        if self.peer_gone is not None:
            raise Closed(f"client gone during WAITFOR ({self.peer_gone})")
        return False

    async def _wait_attn(self):
        while not self.interrupted() and self.peer_gone is None:
            self.attn_event.clear()
            await self.attn_event.wait()

    async def handle(self, msg):
        self.requests += 1
        self.srv.stats["requests"] += 1
        st = self.state
        r = Reply(self.srv.config.name)
        if msg.last_status & c.ST_IGNORE:
            self.log("request_ignored", type=msg.type)
            r.done(0)
            await self.send_message(bytes(r.buf))
            return
        reset = msg.status & (c.ST_RESETCONNECTION | c.ST_RESETCONNECTIONSKIPTRAN)
        if msg.type not in (c.PT_SQLBATCH, c.PT_RPC, c.PT_TRANSMGR):
            raise c.ProtocolError(f"unexpected message type 0x{msg.type:02x} "
                                  f"({c.PACKET_TYPE_NAMES.get(msg.type, '?')}) after login")
        if self.tds_version >= 0x72090002:      # ALL_HEADERS is mandatory from TDS 7.2 on
            hdrs, off = c.parse_all_headers(msg.payload)
        else:
            hdrs, off = {}, 0
        desc = hdrs.get(c.ALLHDR_TRANSACTION_DESCRIPTOR)
        if reset:
            self.do_reset(r, skip_tran=bool(msg.status & c.ST_RESETCONNECTIONSKIPTRAN) and
                          not msg.status & c.ST_RESETCONNECTION)
        self.busy = True
        try:
            if msg.type == c.PT_SQLBATCH:
                text = c.decode_utf16(msg.payload[off:], "SQL batch")
                self.last_request = {"kind": "batch", "sql": text[:500], "reset": bool(reset),
                                     "descriptor": desc[:8].hex() if desc else None, "time": now_iso()}
                self.srv.stats["batches"] += 1
                self.log("batch", sql=text[:300], reset=self.reset_name(msg.status),
                         descriptor=desc[:8].hex() if desc else None, trancount=st.trancount)
                await self.run_batch(r, text, in_proc=False)
            elif msg.type == c.PT_RPC:
                self.srv.stats["rpcs"] += 1
                await self.run_rpc(r, msg.payload, off, desc, msg.status)
            else:
                self.srv.stats["transmgr"] += 1
                req = c.parse_transmgr(msg.payload, off)
                self.last_request = {"kind": "transmgr", "request": req.get("type"), "reset": bool(reset),
                                     "time": now_iso()}
                self.log("transmgr", request=req.get("type"), reset=self.reset_name(msg.status))
                self.run_transmgr(r, req)
        finally:
            self.busy = False
        await self.send_message(bytes(r.buf))
        if self.pending_attn_ack:
            self.pending_attn_ack = False
            a = Reply(self.srv.config.name)
            a.done(c.DONE_ATTN)
            await self.send_message(bytes(a.buf))

    pending_attn_ack = False

    @staticmethod
    def reset_name(status):
        if status & c.ST_RESETCONNECTION:
            return "reset"
        if status & c.ST_RESETCONNECTIONSKIPTRAN:
            return "reset_skiptran"
        return None

    def do_reset(self, r, skip_tran):
        """What sp_reset_connection does: SET options, context info, temp
        tables, variables and the database go back to their login state and
        an open transaction is rolled back (not with SKIPTRAN); the isolation
        level is kept, as SQL Server keeps it."""
        st = self.state
        self.resets += 1
        self.srv.stats["resets_skiptran" if skip_tran else "resets"] += 1
        r.envchange(c.ENV_RESETACK, b"", b"")
        rolled_back = False
        if st.trancount and not skip_tran:
            r.envchange(c.ENV_ROLLBACKTRAN, b"", st.descriptor)
            st.trancount = 0
            st.descriptor = b"\0" * 8
            rolled_back = True
        old_db = st.database
        st.reset()
        if old_db != st.database:
            r.envchange(c.ENV_DATABASE, st.database, old_db)
        self.log("reset", skiptran=skip_tran, rolled_back=rolled_back)

    async def run_batch(self, r, text, in_proc, params=None):
        """Run a batch's statements; returns False if it ended in an error."""
        st = self.state
        done_tok = c.TOK_DONEINPROC if in_proc else c.TOK_DONE
        try:
            stmts = sqlmod.parse_batch(text)
        except sqlmod.SqlError as e:
            r.error(e.number, e.message, e.cls, e.state)
            st.error = e.number
            if not in_proc:
                r.done(c.DONE_ERROR)
            return False
        if not stmts:
            if not in_proc:
                r.done(0)
            return True
        st.variables = {}            # DECLAREd variables live for one batch
        engine = sqlmod.Engine(self.srv, st, params)
        n = len(stmts)
        nocount = lambda: st.options.get("NOCOUNT")
        for i, stmt in enumerate(stmts):
            last = i == n - 1
            more = 0 if (last and not in_proc) else c.DONE_MORE
            if self.interrupted():
                return self.finish_interrupted(r, in_proc)
            try:
                try:
                    res = engine.execute(stmt)
                except (sqlmod.SqlError, asyncio.CancelledError):
                    raise
                except Exception as e:   # a gap in the rig's SQL subset: say so, keep the session
                    self.log("internal_error", error=repr(e), sql=text[:300])
                    raise sqlmod.SqlError(50000, f"The rig's TDS server failed on this statement: "
                                                 f"{type(e).__name__}: {e}", 16) from None
                st.error = 0
            except sqlmod.SqlError as e:
                r.error(e.number, e.message, e.cls, e.state)
                st.error = e.number
                if st.options.get("XACT_ABORT") and st.trancount:
                    r.envchange(c.ENV_ROLLBACKTRAN, b"", st.descriptor)
                    st.trancount = 0
                    st.descriptor = b"\0" * 8
                stop = e.abort_batch or last
                r.done((c.DONE_ERROR | (c.DONE_MORE if (not stop or in_proc) else 0)), 0, 0, done_tok)
                if stop:
                    return False
                continue
            for kind, new, old in res.envchanges:
                r.envchange(kind, new, old)
            for number, message in res.infos:
                r.info(number, message)
            if res.wait is not None:
                if not await self.wait_or_attention(res.wait):
                    return self.finish_interrupted(r, in_proc)
            if res.columns is not None:
                cols = [(name, wire_type(ty)) for name, ty in res.columns]
                r.add(c.colmetadata(cols))
                for row in res.rows:
                    r.add(c.row(cols, row))
            status = more
            count = 0
            if res.count is not None and not nocount():
                status |= c.DONE_COUNT
                count = res.count
            r.done(status, res.curcmd, count, done_tok)
        return True

    def finish_interrupted(self, r, in_proc):
        """The reply to an interrupted request ends (EOM) normally; the
        DONE with ATTN follows as a message of its own (tedious needs that)."""
        self.attn_answered += 1
        self.pending_attn_ack = True
        if not in_proc:
            r.done(0)
        self.log("interrupted")
        return None

    async def run_rpc(self, r, payload, off, desc, status):
        try:
            calls = c.parse_rpc(payload, off)
        except c.UnsupportedType as e:
            self.log("rpc", error=str(e))
            r.error(8016, f"The rig's TDS server cannot decode this RPC: {e}.", 16)
            r.done(c.DONE_ERROR, 0, 0, c.TOK_DONEPROC)
            return
        for i, call in enumerate(calls):
            more = c.DONE_MORE if i < len(calls) - 1 else 0
            name = call["name"]
            self.last_request = {"kind": "rpc", "proc": name, "reset": bool(self.reset_name(status)),
                                 "descriptor": desc[:8].hex() if desc else None, "time": now_iso()}
            if name.lower() not in ("sp_executesql",) or not call["params"]:
                self.log("rpc", proc=name, supported=False)
                r.error(2812, f"Could not find stored procedure '{name}'. (The rig's TDS server supports "
                              "only sp_executesql over RPC.)", 16)
                r.done(c.DONE_ERROR | more, 0, 0, c.TOK_DONEPROC)
                continue
            params = call["params"]
            stmt_text = params[0][3]
            if not isinstance(stmt_text, str):
                r.error(214, "Procedure expects parameter '@statement' of type 'ntext/nchar/nvarchar'.", 16)
                r.done(c.DONE_ERROR | more, 0, 0, c.TOK_DONEPROC)
                continue
            values = {}
            try:
                decls = sqlmod.parse_param_decls(params[1][3]) if len(params) > 1 and params[1][3] else {}
            except sqlmod.SqlError as e:
                r.error(e.number, e.message, e.cls)
                r.done(c.DONE_ERROR | more, 0, 0, c.TOK_DONEPROC)
                continue
            for pname, _status, _ty, val in params[2:]:
                values[(pname or "").lower()] = val
            missing = [d for d in decls if d not in values]
            if missing:
                r.error(8178, f"The parameterized query expects the parameter '{missing[0]}', which was not supplied.", 16)
                r.done(c.DONE_ERROR | more, 0, 0, c.TOK_DONEPROC)
                continue
            self.log("rpc", proc=name, sql=stmt_text[:300], params=sorted(values),
                     reset=self.reset_name(status), descriptor=desc[:8].hex() if desc else None)
            ok = await self.run_batch(r, stmt_text, in_proc=True, params=values)
            if ok is None:     # interrupted
                r.done(0, 0, 0, c.TOK_DONEPROC)
                return
            r.add(c.returnstatus(0 if ok else -6))
            r.done((0 if ok else c.DONE_ERROR) | more, 0, 0, c.TOK_DONEPROC)

    def run_transmgr(self, r, req):
        st = self.state
        t = req["type"]
        engine = sqlmod.Engine(self.srv, st)
        try:
            if t == c.TM_BEGIN_XACT:
                if req.get("isolation"):
                    st.isolation = req["isolation"]
                res = engine.execute({"t": "begin"})
            elif t == c.TM_COMMIT_XACT:
                res = engine.execute({"t": "commit"})
            elif t == c.TM_ROLLBACK_XACT:
                res = engine.execute({"t": "rollback", "name": req.get("name")})
            elif t == c.TM_SAVE_XACT:
                res = engine.execute({"t": "save"})
            else:
                r.error(50000, f"TransMgrReq request type {t} is not supported by the rig.", 16)
                r.done(c.DONE_ERROR)
                return
        except sqlmod.SqlError as e:
            r.error(e.number, e.message, e.cls)
            r.done(c.DONE_ERROR)
            return
        for kind, new, old in res.envchanges:
            r.envchange(kind, new, old)
        if t in (c.TM_COMMIT_XACT, c.TM_ROLLBACK_XACT) and req.get("flags", 0) & 1:
            if req.get("isolation"):
                st.isolation = req["isolation"]
            res2 = engine.execute({"t": "begin"})
            for kind, new, old in res2.envchanges:
                r.envchange(kind, new, old)
        r.done(0)

    # -- control
    def describe(self):
        st = self.state
        ver, cipher = self.ch.tls_info()
        return {
            "spid": self.spid, "peer": self.peer, "logged_in": self.logged_in, "busy": self.busy,
            "principal": st.login if st else None, "auth": self.login_info.get("auth"),
            "database": st.database if st else None, "trancount": st.trancount if st else 0,
            "isolation": st.isolation if st else None,
            "context_info": st.context_info.hex() if st and st.context_info else None,
            "tds_version": self.login_info.get("tds_version"), "packet_size": self.packet_size,
            "tls_version": ver, "strict": self.strict, "requests": self.requests, "resets": self.resets,
            "attentions": self.attentions, "app_name": self.login_info.get("app_name"),
            "connected_at": self.connected_at, "last_request": self.last_request,
        }

    def kill(self):
        self.killed = True
        self.log("kill")
        self.ch.close()
        if self.task is not None:
            self.task.cancel()


def wire_type(ty):
    if ty.kind == "int":
        return c.ColType("int")
    if ty.kind == "bigint":
        return c.ColType("bigint")
    if ty.kind == "float":
        return c.ColType("float")
    if ty.kind == "bytes":
        return c.ColType("varbinary_max") if ty.max else c.ColType("varbinary", min(ty.size or 8000, 8000))
    return c.ColType("nvarchar_max") if ty.max else c.ColType("nvarchar", 4000)


# ---------------------------------------------------------------- server

class TdsServer:
    def __init__(self, config):
        self.config = config
        self.name = config.name
        self.version_string = VERSION_STRING
        self.database_list = list(config.databases)
        self.databases = {d.lower() for d in config.databases}
        self.max_replicate = config.max_replicate
        self.tables = {"kv": sqlmod.kv_table()}
        self.sessions = {}
        self.sni_seen = {}
        self.runtime = {"redirect_to": config.redirect_to, "fail_logins": None, "login_delay": 0,
                        "packet_size": config.packet_size}
        self.events = collections.deque(maxlen=EVENTS_MAX)
        self.event_seq = 0
        self.next_spid = 51
        self.descriptor_seq = int.from_bytes(os.urandom(3), "big") << 16
        self.log_fh = open(config.log_file, "a", buffering=1) if config.log_file else None
        self.ctx = self._tls_context(strict=False)
        self.strict_ctx = self._tls_context(strict=True)
        self.reset_stats()
        self.server = None
        self.admin = None
        self.port = None
        self.admin_port = None

    def _tls_context(self, strict):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.config.cert, self.config.key)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if strict:
            ctx.set_alpn_protocols(["tds/8.0"])
        else:
            # TLS inside PRELOGIN stays at 1.2 (what SQL Server does there).
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2

        def sni(obj, name, _ctx):
            self.sni_seen[id(obj)] = name
        ctx.sni_callback = sni
        return ctx

    def reset_stats(self):
        self.stats = {"connections": 0, "requests": 0, "batches": 0, "rpcs": 0, "transmgr": 0,
                      "resets": 0, "resets_skiptran": 0, "attentions": 0, "kills": 0, "redirects": 0,
                      "protocol_errors": 0, "refused_no_tls": 0, "strict": 0, "tls": {},
                      "logins": {"attempts": 0, "ok": 0, "failed": 0, "token": 0, "sql": 0, "by_reason": {}}}
        self.last_login = None
        self.logins = collections.deque(maxlen=500)

    # -- bookkeeping
    def alloc_spid(self, sess):
        for _ in range(40000):
            spid = self.next_spid
            self.next_spid = 51 if self.next_spid >= 32767 else self.next_spid + 1
            if spid not in self.sessions:
                self.sessions[spid] = sess
                return spid
        raise RuntimeError("no free SPID")

    def release_spid(self, sess):
        if self.sessions.get(sess.spid) is sess:
            del self.sessions[sess.spid]

    def session_states(self):
        return [s.state for s in list(self.sessions.values()) if s.state is not None]

    def canonical_db(self, name):
        for d in self.database_list:
            if d.lower() == name.lower():
                return d
        return name

    def new_descriptor(self):
        self.descriptor_seq += 1
        return struct.pack("<Q", self.descriptor_seq)

    def record_login(self, info, redirected=False):
        lg = self.stats["logins"]
        lg["ok"] += 1
        lg[info.get("auth", "sql")] = lg.get(info.get("auth", "sql"), 0) + 1
        if redirected:
            self.stats["redirects"] += 1
        self.last_login = dict(info)
        self.logins.append(dict(info))

    def count_login_failure(self, reason, info):
        lg = self.stats["logins"]
        lg["failed"] += 1
        lg["by_reason"][reason] = lg["by_reason"].get(reason, 0) + 1
        self.last_login = dict(info)
        self.logins.append(dict(info))

    def event(self, kind, **kw):
        if self.config.quiet and kind in QUIET_EVENTS:
            return
        self.event_seq += 1
        ev = {"seq": self.event_seq, "t": now_iso(), "event": kind}
        ev.update(kw)
        self.events.append(ev)
        self.logline(json.dumps(ev, default=str))

    def logline(self, line):
        if self.log_fh:
            try:
                self.log_fh.write(line.rstrip("\n") + "\n")
            except Exception:
                pass

    # -- lifecycle
    async def start(self):
        self.server = await asyncio.start_server(self._accept, self.config.host, self.config.port,
                                                 backlog=1024, limit=1 << 20)
        self.port = self.server.sockets[0].getsockname()[1]
        self.admin = await asyncio.start_server(self._admin, self.config.admin_host, self.config.admin_port)
        self.admin_port = self.admin.sockets[0].getsockname()[1]
        self.event("listening", port=self.port, admin_port=self.admin_port, name=self.name,
                   redirect_to=self.runtime["redirect_to"])

    async def stop(self):
        for srv in (self.server, self.admin):
            if srv is not None:
                srv.close()
        for s in list(self.sessions.values()):
            s.kill()
        await asyncio.sleep(0)

    async def _accept(self, reader, writer):
        self.stats["connections"] += 1
        sess = Session(self, reader, writer)
        sess.task = asyncio.current_task()
        sess.log("connect")
        await sess.run()

    def kill(self, spid=None):
        targets = list(self.sessions.values()) if spid is None else [self.sessions.get(spid)]
        n = 0
        for s in targets:
            if s is not None:
                s.kill()
                n += 1
        self.stats["kills"] += n
        return n

    # -- admin (HTTP/1.0, JSON)
    async def _admin(self, reader, writer):
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for ln in lines[1:]:
                if ":" in ln:
                    k, v = ln.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            body = b""
            n = int(headers.get("content-length", "0") or 0)
            if n:
                body = await asyncio.wait_for(reader.readexactly(n), 10)
            status, obj = self.admin_request(method, target, json.loads(body) if body else {})
        except Exception as e:
            status, obj = 400, {"error": f"{type(e).__name__}: {e}"}
        data = json.dumps(obj, default=str, indent=1).encode()
        writer.write(f"HTTP/1.0 {status} X\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
        try:
            await writer.drain()
        finally:
            writer.close()

    def admin_request(self, method, target, body):
        path, _, query = target.partition("?")
        q = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        if method == "GET" and path == "/stats":
            return 200, dict(self.stats, name=self.name, port=self.port, open=len(self.sessions),
                             last_login=self.last_login, redirect_to=self.runtime["redirect_to"])
        if method == "GET" and path == "/sessions":
            return 200, [s.describe() for s in sorted(self.sessions.values(), key=lambda s: s.spid)]
        if method == "GET" and path == "/logins":
            return 200, list(self.logins)
        if method == "GET" and path == "/events":
            since = int(q.get("since", 0))
            return 200, [e for e in self.events if e["seq"] > since]
        if method == "GET" and path == "/tables":
            return 200, {name: [list(r) for r in t.rows] for name, t in self.tables.items()}
        if method == "POST" and path == "/kill":
            if body.get("all"):
                return 200, {"killed": self.kill(None)}
            spid = int(body["spid"])
            if spid not in self.sessions:
                return 404, {"error": f"no session {spid}"}
            return 200, {"killed": self.kill(spid)}
        if method == "POST" and path == "/reset":
            self.reset_stats()
            self.events.clear()
            self.runtime.update(fail_logins=None, login_delay=0, redirect_to=self.config.redirect_to,
                                packet_size=self.config.packet_size)
            if body.get("tables"):
                self.tables = {"kv": sqlmod.kv_table()}
            return 200, {"ok": True}
        if method in ("GET", "POST") and path == "/config":
            if method == "POST":
                for k, v in body.items():
                    if k not in self.runtime:
                        return 400, {"error": f"unknown key {k}; known: {sorted(self.runtime)}"}
                    if k == "redirect_to" and v is not None:
                        host, port = v.rsplit(":", 1)
                        v = (host, int(port))
                    self.runtime[k] = v
            return 200, self.runtime
        return 404, {"error": f"no such endpoint {method} {path}"}


# ---------------------------------------------------------------- control clients (tests)

class TdsControl:
    """Client of the admin port: stats(), sessions(), logins(), events(since),
    kill(spid), kill_all(), reset(tables=False), config(**patch)."""

    def __init__(self, admin_url):
        self.admin_url = admin_url.rstrip("/")

    def _req(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.admin_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{method} {path}: {e.code} {e.read().decode(errors='replace')}") from None

    def stats(self):
        return self._req("GET", "/stats")

    def sessions(self):
        return self._req("GET", "/sessions")

    def logins(self):
        return self._req("GET", "/logins")

    def last_login(self):
        return self.stats()["last_login"]

    def events(self, since=0):
        return self._req("GET", f"/events?since={since}")

    def tables(self):
        return self._req("GET", "/tables")

    def kill(self, spid):
        return self._req("POST", "/kill", {"spid": spid})["killed"]

    def kill_all(self):
        return self._req("POST", "/kill", {"all": True})["killed"]

    def reset(self, tables=False):
        return self._req("POST", "/reset", {"tables": tables})

    def config(self, **patch):
        if patch:
            return self._req("POST", "/config", patch)
        return self._req("GET", "/config")


class TdsServerProcess(TdsControl):
    """The server as a child process. start() waits until it listens.

    proc = TdsServerProcess.start(cert=..., key=..., jwt_key_file=..., workdir=...,
                                  name="primary", redirect_to=None, packet_size=None,
                                  databases=("orders", "master"), sql_user=None,
                                  sql_password_file=None, audience=None, extra_args=())
    proc.port, proc.admin_port, proc.pid, proc.log_file; proc.stop()."""

    @classmethod
    def start(cls, cert, key, jwt_key_file, workdir, name="tokenpool-rig-tds", port=0, redirect_to=None,
              packet_size=None, databases=("orders", "master"), sql_user=None, sql_password_file=None,
              audience=None, extra_args=(), timeout=15):
        os.makedirs(workdir, exist_ok=True)
        ready = os.path.join(workdir, f"tds-{name}.ready.json")
        log = os.path.join(workdir, f"tds-{name}.log")
        out = os.path.join(workdir, f"tds-{name}.out")
        if os.path.exists(ready):
            os.unlink(ready)
        cmd = [sys.executable, os.path.abspath(__file__), "--port", str(port), "--cert", cert, "--key", key,
               "--jwt-key-file", jwt_key_file, "--name", name, "--databases", ",".join(databases),
               "--log-file", log, "--ready-file", ready, "--parent-pid", str(os.getpid())]
        if audience:
            cmd += ["--audience", audience]
        if redirect_to:
            cmd += ["--redirect-to", redirect_to]
        if packet_size:
            cmd += ["--packet-size", str(packet_size)]
        if sql_user:
            cmd += ["--sql-user", sql_user, "--sql-password-file", sql_password_file]
        cmd += list(extra_args)
        fh = open(out, "ab")
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT)
        fh.close()
        deadline = time.time() + timeout
        while not os.path.exists(ready):
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                with open(out, errors="replace") as f:
                    raise RuntimeError(f"TDS server {name} did not start:\n{f.read()[-3000:]}")
            time.sleep(0.02)
        with open(ready) as f:
            info = json.load(f)
        self = cls(info["admin_url"])
        self.proc = proc
        self.pid = proc.pid
        self.port = info["port"]
        self.admin_port = info["admin_port"]
        self.name = name
        self.log_file = log
        self.out_file = out
        return self

    def stop(self, timeout=5):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


# ---------------------------------------------------------------- CLI

def parse_args(argv):
    p = argparse.ArgumentParser(description="Stand-in Azure SQL Database (TDS) server for tokenpool tests")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = any free port (see --ready-file)")
    p.add_argument("--cert", required=True, help="PEM server certificate (chain)")
    p.add_argument("--key", required=True, help="PEM private key")
    p.add_argument("--jwt-key-file", required=True, help="the rig's HMAC key file (rig.json key_file)")
    p.add_argument("--audience", action="append",
                   help=f"accepted token audience, repeatable (default {DEFAULT_AUDIENCE}; "
                        "each is accepted with and without a trailing slash)")
    p.add_argument("--user-claim", default="db_user")
    p.add_argument("--token-users", help="comma list: only these db_user values may log in (default any)")
    p.add_argument("--skew", type=int, default=1, help="clock skew allowed on exp/nbf, seconds")
    p.add_argument("--redirect-to", help="HOST:PORT: answer logins with an ENVCHANGE 20 routing redirect")
    p.add_argument("--packet-size", type=int, help="force this packet size instead of the client's")
    p.add_argument("--name", default="tokenpool-rig-tds", help="@@SERVERNAME and ERROR server name")
    p.add_argument("--databases", default="orders,master")
    p.add_argument("--default-database")
    p.add_argument("--sql-user")
    p.add_argument("--sql-password-file")
    p.add_argument("--admin-host", default="127.0.0.1")
    p.add_argument("--admin-port", type=int, default=0)
    p.add_argument("--log-file")
    p.add_argument("--ready-file", help="written (JSON: port, admin_port, admin_url, pid) once listening")
    p.add_argument("--parent-pid", type=int, help="exit when this process is gone")
    p.add_argument("--no-strict", action="store_true", help="refuse TDS 8 (TLS-first) connections")
    p.add_argument("--quiet", action="store_true",
                   help="log connections and logins only, not every request (benchmarks)")
    a = p.parse_args(argv)
    if bool(a.sql_user) != bool(a.sql_password_file):
        p.error("--sql-user and --sql-password-file go together")
    return a


def config_from_args(a):
    redirect = None
    if a.redirect_to:
        host, port = a.redirect_to.rsplit(":", 1)
        redirect = (host, int(port))
    pw = None
    if a.sql_password_file:
        with open(a.sql_password_file) as f:
            pw = f.read().strip()
    dbs = [d.strip() for d in a.databases.split(",") if d.strip()]
    return Config(host=a.host, port=a.port, admin_host=a.admin_host, admin_port=a.admin_port,
                  cert=a.cert, key=a.key, jwt_key=auth.read_key(a.jwt_key_file),
                  audiences=a.audience or [DEFAULT_AUDIENCE], user_claim=a.user_claim,
                  token_users=set(a.token_users.split(",")) if a.token_users else None, skew=a.skew,
                  redirect_to=redirect, packet_size=a.packet_size, name=a.name, databases=dbs,
                  default_database=a.default_database, sql_user=a.sql_user, sql_password=pw,
                  log_file=a.log_file, strict_tls=not a.no_strict, quiet=a.quiet)


def write_ready(path, info):
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".ready-")
    with os.fdopen(fd, "w") as f:
        json.dump(info, f)
    os.rename(tmp, path)


async def amain(a):
    srv = TdsServer(config_from_args(a))
    await srv.start()
    info = {"port": srv.port, "admin_port": srv.admin_port, "pid": os.getpid(), "name": srv.name,
            "admin_url": f"http://{a.admin_host}:{srv.admin_port}"}
    if a.ready_file:
        write_ready(a.ready_file, info)
    print(f"READY port={srv.port} admin_port={srv.admin_port} name={srv.name}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def watch_parent():
        while True:
            await asyncio.sleep(1)
            try:
                os.kill(a.parent_pid, 0)
            except ProcessLookupError:
                stop.set()
                return
            except PermissionError:
                pass
    if a.parent_pid:
        asyncio.ensure_future(watch_parent())
    await stop.wait()
    srv.event("stopping")
    await srv.stop()


def main(argv=None):
    a = parse_args(sys.argv[1:] if argv is None else argv)
    asyncio.run(amain(a))


if __name__ == "__main__":
    main()
