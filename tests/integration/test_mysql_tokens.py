"""Tokens and TLS between tokenpool and the rig's MariaDB (standing in for
Azure Database for MySQL), seen from MySQL clients and from the rig.

  * Every token login is over TLS: each server connection's own session
    status shows TLS, and the server's count of finished TLS handshakes
    grows by exactly the number of token logins its PAM module allowed.
  * A server certificate that does not verify (wrong host name, unknown
    CA) fails the client login with a 2013 error naming the problem, and
    no token reaches the server (no PAM decision at all).
  * Short tokens under constant server logins: every client login works
    across several refreshes, about one token request per lifetime.
  * Identity endpoint faults while a valid token is cached (500, reset;
    hang, 429 with Retry-After) cost clients nothing.
  * With no token at all (endpoint failing or hanging), a client gets a
    2013 error naming the identity problem within connect_timeout, and
    service comes back by itself when the endpoint recovers.

Runtime: about 90 s (most of it waiting for short tokens to come due).
"""

import time

import pymysql
import pytest

from helpers import (churn_pool, imds_stats, mysql_connect, mysql_login_loop, mysql_whoami, server_logins,
                     wait_until)

# The pool's connect_timeout in the tests that expect a refusal: the
# refusal must come within it (+2 s slack).
CONNECT_TIMEOUT = 3


# ---------------------------------------------------------------- helpers

def connect(tp, **kw):
    kw.setdefault("connect_timeout", 20)
    return mysql_connect(tp, **kw)


def rows(conn, sql, args=None):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def whoami(tp):
    return mysql_whoami(tp, connect_timeout=20)


def login_error(tp):
    """(errno, message, seconds) of a login (and first query) that must
    fail: once a pool has served a client, upstream trouble may show at the
    first query instead of at login."""
    t0 = time.monotonic()
    with pytest.raises(pymysql.err.OperationalError) as exc:
        conn = connect(tp)
        try:
            rows(conn, "SELECT 1")
        finally:
            conn.close()
    return exc.value.args[0], exc.value.args[1], time.monotonic() - t0


def pam_decisions(rig, user=None):
    """The PAM module's decisions for MariaDB (its own service name)."""
    return [e for e in rig.pam_log()
            if e.get("service") == rig.mysql_pam_service and (user is None or e.get("user") == user)]


def ssl_finished_accepts(rig):
    return int(rig.mysql_admin("SHOW GLOBAL STATUS LIKE 'Ssl_finished_accepts'")[0][1])


# ---------------------------------------------------------------- TLS

def test_token_logins_happen_only_over_tls(rig, tokenpool, mysql_config):
    user = rig.identity("system")["db_user"]
    pam0, tls0 = len(pam_decisions(rig)), ssl_finished_accepts(rig)
    tp = tokenpool(mysql_config(pool={"mode": "transaction", "size": 3}))
    conns = [connect(tp) for _ in range(3)]
    try:
        for c in conns:  # each holds a server of its own
            rows(c, "BEGIN")
        seen = [rows(c, "SELECT CONNECTION_ID(), CURRENT_USER(), "
                        "(SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS "
                        " WHERE VARIABLE_NAME = 'Ssl_version'), "
                        "(SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS "
                        " WHERE VARIABLE_NAME = 'Ssl_cipher')")[0] for c in conns]
        for c in conns:
            rows(c, "COMMIT")
    finally:
        for c in conns:
            c.close()
    assert len({s[0] for s in seen}) == 3, seen
    for cid, current, version, cipher in seen:
        assert current == f"{user}@%"
        assert version in ("TLSv1.2", "TLSv1.3") and cipher, (cid, version, cipher)
    # The server's view: every login its PAM module allowed came over a
    # TLS handshake that finished, and nothing was denied.
    logins = server_logins(tp)
    decisions = pam_decisions(rig)[pam0:]
    assert logins >= 3
    assert [d["result"] for d in decisions] == ["allow"] * logins, decisions
    assert all(d["user"] == user for d in decisions), decisions
    assert ssl_finished_accepts(rig) - tls0 == logins


