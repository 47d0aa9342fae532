"""`auth: password` upstreams: a legacy MariaDB account on
mysql_native_password, and MySQL 8's caching_sha2_password (what a
password account on Azure Database for MySQL uses), against the rig's
MySQL 8 stand-in (tests/rig/mysql8.py: Debian has no MySQL 8 server).

What a user relies on: the client logs in with tokenpool's static
credentials and lands as the configured account; the password crosses the
network only over verified TLS or RSA-encrypted with the server's key,
never in clear; it never reaches the log; a wrong one refuses the client
with the server's reason and tokenpool goes on.
"""

import threading

import pymysql
import pytest

from helpers import mysql_connect, one, rows, wait_until

import mysql8

SHA2_USER = "sha2_app"
SHA2_PASSWORD = "Sha2-pw-for-the-rig!"
PW_ENV = "TP_TEST_UPSTREAM_PW"


def connect(tp, tls=False):
    """pymysql to tokenpool as the static client, with TLS (unverified) or not."""
    kw = {"ssl": {"check_hostname": False, "verify_mode": 0}, "ssl_verify_cert": False} if tls else {}
    return mysql_connect(tp, connect_timeout=10, **kw)


def refused(tp):
    with pytest.raises(pymysql.err.OperationalError) as exc:
        connect(tp)
    return exc.value.args[0], exc.value.args[1]


@pytest.fixture
def mysql8_server(rig):
    """Factory: mysql8_server(greeting_plugin=...) -> a running stand-in
    with the account SHA2_USER / SHA2_PASSWORD; stopped at teardown."""
    started = []

    def start(greeting_plugin=mysql8.SHA2):
        s = mysql8.Mysql8Server({SHA2_USER: SHA2_PASSWORD}, rig.server_cert_file,
                                rig.server_key_file, greeting_plugin)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def sha2_pool(mysql_config, server, password=SHA2_PASSWORD, tls=True):
    srv = {"host": "127.0.0.1", "port": server.port, "auth": "password", "user": SHA2_USER,
           "password_env": PW_ENV}
    cfg = mysql_config(server=srv, pool={"mode": "session"})
    if not tls:
        cfg["pools"][0]["server"]["tls"] = {"mode": "disable"}
    return cfg, {PW_ENV: password}


def started(tokenpool, server, cfg, env):
    """tokenpool, once its readiness login has reached the server (so the
    clients' logins come after it, not beside it)."""
    tp = tokenpool(cfg, env=env)
    wait_until(lambda: server.logins, 10, "tokenpool's first server login")
    return tp


def two_sessions_at_once(tp):
    """Two clients holding their sessions together: the pool needs a second
    server login. Returns what CURRENT_USER() said to each."""
    a, b = connect(tp), connect(tp)
    try:
        return [one(a, "SELECT CURRENT_USER()"), one(b, "SELECT CURRENT_USER()")]
    finally:
        a.close()
        b.close()


def test_mariadb_native_password_account(rig, tokenpool, mysql_config):
    tp = tokenpool(mysql_config(server={"auth": "password", "user": rig.mysql_password_user,
                                        "password_env": PW_ENV}),
                   env={PW_ENV: rig.mysql_password})
    for tls in (False, True):
        conn = connect(tp, tls=tls)
        try:
            assert one(conn, "SELECT CURRENT_USER()") == f"{rig.mysql_password_user}@%"
            assert rows(conn, "SHOW SESSION STATUS LIKE 'Ssl_cipher'")[0][1], "upstream session without TLS"
        finally:
            conn.close()
    assert rig.mysql_password not in tp.output()

    bad = tokenpool(mysql_config(server={"auth": "password", "user": rig.mysql_password_user,
                                         "password_env": PW_ENV}),
                    env={PW_ENV: "not-" + rig.mysql_password})
    code, msg = refused(bad)
    assert code == 2013 and "Access denied" in msg and rig.mysql_password_user in msg, (code, msg)
    assert bad.running
    assert rig.mysql_password not in bad.output()


@pytest.mark.parametrize("greeting", [mysql8.SHA2, mysql8.NATIVE])
def test_caching_sha2_full_authentication_over_tls_then_fast_path(tokenpool, mysql_config,
                                                                  mysql8_server, greeting):
    """MySQL 8 takes the password once in full (over the verified TLS), then
    the scramble alone (fast path); with a native greeting it switches the
    account to caching_sha2 first."""
    server = mysql8_server(greeting)
    cfg, env = sha2_pool(mysql_config, server)
    tp = started(tokenpool, server, cfg, env)
    assert two_sessions_at_once(tp) == [f"{SHA2_USER}@%"] * 2
    wait_until(lambda: len(server.logins) >= 2, 10, "two server logins")
    methods = [r["method"] for r in server.logins]
    assert all(r["result"] == "ok" and r["tls"] for r in server.logins), server.logins
    assert methods[0] == "full-tls" and "fast" in methods[1:], methods
    assert methods.count("full-tls") == 1, methods
    assert all(r["switched"] == (greeting != mysql8.SHA2) for r in server.logins), server.logins
    assert not server.violations
    assert SHA2_PASSWORD not in tp.output()


def test_caching_sha2_without_tls_sends_the_password_rsa_encrypted(tokenpool, mysql_config,
                                                                   mysql8_server):
    """tls.mode disable (allowed for a password account): full authentication
    asks for the server's public key; the password never goes in clear."""
    server = mysql8_server()
    cfg, env = sha2_pool(mysql_config, server, tls=False)
    tp = started(tokenpool, server, cfg, env)
    assert two_sessions_at_once(tp) == [f"{SHA2_USER}@%"] * 2
    wait_until(lambda: len(server.logins) >= 2, 10, "two server logins")
    methods = [r["method"] for r in server.logins]
    assert all(r["result"] == "ok" and not r["tls"] for r in server.logins), server.logins
    assert methods[0] == "full-rsa" and "fast" in methods[1:], methods
    assert not server.violations
    assert SHA2_PASSWORD not in tp.output()


@pytest.mark.parametrize("tls", [True, False])
def test_caching_sha2_wrong_password_refuses_the_client_with_the_reason(tokenpool, mysql_config,
                                                                       mysql8_server, tls):
    server = mysql8_server()
    cfg, env = sha2_pool(mysql_config, server, password="not-" + SHA2_PASSWORD, tls=tls)
    tp = started(tokenpool, server, cfg, env)
    code, msg = refused(tp)
    assert code == 2013 and "Access denied" in msg and SHA2_USER in msg, (code, msg)
    assert server.logins and all(r["result"] == "refused" for r in server.logins), server.logins
    assert not server.violations
    assert tp.running
    # Many clients at once while every login fails: each is told, none hangs.
    results = []

    def client():
        try:
            connect(tp).close()
            results.append("ok")
        except pymysql.err.OperationalError as e:
            results.append(e.args[0])

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [2013] * 8, results
    assert tp.running
