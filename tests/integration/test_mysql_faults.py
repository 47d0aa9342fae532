"""The rig's MariaDB going away under tokenpool, seen from MySQL clients.

  * Restarted while clients run queries: those whose server died get an
    error (an idle one is told why, MySQL-style, before the close), the
    rest of the run succeeds, every client recovers once MariaDB is back,
    and tokenpool neither crashes nor leaks descriptors or memory.
  * Stopped: a client gets a 2013 error saying the server cannot be
    reached, within connect_timeout; started again: service resumes.
  * Idle pooled sessions ended by the server (KILL, wait_timeout) are not
    handed to the next client, in session and transaction mode.
  * A server that goes silent (packets dropped, no FIN or RST: a failover
    or a dead route) costs a client about 30 s and a clear error, not the
    quarter of an hour TCP would retransmit for (timer_bound).

Runtime: about 65 s.
"""

import os
import re
import shutil
import socket
import struct
import subprocess
import time

import pymysql
import pytest

from helpers import (SessionClients, assert_clients_recovered, assert_no_leak, has_asan, mysql_connect,
                     mysql_whoami, open_fds, rss_kb, wait_until)

CONNECT_TIMEOUT = 3


def connect(tp, **kw):
    kw.setdefault("connect_timeout", 10)
    return mysql_connect(tp, **kw)


def whoami(tp):
    return mysql_whoami(tp, connect_timeout=10)


def _server_sessions(rig, user):
    """Connection ids of the token user's sessions on MariaDB."""
    return {int(r[0]) for r in rig.mysql_admin("SELECT ID FROM information_schema.PROCESSLIST "
                                               f"WHERE USER = '{user}'")}


