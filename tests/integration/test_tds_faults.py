"""Faults around tokenpool's sqlserver pools, seen from tedious clients.

Identity endpoint (the rig's IdP):
  * while a valid token is cached, a refresh that meets a 500, a 429 with
    Retry-After, a connection reset or a hang costs clients nothing;
  * with no valid token, a client gets an error naming the identity problem
    within the pool's connect_timeout, and service comes back by itself
    when the endpoint recovers.
Upstream (the TDS server standing in for Azure SQL):
  * its process stopped mid-run and started again on the same port: clients
    that held a server get a clear error, new clients work once it is back,
    the pool keeps no dead server (session and transaction mode);
  * sessions killed on the server: a client that held one is told, the next
    client works, and a killed idle server is never handed out.

Runtime: about 45 s (20 s of it the staggered refreshes).
"""

import re
import time

import pytest

from helpers import wait_until
from test_tds_common import (CLIENT_PASSWORD, CLIENT_USER, ClientLoop, TdsServerProcess, errors_in, metric,
                             metrics, sqlserver_config, tedious)

import codec  # noqa: E402  (the rig's TDS codec; path set by test_tds_common)
from client import TdsClient  # noqa: E402

CONNECT_TIMEOUT = 3


def imds_issued(rig):
    st = rig.idp_stats()
    return st["issued"]["imds"] + st["issued"]["app_service"]


def churn_pool(**extra):
    """Pool settings that make tokenpool log in upstream all the time: a
    server lives 3 s, so client logins keep needing new server logins.
    (Not 1 s: a server whose login takes longer than its lifetime, as on a
    loaded machine, is dropped by the engine and its waiting clients are
    refused with "server login failed" - see the report on proxy/pool.c.)"""
    pool = {"mode": "session", "size": 3, "lifetime": 3, "idle_timeout": 1,
            "connect_timeout": 10, "wait_timeout": 20}
    pool.update(extra)
    return pool


# ---------------------------------------------------------------- identity faults, token cached

# The four fault kinds each meet the first refresh of their own tokenpool.
# tokenpool refreshes a short token at three quarters of its life and a
# server login takes the cached token while it has 2 s left; a failed
# refresh is retried after ~1 s (or Retry-After). The tokenpools are
# started with tokens of different lifetimes, so their first refreshes
# come 3.75 s apart (7.5, 11.25, 15, 18.75 s); each fault goes into the
# IdP's queue once the previous tokenpool has its new token, which is long
# (the lifetime goes up to an hour once all have started) so nothing else
# asks the IdP meanwhile. A hang is released by the test once it has been
# served (tokenpool's own 10 s HTTP timeout is test_pg_faults' business).
STAGGER = [
    # (fault kind, count, retry_after, lifetime, identity, source)
    ("500", 1, None, 10, "system", "imds"),
    ("429", 1, 2, 15, "reports", "imds"),
    ("reset", 1, None, 20, "billing", "imds"),
    ("hang", 1, None, 25, "system", "app_service"),
]


def _fault_owner(rig, entry):
    """(identity name, source) of a token request the IdP recorded."""
    for name in ("reports", "billing"):
        if rig.identity(name)["client_id"] in entry.get("query", ""):
            return name, entry["endpoint"]
    return "system", entry["endpoint"]


