"""Hostile and broken input on tokenpool's sqlserver port, from raw sockets.

  * 200 connections at once sending garbage (random bytes, a plausible
    PRELOGIN then garbage, a LOGIN7 whose offsets point outside it, a
    header claiming 65535 bytes then silence, TLS garbage inside PRELOGIN
    packets) are all hung up on within 15 s; tokenpool stays healthy and
    its memory does not grow over a second round.
  * Clients that stop halfway through their login (the engine drops them
    after its 60 s login timeout, not waited for here) neither block nor
    take the client slots of others.

The server behind the pool is the rig's TDS server. Runtime: about 10 s.
"""

import random
import socket
import ssl

import pytest

from helpers import garbage_round, growth_over_second_round, has_asan
from test_tds_common import sqlserver_config, tedious

import codec as c  # noqa: E402  (the rig's TDS codec; path set by test_tds_common)

HDR = c.HEADER.pack


def prelogin(encryption):
    return c.packetize(c.PT_PRELOGIN, c.build_prelogin([
        (c.PL_VERSION, bytes(6)), (c.PL_ENCRYPTION, bytes([encryption])), (c.PL_INSTOPT, b"\0"),
        (c.PL_THREADID, bytes(4)), (c.PL_MARS, b"\0")]), 4096)


def bad_login7():
    """A LOGIN7 whose user name offset and length point past its end."""
    l7 = bytearray(c.build_login7(user="app", password="app-password", database="orders"))
    l7[40:42] = (60000).to_bytes(2, "little")    # ibUserName
    l7[42:44] = (200).to_bytes(2, "little")      # cchUserName
    return c.packetize(c.PT_LOGIN7, bytes(l7), 4096)


def read_message(sock, timeout=5):
    """One whole TDS message from a plain socket: (type, payload)."""
    sock.settimeout(timeout)
    payload, buf = b"", b""
    while True:
        while len(buf) < 8:
            chunk = sock.recv(65536)
            assert chunk, "closed before a whole message"
            buf += chunk
        ptype, status, length, _, _, _ = c.HEADER.unpack(buf[:8])
        while len(buf) < length:
            chunk = sock.recv(65536)
            assert chunk, "closed before a whole message"
            buf += chunk
        payload += buf[8:length]
        buf = buf[length:]
        if status & c.ST_EOM:
            return ptype, payload


def healthy(rig, tp):
    assert tp.running, "tokenpool died:\n" + tp.output()[-4000:]
    out = tedious(rig, tp.listen[1], [{"sql": "SELECT SUSER_SNAME(), 1 + 1"}])
    assert out["connect"]["ok"], out
    assert out["results"][0]["rows"] == [[rig.identity("system")["db_user"], 2]]


@pytest.fixture
def tp(rig, tokenpool, free_port):
    t = tokenpool(sqlserver_config(rig, rig.tds_port, free_port, log={"level": "info"}))
    healthy(rig, t)  # the pool has its server and login reply before the abuse
    return t


# ---------------------------------------------------------------- 200 at once

KINDS = ("random", "prelogin_then_garbage", "login7_out_of_bounds", "header_65535_then_silence",
         "tls_garbage_in_prelogin")


