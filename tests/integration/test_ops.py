"""Operations (issue 6): /healthz, /readyz, /metrics parsed by the real
Prometheus parser, /v1/pools and /v1/tokens, admin calls, reload by SIGHUP
and POST /v1/reload under load, and the SIGTERM drain."""
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import psycopg2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import CLIENT_PASSWORD, CLIENT_USER, _free_port
from helpers import wait_until
from test_pg_clients import client_env
from test_tds_common import tsql, write_freetds_conf

FAMILIES = {
    "tokenpool_build_info": "gauge",
    "tokenpool_ready": "gauge",
    "tokenpool_clients": "gauge",
    "tokenpool_servers": "gauge",
    "tokenpool_clients_waiting": "gauge",
    "tokenpool_pool_size": "gauge",
    "tokenpool_pool_paused": "gauge",
    "tokenpool_client_connections": "counter",
    "tokenpool_server_logins": "counter",
    "tokenpool_transactions": "counter",
    "tokenpool_queries": "counter",
    "tokenpool_bytes_received": "counter",
    "tokenpool_bytes_sent": "counter",
    "tokenpool_client_wait_seconds": "histogram",
    "tokenpool_server_connect_seconds": "histogram",
    "tokenpool_token_expiry_seconds": "gauge",
    "tokenpool_token_refreshes": "counter",
    "tokenpool_errors": "counter",
    "tokenpool_reloads": "counter",
}


# ---------------------------------------------------------------- helpers

def http(tp, path, method="GET", token=None, timeout=5):
    """(status, body text) of one request to tokenpool's HTTP endpoint."""
    host, port = tp.http
    req = urllib.request.Request(f"http://{host}:{port}{path}", method=method,
                                 data=b"" if method == "POST" else None)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metrics(tp):
    """{(name, frozenset(labels)): value} of every sample, and the families."""
    status, text = http(tp, "/metrics")
    assert status == 200, text
    fams = list(text_string_to_metric_families(text))
    samples = {}
    for fam in fams:
        for s in fam.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, {f.name: f.type for f in fams}


def sample(samples, name, **labels):
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no sample {name}{labels}; have: " + \
        ", ".join(sorted(f"{n}{dict(l)}" for n, l in samples if n == name))
    return samples[key]


def wait_ready(tp, timeout=15):
    return wait_until(lambda: http(tp, "/readyz")[0] == 200, timeout, "/readyz is 200")


def pools_json(tp):
    status, body = http(tp, "/v1/pools")
    assert status == 200, body
    return {p["name"]: p for p in json.loads(body)["pools"]}


def rewrite_config(tp, cfg):
    fd = os.open(tp.config_path, os.O_WRONLY | os.O_TRUNC)
    with os.fdopen(fd, "w") as f:
        json.dump(cfg, f, indent=2)


def one(dsn, sql):
    conn = psycopg2.connect(dsn)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchone()[0]
    finally:
        conn.close()


# ---------------------------------------------------------------- probes

def test_healthz_and_readyz_follow_token_server_and_shutdown(rig, tokenpool, pg_config):
    """/readyz is 503 (with reasons) until the first token and server login,
    200 then, 503 again from SIGTERM; /healthz is 200 throughout."""
    rig.idp_fault("500", count=3)
    tp = tokenpool(pg_config(shutdown={"timeout": 3}), wait_port=False)
    wait_until(lambda: _try(lambda: http(tp, "/healthz")), 15, "http endpoint up")
    status, body = http(tp, "/readyz")
    assert status == 503, body
    reasons = json.loads(body)["reasons"]
    assert reasons and any("token" in r or "not reached" in r for r in reasons), reasons
    assert http(tp, "/healthz")[0] == 200
    # tokenpool retries the identity endpoint and reaches the server itself,
    # without any client asking.
    wait_ready(tp, timeout=20)
    assert http(tp, "/healthz") == (200, "ok\n")
    # A session client keeps the drain going while we look.
    conn = psycopg2.connect(tp.pg_dsn())
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        tp.send_signal(signal.SIGTERM)
        status, body = wait_until(lambda: _not_ready(tp), 15, "/readyz turns 503")
        assert "shutting down" in json.loads(body)["reasons"]
        assert http(tp, "/healthz")[0] == 200
    finally:
        conn.close()
    assert tp.wait(10) == 0, tp.output()[-3000:]