@pytest.mark.timer_bound
def test_identity_faults_while_token_cached_cost_clients_nothing(rig, tokenpool, free_port, tmp_path):
    tps = []
    for kind, _, _, lifetime, ident, source in STAGGER:
        rig.idp_config(lifetime=lifetime)
        before = imds_issued(rig)
        identity = {"source": source}
        env = None
        if source == "imds":
            identity["imds_endpoint"] = rig.imds_endpoint
        else:
            env = {"IDENTITY_ENDPOINT": rig.app_service_endpoint, "IDENTITY_HEADER": rig.header_secret}
        if ident != "system":
            identity["client_id"] = rig.identity(ident)["client_id"]
        cfg = sqlserver_config(rig, rig.tds_port, free_port, identity=identity, pool=churn_pool(),
                               client_tls={"mode": "disable"})
        tps.append(tokenpool(cfg, env=env))
        wait_until(lambda: imds_issued(rig) > before, 10, f"the first token of the {kind} tokenpool")
    rig.idp_config(lifetime=3600)
    loop = ClientLoop(str(tmp_path), [{"port": tp.listen[1], "workers": 2} for tp in tps],
                      encrypt=False).start()
    try:
        base = imds_issued(rig)
        for i, (kind, count, retry_after, lifetime, ident, source) in enumerate(STAGGER):
            rig.idp_fault(kind, count=count, retry_after=retry_after)
            if kind == "hang":
                wait_until(lambda: rig.idp_stats()["faults"].get("hang"), 30, "the hang to be served")
                time.sleep(0.3)
                rig.idp_fault("none")   # the IdP closes the hung request without an answer
            wait_until(lambda: imds_issued(rig) >= base + i + 1, 30, f"a token after the {kind} fault")
        time.sleep(1.5)  # keep logging in on the refreshed tokens
    finally:
        logs = loop.stop()
    st = rig.idp_stats()
    assert st["faults"] == {kind: 1 for kind, *_ in STAGGER}, st
    # Each fault met the refresh of the tokenpool it was meant for.
    recent = st["recent"]
    windows = []
    for kind, _, retry_after, lifetime, ident, source in STAGGER:
        i = next(i for i, e in enumerate(recent) if e.get("fault") == kind)
        assert _fault_owner(rig, recent[i]) == (ident, source), (kind, recent)
        mine = [e for e in recent if _fault_owner(rig, e) == (ident, source)]
        first, after = mine[0], [e for e in recent[i + 1:] if _fault_owner(rig, e) == (ident, source)]
        assert first.get("status") == 200 and after and after[0].get("status") == 200, (kind, recent)
        # The fault met a refresh while the cached token was still valid.
        assert recent[i]["t"] < first["t"] + lifetime - 1, (kind, first, recent[i])
        if retry_after:  # Retry-After was honoured
            assert after[0]["t"] - recent[i]["t"] >= retry_after - 0.2, (kind, recent)
        windows.append((recent[i]["t"], after[0]["t"]))
    for (kind, *_, ident, _), tp, log, (fault_t, fixed_t) in zip(STAGGER, tps, logs, windows):
        # Clients logged in between the fault and the refreshed token too.
        assert any(ok and fault_t <= t <= fixed_t + 0.5 for t, _, ok, _ in log), (kind, fault_t, fixed_t)
        errors = errors_in(log)
        assert not errors, f"{len(errors)} client errors around the {kind} fault, first: {errors[:3]}\n" \
                           + tp.output()[-5000:]
        assert len(log) >= 50, f"only {len(log)} logins through the {kind} tokenpool"
        assert {d for _, _, _, d in log} == {rig.identity(ident)["db_user"]}
        assert tp.running


# ---------------------------------------------------------------- identity faults, no token

LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z \w+\s+(C-\d+) .*?: (.*)$")


def refusal_delays(output):
    """Per client that was refused: seconds from its login (tokenpool's
    "client logged in" line) to its refusal, from tokenpool's own log, so
    a slow client process on a loaded machine does not count."""
    from datetime import datetime

    logged_in, delays = {}, []
    for line in output.splitlines():
        m = LOG_LINE.match(line)
        if not m:
            continue
        t = datetime.fromisoformat(m.group(1)).timestamp()
        if m.group(3).startswith("client logged in"):
            logged_in[m.group(2)] = t
        elif m.group(3).startswith("refusing:") and m.group(2) in logged_in:
            delays.append(t - logged_in[m.group(2)])
    return delays


@pytest.mark.parametrize("kind", ["500", "hang"])
def test_no_token_gives_clear_error_within_connect_timeout_then_recovers(rig, tokenpool, free_port, kind):
    rig.idp_fault(kind, count=-1)  # from before the first fetch, until cleared
    tp = tokenpool(sqlserver_config(rig, rig.tds_port, free_port, log={"level": "info"},
                                    pool={"connect_timeout": CONNECT_TIMEOUT, "wait_timeout": 20}))
    port = tp.listen[1]
    for _ in range(2):  # the first client of the pool, then another while it still fails
        out = tedious(rig, port, [{"sql": "SELECT 1"}])
        assert not out["connect"]["ok"], out
        msg = out["connect"]["error"]
        # Names the token, the scope and the identity source; the cause
        # when the endpoint gave one.
        assert msg.startswith("no access token for https://database.windows.net/.default"), msg
        assert "imds" in msg, msg
        if kind == "500" and "HTTP" in msg:
            assert "HTTP 500" in msg, msg
        assert [e["errorMessage"]["number"] for e in out["events"] if "errorMessage" in e] == [40613]
        assert out["connect"]["ms"] < 60000, out["connect"]       # nothing hangs
    delays = refusal_delays(tp.output())
    assert len(delays) == 2 and all(d < CONNECT_TIMEOUT + 1 for d in delays), (delays, tp.output()[-3000:])
    assert rig.tds().stats()["logins"]["attempts"] == 0
    rig.idp_fault("none")  # the endpoint recovers (hung requests released)
    t0 = time.monotonic()
    out = tedious(rig, port, [{"sql": "SELECT SUSER_SNAME()"}])
    assert out["connect"]["ok"], out
    assert time.monotonic() - t0 < 15, "service did not resume by itself"
    assert out["results"][0]["rows"] == [[rig.identity("system")["db_user"]]]
    assert tp.running