def _opening(kind, i, rnd):
    """What a garbage connection sends first, and whether it then keeps
    sending garbage (True) or falls silent (False)."""
    if kind == "random":
        return bytes([rnd.randrange(0, 256)]) + rnd.randbytes(rnd.randrange(16, 2048)), True
    if kind == "prelogin_then_garbage":
        # ENCRYPTION NOT_SUP: answered NOT_SUP, LOGIN7 in clear is next.
        return prelogin(c.ENCRYPT_NOT_SUP), True
    if kind == "login7_out_of_bounds":
        return prelogin(c.ENCRYPT_NOT_SUP) + bad_login7(), False
    if kind == "header_65535_then_silence":
        # At each login phase: first packet, LOGIN7 after a PRELOGIN, and
        # inside the TLS handshake.
        head = HDR(c.PT_PRELOGIN, 1, 0xFFFF, 0, 1, 0) + b"\x00" * 20
        phase = (i // len(KINDS)) % 3
        if phase == 1:
            return prelogin(c.ENCRYPT_NOT_SUP) + HDR(c.PT_LOGIN7, 1, 0xFFFF, 0, 1, 0) + b"\x00" * 20, False
        if phase == 2:
            return prelogin(c.ENCRYPT_ON) + head, False
        return head, False
    # TLS records that are not a handshake, inside PRELOGIN packets.
    junk = b"\x16\x03\x01\x00\x40" + rnd.randbytes(64) + b"\x17\x03\x03\x00\x10" + rnd.randbytes(16)
    return prelogin(c.ENCRYPT_ON) + c.packetize(c.PT_PRELOGIN, junk, 4096), False


def _round_opening(i, rnd):
    """Connection i of a garbage round: the kinds in turn."""
    kind = KINDS[i % len(KINDS)]
    return (kind,) + _opening(kind, i, rnd)


def _garbage(kind, rnd):
    return bytes([rnd.randrange(0, 256)]) + rnd.randbytes(rnd.randrange(16, 2048))


def test_200_connections_sending_garbage(rig, tp):
    """Every garbage connection is hung up on and nothing leaks. The first
    round warms the allocator (and ASan's quarantine); growth is measured
    across the second, where a per-connection leak would show."""
    rnd = random.Random(4242)
    grown = growth_over_second_round(tp.pid, lambda: garbage_round(tp.listen, rnd, _round_opening, _garbage),
                                     lambda: healthy(rig, tp))
    # A leaked 64 KB buffer per connection would add 12.8 MB.
    bound = 6 * 1024 + (6 * 1024 if has_asan(tp.pid) else 0)
    assert grown < bound, f"tokenpool's RSS grew by {grown} kB over the second round"
    # Nothing reached the server: garbage never gets past the client login.
    assert rig.tds().stats()["logins"]["attempts"] <= 2


@pytest.mark.parametrize("kind", KINDS[1:])
def test_each_kind_is_refused_at_once(rig, tp, kind):
    """One connection of each kind: hung up on within 5 s (with a TDS error
    first where the client speaks TDS well enough to read one)."""
    rnd = random.Random(7)
    for phase in range(3 if kind == "header_65535_then_silence" else 1):
        first, keep_sending = _opening(kind, phase * len(KINDS), rnd)
        s = socket.create_connection(tp.listen, timeout=5)
        s.sendall(first)
        if keep_sending:
            s.sendall(HDR(0x53, 1, 40, 0, 1, 0) + rnd.randbytes(32))
        data = b""
        s.settimeout(5)
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
        except socket.timeout:
            pytest.fail(f"{kind}: connection still open after 5 s (got {data[:64]!r})")
        finally:
            s.close()
        if kind == "login7_out_of_bounds":
            # PRELOGIN answer, then ERROR 4002 and DONE.
            _, _, length, _, _, _ = c.HEADER.unpack(data[:8])
            toks = c.parse_tokens(data[length + 8:])
            errs = [f for k, f in toks if k == "ERROR"]
            assert [e["number"] for e in errs] == [4002] and "LOGIN7" in errs[0]["message"], toks
    healthy(rig, tp)


# ---------------------------------------------------------------- half-open logins

def _half_open(tp, rig, stage):
    """A connection that stops at `stage` of its login."""
    s = socket.create_connection(tp.listen, timeout=5)
    if stage == "tcp":
        return s
    if stage == "partial_header":
        s.sendall(b"\x12\x01\x00")
        return s
    if stage == "after_prelogin":
        s.sendall(prelogin(c.ENCRYPT_NOT_SUP))
        assert read_message(s)[0] == c.PT_REPLY
        return s
    s.sendall(prelogin(c.ENCRYPT_ON))
    assert read_message(s)[0] == c.PT_REPLY
    if stage == "before_client_hello":
        return s
    ctx = ssl.create_default_context(cafile=rig.ca_file)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(inc, out, server_hostname="localhost")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    s.sendall(c.packetize(c.PT_PRELOGIN, out.read(), 4096))
    ptype, flight = read_message(s)
    assert ptype == c.PT_PRELOGIN
    if stage == "mid_tls":
        return s
    inc.write(flight)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:  # TLS 1.2: our Finished out, the server's due
        s.sendall(c.packetize(c.PT_PRELOGIN, out.read(), 4096))
        ptype, flight = read_message(s)
        assert ptype == c.PT_PRELOGIN
        inc.write(flight)
        tls.do_handshake()
    # After TLS: a LOGIN7 header announcing 2000 bytes, 100 of them sent.
    l7 = c.build_login7(user="app", password="app-password", database="orders")
    pkt = HDR(c.PT_LOGIN7, 1, 8 + len(l7), 0, 1, 0) + l7
    tls.write(pkt[:100])
    s.sendall(out.read())
    return s


STAGES = ("tcp", "partial_header", "after_prelogin", "before_client_hello", "mid_tls", "partial_login7")


def test_half_open_logins_do_not_block_others(rig, tokenpool, free_port):
    """30 clients stalled at six points of the login; max_clients is 2, so
    if any of them held a client slot (or the event loop), the normal
    clients below could not log in."""
    tp = tokenpool(sqlserver_config(rig, rig.tds_port, free_port, log={"level": "info"},
                                    pool={"max_clients": 2}))
    healthy(rig, tp)
    stalled = [_half_open(tp, rig, stage) for stage in STAGES for _ in range(5)]
    try:
        for _ in range(4):
            healthy(rig, tp)
        out = tedious(rig, tp.listen[1], [{"sql": "SELECT 1"}], encrypt=False)
        assert out["results"][0]["rows"] == [[1]], out
        # The stalled ones are still there, unanswered: they wait for the
        # login timeout (60 s), which nobody else waits for.
        for s in stalled:
            s.settimeout(0.05)
            with pytest.raises(socket.timeout):
                s.recv(1)
        log = tp.output()
        assert log.count("client connected") >= len(stalled) + 6
        assert log.count("client logged in as app") >= 6
        assert "login did not finish in time" not in log
    finally:
        for s in stalled:
            s.close()
    healthy(rig, tp)