def _session_query(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM information_schema.COLLATIONS")
        assert cur.fetchone()[0] > 0


def session_clients(tp, n):
    """n pymysql sessions running a query in a loop (SessionClients)."""
    return SessionClients(n, lambda: connect(tp), _session_query, pymysql.err.MySQLError,
                          lambda e, conn: repr(e))


# ---------------------------------------------------------------- a raw client

def _recv_packet(sock):
    head = b""
    while len(head) < 4:
        chunk = sock.recv(4 - len(head))
        if not chunk:
            return None
        head += chunk
    n = head[0] | head[1] << 8 | head[2] << 16
    body = b""
    while len(body) < n:
        chunk = sock.recv(n - len(body))
        assert chunk, "closed inside a packet"
        body += chunk
    return body


def raw_session(tp):
    """A logged-in client on a raw socket (pymysql does the login; we take
    its socket and read what tokenpool sends unasked)."""
    conn = connect(tp)
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
    sock = socket.socket(fileno=os.dup(conn._sock.fileno()))
    return conn, sock


# ---------------------------------------------------------------- restart

def _quiet(rig, user, others):
    """Wait until tokenpool holds no server connection (idle_timeout 1 s);
    others: sessions that are not this tokenpool's."""
    wait_until(lambda: not (_server_sessions(rig, user) - others), 10,
               "idle server connections to close")
    time.sleep(1.2)  # let tokenpool finish closing its side too


def test_mariadb_restart_mid_run(rig, tokenpool, mysql_config):
    user = rig.identity("system")["db_user"]
    n = 4
    others = _server_sessions(rig, user)
    tp = tokenpool(mysql_config(pool={"mode": "session", "size": n + 1, "idle_timeout": 1,
                                      "connect_timeout": 5, "wait_timeout": 10}))
    with session_clients(tp, n) as warm:  # allocator pools grown before the baseline
        time.sleep(1.5)
    assert not [e for log in warm.log for _, e in log if e]
    _quiet(rig, user, others)
    before = rss_kb(tp.pid), open_fds(tp.pid)

    idle_conn, idle = raw_session(tp)
    try:
        with session_clients(tp, n) as run:
            time.sleep(1.5)
            t_down = time.monotonic()
            rig.restart_mysql("immediate")
            t_up = time.monotonic()
            time.sleep(2)
            assert whoami(tp) == user  # a new client once MariaDB is back
        assert tp.running, "tokenpool died\n" + tp.output()[-6000:]
        # The idle client is told, before the close, with an ERR packet.
        idle.settimeout(5)
        pkt = _recv_packet(idle)
        assert pkt is not None and pkt[0] == 0xFF, pkt
        code = struct.unpack("<H", pkt[1:3])[0]
        assert code == 2013, pkt
        assert pkt[3:4] == b"#" and len(pkt) > 9, pkt  # SQLSTATE and a message
        assert _recv_packet(idle) is None
    finally:
        idle.close()
        try:
            idle_conn.close()
        except Exception:
            pass

    for errs in assert_clients_recovered(run.log, t_down, t_up, "MariaDB"):
        codes = {int(m.group(1)) for _, e in errs for m in [re.search(r"\((\d+),", e)] if m}
        assert codes <= {2013, 2006, 1927, 1053}, errs[:3]

    # Connection ids start again after a restart: any session now is one
    # of this tokenpool's.
    _quiet(rig, user, set())
    assert_no_leak(tp.pid, before, rss_bound=2048 + (8192 if has_asan(tp.pid) else 0))
    assert whoami(tp) == user


def test_mariadb_stopped_then_started(rig, tokenpool, mysql_config):
    user = rig.identity("system")["db_user"]
    tp = tokenpool(mysql_config(pool={"connect_timeout": CONNECT_TIMEOUT, "wait_timeout": 20}))
    assert whoami(tp) == user  # a server connection now sits idle in the pool
    rig.stop_mysql()
    try:
        for _ in range(2):
            t0 = time.monotonic()
            with pytest.raises(pymysql.err.OperationalError) as exc:
                conn = connect(tp)
                try:
                    with conn.cursor() as cur:
                        cur.execute("SELECT 1")
                finally:
                    conn.close()
            took = time.monotonic() - t0
            code, msg = exc.value.args[0], exc.value.args[1]
            assert code == 2013, exc.value.args
            assert re.search(r"connect.*refused", msg, re.I), msg
            assert took < CONNECT_TIMEOUT + 2, f"refusal took {took:.1f}s"
    finally:
        rig.start_mysql()
    t0 = time.monotonic()
    assert whoami(tp) == user
    assert time.monotonic() - t0 < 5
    assert tp.running


# ---------------------------------------------------------------- idle server connections closed by the server

@pytest.mark.parametrize("mode", ["session", "transaction"])
@pytest.mark.parametrize("how", ["killed", "wait_timeout"])
def test_pooled_connection_closed_by_the_server_is_not_handed_out(rig, tokenpool, mysql_config, mode, how):
    """MySQL closes an idle session on KILL, at wait_timeout or on failover;
    the pooled connection it was must not be what the next client gets."""
    user = rig.identity("system")["db_user"]
    try:
        if how == "wait_timeout":  # a session takes the global value when it starts
            rig.mysql_admin("SET GLOBAL wait_timeout = 2")
        tp = tokenpool(mysql_config(pool={"mode": mode, "size": 3}))
        conns = [connect(tp) for _ in range(3)]  # three server connections, then idle in the pool
        for c in conns:
            with c.cursor() as cur:
                cur.execute("BEGIN")  # holds its server in transaction mode too
                cur.execute("SELECT 1")
        for c in conns:
            c.close()
        before = wait_until(lambda: len(ids := _server_sessions(rig, user)) == 3 and ids,
                            10, "three idle server sessions")
        if how == "killed":
            for cid in before:
                rig.mysql_admin(f"KILL {cid}")
        wait_until(lambda: not (_server_sessions(rig, user) & before), 10, "MariaDB to end them")
    finally:
        rig.mysql_admin("SET GLOBAL wait_timeout = DEFAULT")
    # Each client, right away, runs its query on a live server session.
    for _ in range(5):
        conn = connect(tp)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT CURRENT_USER(), CONNECTION_ID()")
                who, cid = cur.fetchone()
            assert who == f"{user}@%" and cid not in before
        finally:
            conn.close()
    assert tp.running


# ---------------------------------------------------------------- a server gone silent

IPTABLES = shutil.which("iptables") or "/usr/sbin/iptables"  # tests/deps.sh installs it


def _blackhole(port, on):
    """Drop, on arrival, every TCP packet to or from `port` on this host:
    the peer neither answers nor resets, as a vanished server."""
    for rule in (["--dport", str(port)], ["--sport", str(port)]):
        cmd = [IPTABLES, "-I" if on else "-D", "INPUT", "-p", "tcp", *rule, "-j", "DROP"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 or not on, f"{cmd}: {r.stderr}"


@pytest.mark.timer_bound
def test_silent_server_costs_a_client_half_a_minute_not_a_quarter_hour(rig, tokenpool, mysql_config):
    tp = tokenpool(mysql_config(pool={"mode": "session", "size": 2}))
    conn = connect(tp, read_timeout=300)
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
    _blackhole(rig.mysql_port, True)
    try:
        t0 = time.monotonic()
        with pytest.raises(pymysql.err.OperationalError) as exc:
            with conn.cursor() as cur:
                cur.execute("SELECT 2")  # unacknowledged from here on
        took = time.monotonic() - t0
    finally:
        _blackhole(rig.mysql_port, False)
        conn.close()
    code, msg = exc.value.args[0], exc.value.args[1]
    assert code == 2013, (code, msg)
    assert 20 < took < 60, f"the client waited {took:.0f} s"
    assert "server connection lost: connection timed out" in msg, msg
    # The pool goes on with a fresh server.
    assert whoami(tp) == rig.identity("system")["db_user"]
    assert tp.running