# ---------------------------------------------------------------- upstream restart

def _told(cl):
    """What an idle raw session is told before its connection closes:
    the ERROR tokens, or None if it closed without a word."""
    cl.sock.settimeout(10)
    try:
        ptype, payload, _ = cl.read_message()
    except (ConnectionError, OSError):
        return None
    assert ptype == codec.PT_REPLY
    errs = [f for k, f in codec.parse_tokens(payload) if k == "ERROR"]
    assert cl.closed_by_server(timeout=5)
    return errs


def _raw_session(rig, port):
    cl = TdsClient("127.0.0.1", port, rig.ca_file)
    cl.login(user=CLIENT_USER, password=CLIENT_PASSWORD, fedauth_required=False)
    assert cl.scalar("SELECT 1") == 1
    return cl


CLEAR_LOST = re.compile(r"server connection lost|cannot connect|connection refused", re.I)
# What tedious says when the connection closes while no request runs: it
# ignores the ERROR token tokenpool sends first (a session that dies while
# idle on a real SQL Server gives it nothing more either).
TEDIOUS_IDLE_LOSS = re.compile(r"Connection lost - socket hang up|not the Final state")
# Requests that take a while, so clients are mostly inside one when the
# server goes away and tedious reports what tokenpool said.
SLOW_SQL = "WAITFOR DELAY '00:00:00.200'; SELECT @@SPID"


def _assert_clear(errs, what):
    assert all(CLEAR_LOST.search(d) or TEDIOUS_IDLE_LOSS.search(d) for _, _, d in errs), (what, errs[:5])
    told = [d for _, _, d in errs if CLEAR_LOST.search(d)]
    assert len(told) * 2 >= len(errs), f"{what}: few errors said what happened: {errs[:5]}"
    assert all("40613" in d for d in told), (what, told[:5])


