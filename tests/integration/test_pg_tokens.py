"""The token lifecycle of a PostgreSQL pool, seen from clients and from the
rig's identity endpoint.

  * Short tokens under constant server logins: no client login fails, the
    endpoint is called about once per token lifetime, not once per login,
    and logins keep working past the first token's expiry (the refreshed
    token is used). Takes 60 s (see test_..._60s).
  * 500 clients at a cold start, while the first token request is still in
    flight: one token request, all 500 served.
  * User-assigned identities (by client_id, object_id, resource_id, and as
    a per-pool server.identity) log in as their own database user.
  * The App Service source (IDENTITY_ENDPOINT + IDENTITY_HEADER), chosen
    explicitly or by `auto`.

Runtime: about 75 s.
"""

import os
import signal
import threading
import time

import psycopg2
import pytest

from helpers import pg_login_loop, pg_whoami as whoami, wait_until


# ---------------------------------------------------------------- helpers

def pam_decisions(rig, user):
    return [e for e in rig.pam_log() if e.get("user") == user]


def token_requests(rig):
    st = rig.idp_stats()
    return sum(st["requests"].values()), st


def established_to(port):
    """TCP connections established to 127.0.0.1:port (server side), from
    /proc/net/tcp: those tokenpool accepted or has in its backlog."""
    want = f"0100007F:{port:04X}"
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            if parts[1] == want and parts[3] == "01":
                n += 1
    return n


# ---------------------------------------------------------------- refresh under login churn

# Token lifetime 50 s, run 60 s. Why these numbers (auth/tokens.c,
# proxy/pool.c as of this writing):
#   * after a fetch the refresh is scheduled 5 min before expiry, but never
#     sooner than three quarters of the remaining life (capped at 60 s): for
#     a 10 s token that is 7.5 s after the fetch;
#   * a server login takes a cached token while it has 2 s left.
# So tokenpool fetches about every 7.5 s: ~8 requests in a 60 s run of 10 s
# tokens, about once per lifetime (the bound allows 1.5 per lifetime), and
# every token expires inside the run: logins succeed only with refreshed
# tokens.
CHURN_LIFETIME = 10
CHURN_SECONDS = 60


@pytest.mark.timer_bound
def test_short_tokens_refreshed_once_per_lifetime_not_per_login_60s(rig, tokenpool, pg_config):
    """Takes 60 s: server logins forced all the time for a minute."""
    user = rig.identity("system")["db_user"]
    rig.idp_config(lifetime=CHURN_LIFETIME)
    decisions_before = len(pam_decisions(rig, user))
    t_start = time.monotonic()
    # A server lives 1 s and idles 1 s: client logins keep needing new
    # server logins, each one presenting a token to PostgreSQL.
    tp = tokenpool(pg_config(pool={"mode": "session", "size": 4, "lifetime": 1, "idle_timeout": 1,
                                   "connect_timeout": 10, "wait_timeout": 20}))
    with pg_login_loop(tp, threads=3) as loop:
        time.sleep(CHURN_SECONDS - (time.monotonic() - t_start))
    run = time.monotonic() - t_start
    requests, st = token_requests(rig)
    decisions = pam_decisions(rig, user)[decisions_before:]
    server_logins = sum(1 for d in decisions if d.get("result") == "allow")
    denied = [d for d in decisions if d.get("result") != "allow"]

    assert not loop.errors, f"{len(loop.errors)} failed client logins, first: {loop.errors[:3]}\n" \
                            + tp.output()[-6000:]
    assert loop.users == {user}
    assert loop.ok >= 300, f"only {loop.ok} client logins in {run:.0f}s"
    assert not denied, f"PostgreSQL refused tokens: {denied[:3]}"
    # Refresh really happened, about once per lifetime...
    assert run / CHURN_LIFETIME * 0.8 <= requests <= run / CHURN_LIFETIME * 1.5 + 2, \
        f"{requests} token requests in {run:.1f}s with {CHURN_LIFETIME}s tokens: {st['recent']}"
    assert st["issued"]["imds"] == requests
    # ...not once per login.
    assert server_logins >= 10 * requests and server_logins >= 40, \
        f"{server_logins} server logins for {requests} token requests"
    assert tp.running


# ---------------------------------------------------------------- cold start