@pytest.mark.parametrize("case", ["wrong_host", "unknown_ca"])
def test_unverified_server_certificate_fails_clearly_and_sends_no_token(rig, tokenpool,
                                                                        mysql_config, case):
    if case == "wrong_host":
        rig.use_mysql_certificate("wronghost")  # put back by the autouse fixture
        cfg = mysql_config(pool={"connect_timeout": CONNECT_TIMEOUT})
    else:
        cfg = mysql_config(server={"tls": {"ca_file": rig.other_ca_file}},
                           pool={"connect_timeout": CONNECT_TIMEOUT})
    pam0 = len(pam_decisions(rig))
    tp = tokenpool(cfg)
    for _ in range(2):
        code, msg, took = login_error(tp)
        assert code == 2013, msg
        low = msg.lower()
        assert "certificate" in low or "tls" in low, msg
        assert took < CONNECT_TIMEOUT + 2, f"refusal took {took:.1f}s"
    assert "server login ok" not in tp.output()
    # No token was presented: MariaDB's PAM module saw nothing.
    assert pam_decisions(rig)[pam0:] == []
    assert tp.running


# ---------------------------------------------------------------- refresh under churn

# Token lifetime 10 s, run 25 s. After a fetch tokenpool refreshes at three
# quarters of a short token's life (7.5 s) and a server login takes a
# cached token while it has 2 s left: about 4 token requests in the run,
# and every login after 8 s presents a refreshed token.
CHURN_LIFETIME = 10
CHURN_SECONDS = 25


@pytest.mark.timer_bound
def test_short_tokens_refreshed_under_login_churn(rig, tokenpool, mysql_config):
    user = rig.identity("system")["db_user"]
    rig.idp_config(lifetime=CHURN_LIFETIME)
    pam0 = len(pam_decisions(rig, user))
    t_start = time.monotonic()
    tp = tokenpool(mysql_config(pool=churn_pool()))
    with mysql_login_loop(tp, threads=3) as loop:
        time.sleep(CHURN_SECONDS - (time.monotonic() - t_start))
    run = time.monotonic() - t_start
    requests, issued, st = imds_stats(rig)
    decisions = pam_decisions(rig, user)[pam0:]
    allowed = sum(1 for d in decisions if d.get("result") == "allow")
    denied = [d for d in decisions if d.get("result") != "allow"]

    assert not loop.errors, f"{len(loop.errors)} failed client logins, first: {loop.errors[:3]}\n" \
                            + tp.output()[-4000:]
    assert loop.users == {user}
    assert loop.ok >= 100, f"only {loop.ok} client logins in {run:.0f}s"
    assert not denied, f"MariaDB refused tokens: {denied[:3]}"
    # Refreshed about once per lifetime (so tokens did expire in the run)...
    assert run / CHURN_LIFETIME * 0.8 <= requests <= run / CHURN_LIFETIME * 1.5 + 2, \
        f"{requests} token requests in {run:.1f}s with {CHURN_LIFETIME}s tokens: {st['recent']}"
    assert issued == requests
    # ...not once per server login.
    assert allowed >= 5 * requests and allowed >= 20, \
        f"{allowed} server logins for {requests} token requests"
    assert tp.running


# ---------------------------------------------------------------- identity faults, token cached

# After a fetch the refresh comes at 3L/4; failures are retried after ~1 s,
# ~2 s, ~4 s (or Retry-After); a server login takes a cached token while
# it has 2 s left. So the faults must be over by L - 2 with a margin:
#   500, reset:      retries after ~1 s and ~2 s: refreshed by 3L/4 + 3;
#   hang, 429 (RA 1): the hang is held 1.5 s (logins go on meanwhile) and
#                     released, the 429 follows ~1 s later, the next try
#                     ~2 s after it: refreshed by 3L/4 + 5.
FAULT_CASES = {
    # name: (lifetime, faults queued one after another)
    "500_then_reset": (28, ["500", "reset"]),
    "hang_then_429": (36, ["hang", "429"]),
}