def test_upstream_restart_mid_run(rig, tokenpool, free_port, tmp_path):
    """The TDS server's process stops while clients run queries (session
    mode: they hold servers; transaction mode: servers sit idle in the pool
    between requests) and starts again on the same port 1.5 s later."""
    work = str(tmp_path)
    start = dict(cert=rig.server_cert_file, key=rig.server_key_file, jwt_key_file=rig.key_file,
                 workdir=work, name="restart", databases=("orders", "master"))
    srv = TdsServerProcess.start(**start)
    port = srv.port
    try:
        sess = tokenpool(sqlserver_config(rig, port, free_port,
                                          pool={"mode": "session", "size": 4, "connect_timeout": CONNECT_TIMEOUT,
                                                "wait_timeout": 10}))
        txn = tokenpool(sqlserver_config(rig, port, free_port, client_tls={"mode": "disable"},
                                         pool={"mode": "transaction", "size": 2,
                                               "connect_timeout": CONNECT_TIMEOUT, "wait_timeout": 10}))
        idle = _raw_session(rig, sess.listen[1])
        loop = ClientLoop(work, [
            {"port": sess.listen[1], "workers": 3, "persistent": True, "sql": SLOW_SQL, "pauseMs": 0},
            {"port": txn.listen[1], "workers": 3, "persistent": True, "sql": SLOW_SQL, "pauseMs": 100},
        ], encrypt=False).start()
        try:
            wait_until(lambda: len(srv.sessions()) >= 5, 15, "the clients to hold or use servers")
            time.sleep(1)
            t_down = time.time()
            srv.stop()
            time.sleep(1.5)
            srv = TdsServerProcess.start(port=port, **start)
            t_up = time.time()
            time.sleep(2.5)
        finally:
            s_log, t_log = loop.stop()
        told = _told(idle)
        slack = 1.0   # a connection attempt already under way at t_up
        # Session mode: every client held a server; each was told, then
        # reconnected and worked once the server was back.
        errs = errors_in(s_log)
        assert errs, "no session-mode client noticed the restart"
        _assert_clear(errs, "session mode")
        assert all(end >= t_down for _, end, _ in errs), (t_down, errs[:5])
        late = [e for e in errs if e[0] > t_up + slack]
        assert not late, f"session-mode clients failed after the server was back: {late[:3]}"
        assert any(ok and t > t_up + slack for t, _, ok, _ in s_log)
        # Transaction mode: requests after the restart never met a dead server.
        assert all(end >= t_down for _, end, _ in errors_in(t_log)), (t_down, errors_in(t_log)[:5])
        late = [e for e in errors_in(t_log) if e[0] > t_up + slack]
        assert not late, f"transaction-mode clients failed after the server was back: {late[:3]}"
        _assert_clear(errors_in(t_log), "transaction mode")
        assert sum(1 for t, _, ok, _ in t_log if ok and t > t_up + slack) >= 5
        # The idle raw session held a server too: told in words, then closed.
        assert told and told[0]["number"] == 40613 and "server connection lost" in told[0]["message"], told
        # The pools kept no dead server: what they hold is what the new
        # process serves, and new clients work on both.
        for tp in (sess, txn):
            out = tedious(rig, tp.listen[1], [{"sql": "SELECT @@SERVERNAME"}], encrypt=False)
            assert out["results"][0]["rows"] == [["restart"]], out
        wait_until(lambda: sum(metric(metrics(tp), "tokenpool_servers", state=s)
                               for tp in (sess, txn) for s in ("idle", "active", "resetting", "connecting"))
                   == len(srv.sessions()), 10, "the pools to hold only live servers")
        assert sess.running and txn.running
    finally:
        srv.stop()


# ---------------------------------------------------------------- killed sessions

def test_killed_sessions(rig, tokenpool, free_port, tmp_path):
    tds = rig.tds()
    # Session mode: clients hold their servers; killing them all is seen
    # by each, with a clear error, and the next connection works.
    sess = tokenpool(sqlserver_config(rig, rig.tds_port, free_port, client_tls={"mode": "disable"},
                                      pool={"mode": "session", "size": 3}))
    loop = ClientLoop(str(tmp_path), [{"port": sess.listen[1], "workers": 2, "persistent": True,
                                       "sql": SLOW_SQL, "pauseMs": 0}], encrypt=False).start()
    try:
        wait_until(lambda: len(tds.sessions()) >= 2, 10, "two sessions on the server")
        time.sleep(0.5)
        killed = {s["spid"] for s in tds.sessions()}
        tds.kill_all()
        time.sleep(2)
    finally:
        log, = loop.stop()
    errs = errors_in(log)
    assert errs, "no client noticed its session was killed"
    _assert_clear(errs, "killed sessions")
    assert any("server connection lost" in d for _, _, d in errs), errs
    assert len(errs) <= 2 * 2, errs     # one per client that held one (a second only in a race)
    last = max(end for _, end, _ in errs)
    assert sum(1 for t, _, ok, _ in log if ok and t > last) >= 4, log   # the next connections work
    assert tds.stats()["kills"] >= len(killed)

    # Transaction mode: an idle server killed in the pool is dropped, never
    # handed to the next request.
    txn = tokenpool(sqlserver_config(rig, rig.tds_port, free_port, pool={"mode": "transaction", "size": 1}))
    cl = _raw_session(rig, txn.listen[1])
    spid = cl.scalar("SELECT @@SPID")
    conns = tds.stats()["connections"]
    assert tds.kill(spid) == 1
    wait_until(lambda: metric(metrics(txn), "tokenpool_servers", state="idle") == 0, 5,
               "tokenpool to drop the killed idle server")
    for _ in range(3):
        assert cl.scalar("SELECT 7") == 7         # no error: a fresh server
    assert tds.stats()["connections"] == conns + 1
    cl.close()
    out = tedious(rig, txn.listen[1], [{"sql": "SELECT 1"}], encrypt=False)
    assert out["results"][0]["rows"] == [[1]]
    assert sess.running and txn.running