def test_500_concurrent_logins_at_cold_start_make_one_token_request(rig, tokenpool, pg_config):
    """The IdP is frozen (SIGSTOP) while tokenpool starts, so its first token
    request stays in flight while 500 clients arrive; then it answers."""
    user = rig.identity("system")["db_user"]
    n = 500
    cfg = pg_config(pool={"mode": "session", "size": 20, "max_clients": 600,
                          "wait_timeout": 60, "connect_timeout": 10})
    results = []
    lock = threading.Lock()
    go = threading.Event()
    answered = threading.Event()

    def client():
        go.wait()
        try:
            conn = psycopg2.connect(tp.pg_dsn(connect_timeout=60))
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT current_user")
                    r = (answered.is_set(), cur.fetchone()[0])
            finally:
                conn.close()
        except psycopg2.Error as e:
            r = (answered.is_set(), e)
        with lock:
            results.append(r)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(n)]
    os.kill(rig.idp_pid, signal.SIGSTOP)
    try:
        tp = tokenpool(cfg)
        for th in threads:
            th.start()
        go.set()
        # All 500 connected (tokenpool's side of the TCP connections)...
        wait_until(lambda: established_to(tp.listen[1]) >= n, 8, f"{n} client connections")
        time.sleep(0.5)  # ...and through their local login
        assert not results, f"{len(results)} clients finished with no token yet: {results[:3]}"
    finally:
        answered.set()
        os.kill(rig.idp_pid, signal.SIGCONT)
    for th in threads:
        th.join(90)
    assert len(results) == n, f"{n - len(results)} clients still running"
    failed = [r for _, r in results if not isinstance(r, str)]
    assert not failed, f"{len(failed)} of {n} clients failed, first: {failed[:3]}\n" + tp.output()[-4000:]
    assert {r for _, r in results} == {user}
    requests, st = token_requests(rig)
    assert requests == 1, f"{requests} token requests for {n} cold logins: {st['recent']}"
    assert st["issued"]["imds"] == 1
    assert tp.running


# ---------------------------------------------------------------- identities

UA = "reports"      # a user-assigned identity of the rig
OVERRIDE = "billing"


@pytest.mark.parametrize("how", ["client_id", "object_id", "resource_id", "server_identity"])
def test_user_assigned_identity_logs_in_as_its_db_user(rig, tokenpool, pg_config, how):
    if how == "server_identity":
        # The top-level identity stays the system one; this pool overrides it.
        ident = rig.identity(OVERRIDE)
        cfg = pg_config(server={"user": ident["db_user"],
                                "identity": {"source": "imds", "imds_endpoint": rig.imds_endpoint,
                                             "client_id": ident["client_id"]}})
    else:
        ident = rig.identity(UA)
        cfg = pg_config(identity={how: ident[how]}, server={"user": ident["db_user"]})
    assert ident["db_user"] != rig.identity("system")["db_user"]
    tp = tokenpool(cfg)
    assert whoami(tp) == ident["db_user"]
    _, st = token_requests(rig)
    tokens = [r for r in st["recent"] if r.get("status") == 200]
    assert tokens and all(r["client_id"] == ident["client_id"] for r in tokens), st["recent"]
    assert st["errors"]["imds"] == 0, st["recent"]
    last = pam_decisions(rig, ident["db_user"])[-1]
    assert last["result"] == "allow" and last["appid"] == ident["client_id"]


@pytest.mark.parametrize("source,identity", [("app_service", None), ("auto", None),
                                             ("app_service", UA)])
def test_app_service_source(rig, tokenpool, pg_config, source, identity):
    ident = rig.identity(identity or "system")
    env = {"IDENTITY_ENDPOINT": rig.app_service_endpoint, "IDENTITY_HEADER": rig.header_secret}
    id_cfg = {"source": source}
    if identity:
        id_cfg["client_id"] = ident["client_id"]
    tp = tokenpool(pg_config(identity=id_cfg, server={"user": ident["db_user"]}), env=env)
    assert whoami(tp) == ident["db_user"]
    assert whoami(tp) == ident["db_user"]
    _, st = token_requests(rig)
    assert st["issued"]["app_service"] == 1, st
    assert st["requests"]["imds"] == 0 and st["requests"]["entra"] == 0, st
    assert all(r["client_id"] == ident["client_id"] for r in st["recent"]), st["recent"]