def _try(fn):
    try:
        return fn()
    except OSError:
        return None


def _not_ready(tp):
    status, body = http(tp, "/readyz")
    return (status, body) if status == 503 else None


def test_readyz_names_an_unreachable_server(rig, tokenpool, pg_config, free_port):
    tp = tokenpool(pg_config(server={"port": free_port()}))
    status, body = wait_until(lambda: _failing(tp), 15, "/readyz says why")
    assert status == 503
    assert any("server login failing" in r for r in json.loads(body)["reasons"]), body


def _failing(tp):
    status, body = http(tp, "/readyz")
    return (status, body) if status == 503 and "failing" in body else None


# ---------------------------------------------------------------- metrics

def test_metrics_families_and_counters_move_under_pgbench(rig, tokenpool, pg_config):
    tp = tokenpool(pg_config(pool={"mode": "transaction", "size": 3}))
    wait_ready(tp)
    before, types = metrics(tp)
    for name, kind in FAMILIES.items():
        assert types.get(name) == kind, f"{name}: {types.get(name)} (want {kind})"
    pool = rig.pg_database
    assert sample(before, "tokenpool_ready") == 1
    assert sample(before, "tokenpool_pool_size", pool=pool) == 3
    assert sample(before, "tokenpool_server_logins_total", pool=pool, outcome="ok") >= 1
    expiry = [v for (n, l), v in before.items() if n == "tokenpool_token_expiry_seconds"]
    assert expiry and 0 < expiry[0] <= 3600 * 24, expiry
    refreshed = [v for (n, l), v in before.items()
                 if n == "tokenpool_token_refreshes_total" and ("outcome", "ok") in l]
    assert refreshed and refreshed[0] >= 1

    env = client_env(PGPASSWORD=CLIENT_PASSWORD)
    conn = ["-h", "127.0.0.1", "-p", str(tp.listen[1]), "-U", CLIENT_USER, pool]
    run = subprocess.run(["pgbench", "-n", "-t", "100", "-c", "4", "-j", "2",
                          "-f", _script(tp)] + conn,
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    # a wrong password counts as an auth error
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(tp.pg_dsn(password="wrong"))

    after, _ = wait_until(lambda: _settled(tp, pool), 15, "counters settle")
    d = lambda name, **lb: sample(after, name, **lb) - sample(before, name, **lb)  # noqa: E731
    assert d("tokenpool_transactions_total", pool=pool) >= 400
    assert d("tokenpool_queries_total", pool=pool) >= 400
    assert d("tokenpool_client_connections_total", pool=pool) >= 5
    for side in ("client", "server"):
        assert d("tokenpool_bytes_received_total", pool=pool, side=side) > 400 * 5
        assert d("tokenpool_bytes_sent_total", pool=pool, side=side) > 400 * 5
    assert d("tokenpool_client_wait_seconds_count", pool=pool) >= 400
    assert sample(after, "tokenpool_client_wait_seconds_bucket", pool=pool, le="+Inf") == \
        sample(after, "tokenpool_client_wait_seconds_count", pool=pool)
    assert sample(after, "tokenpool_server_connect_seconds_count", pool=pool) == \
        sample(after, "tokenpool_server_logins_total", pool=pool, outcome="ok")
    assert d("tokenpool_errors_total", kind="auth") == 1
    assert d("tokenpool_server_logins_total", pool=pool, outcome="failed") == 0
    assert sample(after, "tokenpool_servers", pool=pool, protocol="postgres", state="idle") + \
        sample(after, "tokenpool_servers", pool=pool, protocol="postgres", state="active") <= 3
    assert sample(after, "tokenpool_clients", pool=pool, protocol="postgres", state="active") == 0


def _script(tp):
    path = os.path.join(os.path.dirname(tp.config_path), "select.sql")
    with open(path, "w") as f:
        f.write("SELECT 1;\n")
    return path


def _settled(tp, pool):
    s, t = metrics(tp)
    idle = sample(s, "tokenpool_clients", pool=pool, protocol="postgres", state="idle")
    active = sample(s, "tokenpool_clients", pool=pool, protocol="postgres", state="active")
    return (s, t) if idle == 0 and active == 0 else None


def test_v1_pools_and_tokens_never_show_secrets(rig, tokenpool, pg_config):
    tp = tokenpool(pg_config())
    wait_ready(tp)
    status, tokens = http(tp, "/v1/tokens")
    assert status == 200
    entries = json.loads(tokens)["tokens"]
    assert entries and entries[0]["valid"] and entries[0]["expires_in"] > 0, entries
    token = rig.token()
    _, pools = http(tp, "/v1/pools")
    for text in (tokens, pools):
        assert CLIENT_PASSWORD not in text
        assert "eyJ" not in text  # no JWT
        assert token.split(".")[2] not in text
    p = json.loads(pools)["pools"][0]
    assert p["name"] == rig.pg_database and p["protocol"] == "postgres" and p["ready"]


def test_http_rejects_bad_requests_without_harm(rig, tokenpool, pg_config):
    tp = tokenpool(pg_config())
    assert http(tp, "/nope")[0] == 404
    assert http(tp, "/metrics", method="POST")[0] == 405
    for raw in (b"GARBAGE\r\n\r\n", b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n\r\n",
                b"GET /healthz HTTP/1.1\r\nX: " + b"b" * 40000 + b"\r\n\r\n"):
        with socket.create_connection(tp.http, timeout=5) as s:
            s.sendall(raw)
            reply = s.recv(200)
            assert re.match(rb"HTTP/1.1 4\d\d ", reply), reply
    assert http(tp, "/healthz")[0] == 200


# ---------------------------------------------------------------- admin

def test_admin_calls_need_the_bearer_token_and_pause_holds_clients(rig, tokenpool, pg_config):
    tp = tokenpool(pg_config(http={"admin_token_env": "TP_ADMIN"}, pool={"wait_timeout": 10}),
                   env={"TP_ADMIN": "s3cret-admin"})
    wait_ready(tp)
    pool = rig.pg_database
    assert http(tp, f"/v1/pools/{pool}/pause", "POST")[0] == 401
    assert http(tp, f"/v1/pools/{pool}/pause", "POST", token="wrong")[0] == 401
    assert http(tp, "/v1/reload", "POST")[0] == 401
    assert http(tp, "/v1/pools/nosuch/pause", "POST", token="s3cret-admin")[0] == 404
    assert http(tp, f"/v1/pools/{pool}/pause", "POST", token="s3cret-admin")[0] == 200
    assert pools_json(tp)[pool]["paused"] is True
    result = {}

    def query():
        try:
            result["v"] = one(tp.pg_dsn(), "SELECT 7")
        except Exception as e:  # noqa: BLE001 - reported below
            result["e"] = e

    th = threading.Thread(target=query)
    th.start()
    time.sleep(1.0)
    assert th.is_alive(), f"a paused pool answered: {result}"
    s, _ = metrics(tp)
    assert sample(s, "tokenpool_clients_waiting", pool=pool) == 1
    assert sample(s, "tokenpool_pool_paused", pool=pool) == 1
    assert http(tp, f"/v1/pools/{pool}/resume", "POST", token="s3cret-admin")[0] == 200
    th.join(10)
    assert result.get("v") == 7, result
    assert "s3cret-admin" not in tp.output()


# ---------------------------------------------------------------- reload

def _worker(dsn, stop, errors, counts, i):
    try:
        conn = psycopg2.connect(dsn)
    except Exception as e:  # noqa: BLE001
        errors.append(f"client {i} connect: {e}")
        return
    try:
        while not stop.is_set():
            with conn:
                with conn.cursor() as cur:
                    cur.execute("SELECT %s::int", (i,))
                    assert cur.fetchone()[0] == i
                    cur.execute("SELECT 1")
            counts[i] += 1
    except Exception as e:  # noqa: BLE001
        errors.append(f"client {i}: {e}")
    finally:
        conn.close()


def test_sighup_reload_under_load_resizes_and_adds_a_pool(rig, tokenpool, pg_config):
    cfg = pg_config(pool={"mode": "transaction", "size": 4, "wait_timeout": 20})
    tp = tokenpool(cfg)
    wait_ready(tp)
    stop, errors = threading.Event(), []
    counts = [0] * 50
    threads = [threading.Thread(target=_worker, args=(tp.pg_dsn(), stop, errors, counts, i))
               for i in range(50)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: all(counts), 30, "all clients ran a transaction")
        new_port = _free_port()
        second = json.loads(json.dumps(cfg["pools"][0]))
        second["name"] = "reports"
        second["listen"] = f"127.0.0.1:{new_port}"
        cfg["pools"][0]["pool"]["size"] = 2
        cfg["pools"].append(second)
        rewrite_config(tp, cfg)
        before = list(counts)
        tp.send_signal(signal.SIGHUP)
        tp.wait_for_output("config reloaded")
        wait_until(lambda: _try(lambda: one(tp.pg_dsn(port=new_port, dbname="reports"),
                                            "SELECT current_user")),
                   15, "the new pool listens")
        assert one(tp.pg_dsn(port=new_port, dbname="reports"), "SELECT current_user") == \
            rig.identity("system")["db_user"]
        pools = pools_json(tp)
        assert pools[rig.pg_database]["size"] == 2 and "reports" in pools
        wait_until(lambda: all(c > b for c, b in zip(counts, before)), 30,
                   "clients go on after the reload")
        # the smaller size holds once the surplus servers come free
        wait_until(lambda: sum(pools_json(tp)[rig.pg_database]["servers"][k]
                               for k in ("idle", "active", "resetting")) <= 2,
                   15, "servers shrink to the new size")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors[:5]
    assert "config reloaded: 1 pools unchanged, 0 changed, 1 added, 0 removed" in tp.output()


def test_broken_config_on_reload_leaves_service_untouched(rig, tokenpool, pg_config):
    cfg = pg_config()
    tp = tokenpool(cfg)
    wait_ready(tp)
    conn = psycopg2.connect(tp.pg_dsn())
    conn.autocommit = True
    try:
        with open(tp.config_path, "w") as f:
            f.write('{"pools": [ {"name": "x", "protocol": "postgres", "listen": 5} ]}')
        status, body = http(tp, "/v1/reload", "POST")
        assert status == 400, body
        err = json.loads(body)
        assert err["ok"] is False and "pools[0]" in err["error"], err
        tp.send_signal(signal.SIGHUP)
        out = tp.wait_for_output("reload failed, the running config stays")
        assert "pools[0]" in out.split("reload failed, the running config stays", 1)[1]
        with conn.cursor() as cur:
            cur.execute("SELECT 5")
            assert cur.fetchone()[0] == 5
        assert one(tp.pg_dsn(), "SELECT 6") == 6
        s, _ = metrics(tp)
        assert sample(s, "tokenpool_reloads_total", outcome="failed") == 2
        # a config that parses but cannot bind fails the same way
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        try:
            cfg2 = json.loads(json.dumps(cfg))
            extra = json.loads(json.dumps(cfg["pools"][0]))
            extra["name"] = "other"
            extra["listen"] = "127.0.0.1:%d" % blocker.getsockname()[1]
            cfg2["pools"].append(extra)
            rewrite_config(tp, cfg2)
            status, body = http(tp, "/v1/reload", "POST")
            assert status == 400 and "cannot listen" in body, body
        finally:
            blocker.close()
        assert one(tp.pg_dsn(), "SELECT 8") == 8
        assert "other" not in pools_json(tp)
    finally:
        conn.close()


def test_reload_of_server_settings_replaces_servers_as_they_come_free(rig, tokenpool, pg_config):
    cfg = pg_config(pool={"mode": "session", "size": 3})
    tp = tokenpool(cfg)
    wait_ready(tp)
    held = psycopg2.connect(tp.pg_dsn())
    held.autocommit = True
    try:
        with held.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            old_pid = cur.fetchone()[0]
        cfg["pools"][0]["server"]["tls"]["server_name"] = "localhost"
        rewrite_config(tp, cfg)
        status, body = http(tp, "/v1/reload", "POST")
        assert status == 200, body
        assert "1 changed" in tp.wait_for_output("config reloaded")
        # the held session keeps its server
        with held.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            assert cur.fetchone()[0] == old_pid
        # a new client gets a new server
        assert one(tp.pg_dsn(), "SELECT pg_backend_pid()") != old_pid
    finally:
        held.close()
    wait_until(lambda: "server settings changed (reload)" in tp.output(), 15,
               "the old server closes once free")


# ---------------------------------------------------------------- drain

def test_sigterm_drain_commits_open_transactions_then_exits_0(rig, tokenpool, pg_config):
    tp = tokenpool(pg_config(pool={"mode": "transaction", "size": 5}, shutdown={"timeout": 10}))
    wait_ready(tp)
    setup = psycopg2.connect(tp.pg_dsn())
    setup.autocommit = True
    with setup.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS drain_t (id int)")
        cur.execute("TRUNCATE drain_t")
    setup.close()
    conns = [psycopg2.connect(tp.pg_dsn()) for _ in range(5)]
    for i, c in enumerate(conns):
        with c.cursor() as cur:
            cur.execute("INSERT INTO drain_t VALUES (%s)", (i,))  # transaction open
    tp.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert tp.running, tp.output()[-2000:]
    # new clients get the shutdown error
    with pytest.raises(psycopg2.OperationalError) as told:
        psycopg2.connect(tp.pg_dsn())
    assert "shutting down" in str(told.value), told.value
    for c in conns:
        with c.cursor() as cur:
            cur.execute("SELECT count(*) FROM drain_t")
        c.commit()
    for c in conns:
        c.close()
    assert tp.wait(10) == 0, tp.output()[-3000:]
    check = psycopg2.connect(rig.pg_dsn(rig.identity("system")["db_user"], rig.token()))
    try:
        with check.cursor() as cur:
            cur.execute("SELECT count(*) FROM drain_t")
            assert cur.fetchone()[0] == 5
    finally:
        check.close()


def test_second_sigterm_exits_at_once(rig, tokenpool, pg_config):
    tp = tokenpool(pg_config(pool={"mode": "session"}, shutdown={"timeout": 30}))
    wait_ready(tp)
    conn = psycopg2.connect(tp.pg_dsn())
    try:
        tp.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert tp.running
        t0 = time.monotonic()
        tp.send_signal(signal.SIGTERM)
        tp.wait(5)
        assert time.monotonic() - t0 < 5
    finally:
        conn.close()


# ---------------------------------------------------------------- every protocol

def test_every_protocol_shows_in_metrics_and_v1_pools(rig, tokenpool, pg_config, mysql_config):
    """Pools of each protocol the engine serves appear in /metrics (with
    their protocol label) and /v1/pools, and their counters move."""
    import pymysql
    cfg = pg_config(pool={"mode": "transaction"})
    my = mysql_config()["pools"][0]
    my["name"] = "orders_mysql"
    my["server"]["database"] = rig.mysql_database
    cfg["pools"].append(my)
    sql_port = _free_port()
    cfg["pools"].append({
        "name": "orders_sql", "protocol": "sqlserver", "listen": f"127.0.0.1:{sql_port}",
        "server": {"host": rig.tds_host, "port": rig.tds_port, "database": "orders",
                   "user": rig.identity("system")["db_user"], "scope": rig.tds_scope,
                   "tls": {"mode": "verify-full", "ca_file": rig.ca_file}},
        "clients": [{"user": CLIENT_USER, "password": CLIENT_PASSWORD}],
        "client_tls": {"mode": "allow", "cert_file": rig.server_cert_file,
                       "key_file": rig.server_key_file},
    })
    tp = tokenpool(cfg)
    wait_ready(tp)
    assert one(tp.pg_dsn(), "SELECT 1") == 1
    conf = os.path.join(os.path.dirname(tp.config_path), "freetds.conf")
    write_freetds_conf(conf, sql_port, rig.ca_file)
    out = tsql(conf, "SELECT SUSER_SNAME()", database="orders_sql")
    assert rig.identity("system")["db_user"] in out, out
    host, port = my["listen"].rsplit(":", 1)
    conn = pymysql.connect(host=host, port=int(port), user=CLIENT_USER, password=CLIENT_PASSWORD,
                           database="orders_mysql")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT CURRENT_USER()")
            assert cur.fetchone()[0].split("@")[0] == rig.identity("system")["db_user"]
    finally:
        conn.close()
    pools = pools_json(tp)
    assert {n: p["protocol"] for n, p in pools.items()} == {rig.pg_database: "postgres",
                                                            "orders_mysql": "mysql",
                                                            "orders_sql": "sqlserver"}
    assert all(p["ready"] for p in pools.values()), pools
    s, _ = metrics(tp)
    for name, proto in ((rig.pg_database, "postgres"), ("orders_mysql", "mysql"),
                        ("orders_sql", "sqlserver")):
        assert sample(s, "tokenpool_client_connections_total", pool=name) >= 1
        assert sample(s, "tokenpool_server_logins_total", pool=name, outcome="ok") >= 1
        assert sample(s, "tokenpool_queries_total", pool=name) >= 1
        sample(s, "tokenpool_servers", pool=name, protocol=proto, state="idle")