@pytest.mark.timer_bound
@pytest.mark.parametrize("case", list(FAULT_CASES))
def test_identity_faults_while_token_cached_cost_clients_nothing(rig, tokenpool, mysql_config, case):
    lifetime, kinds = FAULT_CASES[case]
    user = rig.identity("system")["db_user"]
    rig.idp_config(lifetime=lifetime)
    tp = tokenpool(mysql_config(pool=churn_pool()))
    wait_until(lambda: imds_stats(rig)[1] >= 1, 10, "the first token")
    assert whoami(tp) == user
    with mysql_login_loop(tp, threads=2) as loop:
        if kinds[0] == "hang":
            rig.idp_fault("hang", count=1)
            wait_until(lambda: imds_stats(rig)[2]["faults"].get("hang", 0) >= 1, lifetime,
                       "the refresh to hang")
            time.sleep(1.5)  # logins go on while the refresh hangs
            ok_during_hang = loop.ok
            rig.idp_fault("none")  # released: that fetch fails
            rig.idp_fault("429", count=1, retry_after=1)
        else:
            for kind in kinds:
                rig.idp_fault(kind, count=1)

        def served_and_refreshed():
            _, issued, st = imds_stats(rig)
            return all(st["faults"].get(k, 0) >= 1 for k in kinds) and issued >= 2

        wait_until(served_and_refreshed, lifetime, f"{kinds} served and a refresh after them")
        time.sleep(1.5)  # keep logging in on the refreshed token
    _, issued, st = imds_stats(rig)
    assert not loop.errors, f"{len(loop.errors)} client errors during {kinds}, first: " \
                            f"{loop.errors[:3]}\n" + tp.output()[-4000:]
    assert loop.ok >= 20
    assert loop.users == {user}
    assert st["faults"] == {k: 1 for k in kinds}, st
    if kinds[0] == "hang":
        assert ok_during_hang > 0
        # Retry-After is honoured: no request sooner than it says.
        recent = st["recent"]
        for i, r in enumerate(recent[:-1]):
            if r.get("fault") == "429":
                assert recent[i + 1]["t"] - r["t"] >= 1 - 0.2, recent
    assert tp.running


# ---------------------------------------------------------------- identity faults, no token

@pytest.mark.parametrize("kind", ["500", "hang"])
def test_no_token_gives_2013_naming_it_within_connect_timeout_then_recovers(rig, tokenpool,
                                                                             mysql_config, kind):
    rig.idp_fault(kind, count=-1)  # from before the first fetch, until cleared
    tp = tokenpool(mysql_config(pool={"connect_timeout": CONNECT_TIMEOUT, "wait_timeout": 20}))
    for _ in range(2):  # the second client while the endpoint still fails
        code, msg, took = login_error(tp)
        assert code == 2013, msg
        low = msg.lower()
        assert "token" in low and "imds" in low, msg
        if kind == "500":
            assert "500" in msg, msg
        assert took < CONNECT_TIMEOUT + 2, f"refusal took {took:.1f}s"
    rig.idp_fault("none")  # the endpoint recovers (hung requests released)
    t0 = time.monotonic()
    pid = tp.pid
    assert whoami(tp) == rig.identity("system")["db_user"]
    assert time.monotonic() - t0 < 5, "service did not resume within a few seconds"
    assert tp.running and tp.pid == pid


def test_long_token_logs_in_through_tokenpool(rig, tokenpool, mysql_config):
    """Tokens of identities in many groups grow past 6 KB (poolers and
    tools with fixed password buffers broke on that): the whole token goes
    through mysql_clear_password and MariaDB's PAM takes it."""
    rig.idp_config(groups=120)
    before = len(rig.pam_log())
    tp = tokenpool(mysql_config())
    assert mysql_whoami(tp, connect_timeout=10) == rig.identity("system")["db_user"]
    allowed = [e for e in rig.pam_log()[before:] if e.get("result") == "allow"]
    assert allowed and int(allowed[-1]["len"]) > 6000, rig.pam_log()[before:]
