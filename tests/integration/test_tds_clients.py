"""SQL Server clients through tokenpool to the rig's stand-in for Azure SQL:
tedious, node mssql, FreeTDS tsql and pymssql log in with static
credentials (with and without TLS on the client side); tokenpool logs in
upstream with a FEDAUTH token over TLS verified against the rig's CA,
follows the gateway's redirect, and refuses what it must with the errors
SQL Server clients expect (18456, 4060, clear messages)."""

import os
import signal
import socket

import pymssql
import pytest

from test_tds_common import (CLIENT_PASSWORD, CLIENT_USER, mssql_connect, node, sqlserver_config,
                             running_servers, tedious, tsql, write_freetds_conf)

import codec  # noqa: E402  (the rig's TDS codec, for crafted input; path set by test_tds_common)
from client import TdsClient, errors_of  # noqa: E402


@pytest.fixture(scope="module")
def tds(rig, tmp_path_factory):
    work = str(tmp_path_factory.mktemp("tds"))
    pw_file = os.path.join(work, "sql-password")
    with open(pw_file, "w") as f:
        f.write("Sql-Passw0rd-for-the-rig\n")
    with running_servers(rig, work, sql_user="legacy_sql", sql_password_file=pw_file) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _fresh_counters(request):
    if "tds" in request.fixturenames:
        t = request.getfixturevalue("tds")
        t.target.reset()
        t.gateway.reset()
    yield


@pytest.fixture
def started(rig, tds, tokenpool, free_port):
    """Factory: a tokenpool with one sqlserver pool in front of the target
    (overrides as sqlserver_config takes them); returns (tp, port)."""

    def start(server_port=None, env=None, **overrides):
        cfg = sqlserver_config(rig, server_port or tds.target.port, free_port, **overrides)
        tp = tokenpool(cfg, env=env)
        return tp, tp.listen[1]

    return start


def freetds_conf(tds, port, rig, encryption="require"):
    path = os.path.join(tds.work, f"freetds-{port}-{encryption}.conf")
    write_freetds_conf(path, port, rig.ca_file, encryption)
    return path


# ---------------------------------------------------------------- logins that work

def test_tedious_with_and_without_tls(rig, tds, started):
    tp, port = started()
    who = rig.identity("system")["db_user"]
    for encrypt in (True, False):
        out = tedious(rig, port, [{"sql": "SELECT 1"},
                                  {"batch": "SELECT SUSER_SNAME(), DB_NAME(), @@SERVERNAME"}],
                      encrypt=encrypt)
        assert out["connect"]["ok"], out
        assert out["results"][0]["rows"] == [[1]]
        assert out["results"][1]["rows"] == [[who, "orders", "rig-target"]]
        assert out["packetSize"] == 4096
    assert "client logged in as app over TLS" in tp.output()
    # The upstream login: FEDAUTH with a real-size token over TLS verified
    # against the rig's CA, for the pool's server name.
    login = tds.target.last_login()
    assert login["result"] == "ok" and login["auth"] == "token" and login["principal"] == who
    assert login["fedauth_echo"] == 1 and login["prelogin_fedauth_required"] is True
    assert login["tls_version"] == "TLSv1.2" and login["sni"] == "localhost"
    assert login["token_chars"] > 1000 and login["user_name"] == ""
    assert login["appid"] == rig.identity("system")["client_id"]
    assert "0x0a" in login["features"]          # UTF8_SUPPORT asked for


def test_long_token_logs_in(rig, tds, started):
    """Tokens of identities in many groups grow past 6 KB: the LOGIN7 that
    carries one spans several TDS packets, and the server takes it whole."""
    rig.idp_config(groups=120)
    tp, port = started()
    out = tedious(rig, port, [{"batch": "SELECT SUSER_SNAME()"}])
    assert out["connect"]["ok"], out
    assert out["results"][0]["rows"] == [[rig.identity("system")["db_user"]]]
    login = tds.target.last_login()
    assert login["result"] == "ok" and login["auth"] == "token", login
    assert login["token_chars"] > 6000, login["token_chars"]


def test_tsql_with_and_without_tls(rig, tds, started):
    tp, port = started()
    who = rig.identity("system")["db_user"]
    for enc in ("require", "off"):
        out = tsql(freetds_conf(tds, port, rig, enc), "SELECT SUSER_SNAME(), DB_NAME()")
        assert f"{who}\torders" in out, out
    assert tp.output().count("client logged in as app over TLS") == 1
    assert tp.output().count("client logged in as app\n") == 1


def test_pymssql_queries_and_large_result(rig, tds, started):
    tp, port = started()
    conn = mssql_connect(port, freetds_conf(tds, port, rig))
    try:
        cur = conn.cursor()
        cur.execute("SELECT SUSER_SNAME(), @@TRANCOUNT")   # pymssql opened a transaction
        assert cur.fetchone() == (rig.identity("system")["db_user"], 1)
        key = f"tds-pymssql-{os.getpid()}"
        cur.execute("INSERT INTO kv (k, v) VALUES (%s, %s)", (key, "v1"))
        conn.commit()
        cur.execute("SELECT v FROM kv WHERE k = %s", (key,))
        assert cur.fetchall() == [("v1",)]
        cur.execute("SELECT REPLICATE(%s, %d)", ("xyz", 300000))
        assert cur.fetchone()[0] == "xyz" * 300000
        with pytest.raises(pymssql.ProgrammingError) as e:
            cur.execute("SELECT nope FROM nowhere")
        assert e.value.args[0] == 208
        cur.execute(f"DELETE FROM kv WHERE k = '{key}'")
        conn.commit()
    finally:
        conn.close()


NODE_MSSQL = r"""
const sql = require('mssql');
const fs = require('fs');
const cfg = JSON.parse(process.argv[1]);
(async () => {
  const out = {};
  try {
    const pool = await sql.connect({
      server: 'localhost', port: cfg.port, user: cfg.user, password: cfg.password, database: 'orders',
      options: { encrypt: true, trustServerCertificate: false,
                 cryptoCredentialsDetails: { ca: fs.readFileSync(cfg.ca) } },
      pool: { max: 4 },
    });
    const r = await pool.request().input('n', sql.Int, 41).query('SELECT @n + 1 AS answer, SUSER_SNAME() AS who');
    out.rows = r.recordset;
    const many = await Promise.all([...Array(8).keys()].map((i) =>
      pool.request().input('i', sql.Int, i).query('SELECT @i AS i')));
    out.many = many.map((x) => x.recordset[0].i);
    await pool.close();
  } catch (e) {
    out.error = String(e && e.message);
  }
  process.stdout.write(JSON.stringify(out) + '\n', () => process.exit(0));
})();
"""


def test_node_mssql(rig, tds, started):
    tp, port = started()
    out = node(NODE_MSSQL, {"port": port, "user": CLIENT_USER, "password": CLIENT_PASSWORD,
                            "ca": rig.ca_file})
    assert "error" not in out, out
    assert out["rows"] == [{"answer": 42, "who": rig.identity("system")["db_user"]}]
    assert out["many"] == list(range(8))


def test_upstream_sql_auth(rig, tds, started):
    """auth: password (a non-Azure server): SQL authentication upstream."""
    tp, port = started(server={"auth": "password", "user": "legacy_sql",
                               "password_env": "TDS_UPSTREAM_PASSWORD"},
                       env={"TDS_UPSTREAM_PASSWORD": "Sql-Passw0rd-for-the-rig"})
    out = tedious(rig, port, [{"batch": "SELECT SUSER_SNAME()"}])
    assert out["results"][0]["rows"] == [["legacy_sql"]], out
    login = tds.target.last_login()
    assert login["auth"] == "sql" and login["user_name"] == "legacy_sql"
    assert "0x02" not in login["features"]


def test_redirect_is_followed_and_hidden(rig, tds, started):
    """Azure's gateway answers the login with ENVCHANGE 20: tokenpool logs
    in again at the routed host (TLS name from the redirect) and the
    client never sees the redirect."""
    tp, port = started(server_port=tds.gateway.port)
    out = tedious(rig, port, [{"batch": "SELECT @@SERVERNAME, SUSER_SNAME()"}])
    assert out["connect"]["ok"], out
    assert out["routed"] is None
    assert out["results"][0]["rows"] == [["rig-target", rig.identity("system")["db_user"]]]
    gw = tds.gateway.stats()
    assert gw["redirects"] >= 1 and gw["last_login"]["redirected_to"] == f"localhost:{tds.target.port}"
    login = tds.target.last_login()
    assert login["result"] == "ok" and login["sni"] == "localhost" and login["auth"] == "token"
    out = tsql(freetds_conf(tds, port, rig), "SELECT @@SERVERNAME")
    assert "rig-target" in out


def test_tds8_strict_client(rig, tds, started):
    """TDS 8: the client starts with TLS, PRELOGIN inside it."""
    tp, port = started()
    out = tedious(rig, port, [{"batch": "SELECT DB_NAME()"}], encrypt="strict")
    assert out["connect"]["ok"], out
    assert out["results"][0]["rows"] == [["orders"]]


# ---------------------------------------------------------------- refusals

def test_wrong_password_and_unknown_user_get_18456(rig, tds, started):
    tp, port = started()
    for user, password in ((CLIENT_USER, "wrong"), ("nobody", CLIENT_PASSWORD)):
        out = tedious(rig, port, [], user=user, password=password)
        assert not out["connect"]["ok"]
        msg = f"Login failed for user '{user}'."
        assert out["connect"]["error"] == msg
        assert {"errorMessage": {"number": 18456, "message": msg}} in out["events"]
    out = tsql(freetds_conf(tds, port, rig), "SELECT 1", password="wrong")
    assert "Msg 18456" in out and f"Login failed for user '{CLIENT_USER}'." in out
    with pytest.raises(pymssql.OperationalError) as e:
        mssql_connect(port, freetds_conf(tds, port, rig), password="wrong")
    assert "18456" in str(e.value)
    assert tds.target.stats()["logins"]["attempts"] <= 1   # refused locally


def test_unknown_database_gets_4060(rig, tds, started):
    tp, port = started()
    out = tedious(rig, port, [], database="nosuchdb")
    assert not out["connect"]["ok"]
    numbers = [e["errorMessage"]["number"] for e in out["events"] if "errorMessage" in e]
    assert numbers == [4060, 18456]
    assert 'Cannot open database "nosuchdb"' in out["events"][0]["errorMessage"]["message"]
    out = tsql(freetds_conf(tds, port, rig), "SELECT 1", database="nosuchdb")
    assert "Msg 4060" in out


def test_client_tls_required(rig, tds, started):
    tp, port = started(client_tls={"mode": "require"})
    out = tedious(rig, port, [], encrypt=False)
    assert not out["connect"]["ok"] and "requires encryption" in out["connect"]["error"]
    out = tedious(rig, port, [{"sql": "SELECT 1"}])
    assert out["results"][0]["rows"] == [[1]]


def test_client_tls_disabled(rig, tds, started):
    """No TLS on offer: clients go on in clear (tedious even with encrypt:
    true), FreeTDS with `encryption = require` gives up."""
    tp, port = started(client_tls={"mode": "disable", "cert_file": None, "key_file": None})
    for encrypt in (False, True):
        out = tedious(rig, port, [{"sql": "SELECT 1"}], encrypt=encrypt)
        assert out["results"][0]["rows"] == [[1]], out
    assert "as app over TLS" not in tp.output()
    assert "(1 row affected)" not in tsql(freetds_conf(tds, port, rig, "require"), "SELECT 1")
    assert "(1 row affected)" in tsql(freetds_conf(tds, port, rig, "off"), "SELECT 1")


def test_upstream_tls_verification_failure_is_reported(rig, tds, started):
    tp, port = started(server={"tls": {"ca_file": rig.other_ca_file}}, pool={"wait_timeout": 3})
    out = tedious(rig, port, [{"sql": "SELECT 1"}])
    assert not out["connect"]["ok"]
    assert "certificate" in out["connect"]["error"], out
    numbers = [e["errorMessage"]["number"] for e in out["events"] if "errorMessage" in e]
    assert numbers == [40613]
    assert tds.target.stats()["logins"]["attempts"] == 0     # no token ever sent


def test_identity_endpoint_failure_is_reported(rig, tds, started):
    rig.idp_fault("500", count=-1)
    try:
        tp, port = started(pool={"wait_timeout": 3, "connect_timeout": 2})
        out = tedious(rig, port, [{"sql": "SELECT 1"}])
    finally:
        rig.idp_fault("none")
    assert not out["connect"]["ok"]
    assert "token" in out["connect"]["error"], out


def test_upstream_login_refused_is_reported(rig, tds, started):
    tds.target.config(fail_logins={"count": -1, "number": 40613, "class": 17,
                                   "message": "Database 'orders' is not currently available."})
    try:
        tp, port = started(pool={"wait_timeout": 3})
        out = tedious(rig, port, [])
    finally:
        tds.target.reset()
    assert not out["connect"]["ok"]
    assert "not currently available" in out["connect"]["error"], out


def test_killed_session_is_reported_and_others_go_on(rig, tds, started):
    tp, port = started()
    cl = TdsClient("127.0.0.1", port, rig.ca_file)
    cl.login(user=CLIENT_USER, password=CLIENT_PASSWORD, fedauth_required=False)
    spid = cl.scalar("SELECT @@SPID")
    assert tds.target.kill(spid) == 1
    # Session mode: the client held that server; it is told, then closed.
    ptype, payload, _ = cl.read_message()
    toks = codec.parse_tokens(payload)
    assert errors_of(toks) == [40613]
    assert "server connection lost" in [f for k, f in toks if k == "ERROR"][0]["message"]
    assert _closed(cl)
    out = tedious(rig, port, [{"sql": "SELECT 1"}])
    assert out["results"][0]["rows"] == [[1]]


def test_shutdown_tells_clients(rig, tds, started):
    """SIGTERM: a session-mode client may finish; after shutdown.timeout it
    is told the proxy is shutting down (6005), then closed."""
    tp, port = started()
    cl = TdsClient("127.0.0.1", port, rig.ca_file)
    cl.login(user=CLIENT_USER, password=CLIENT_PASSWORD, fedauth_required=False)
    assert cl.scalar("SELECT 1") == 1
    tp.send_signal(signal.SIGTERM)
    assert cl.scalar("SELECT 2") == 2                 # still served meanwhile
    ptype, payload, _ = cl.read_message()
    err = [f for k, f in codec.parse_tokens(payload) if k == "ERROR"]
    assert [e["number"] for e in err] == [6005] and "shutting down" in err[0]["message"]
    assert _closed(cl)
    assert tp.wait(10) == 0


# ---------------------------------------------------------------- bad input

def _raw(port, data):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):
            pass
    except (ConnectionResetError, BrokenPipeError, socket.timeout):
        pass
    finally:
        s.close()


def _closed(cl):
    return cl.closed_by_server(timeout=5)


def test_bad_input_disconnects_and_tokenpool_stays_healthy(rig, tds, started):
    tp, port = started()
    hdr = codec.HEADER.pack
    for data in [
        b"\x12\x01\x00\x04\x00\x00\x01\x00",                          # length < 8
        b"\x12\x01\xff\xff\x00\x00\x01\x00" + b"x" * 100,             # oversized PRELOGIN
        hdr(0x12, 1, 8 + 6, 0, 1, 0) + b"\x00\x00\x40\x00\x06\xff",   # option outside payload
        codec.packetize(codec.PT_LOGIN7, codec.build_login7(user="app", password="x"), 4096),
        os.urandom(3000),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x02\x01\x00\x10" + bytes(12),                               # TDS 5 login
    ]:
        _raw(port, data)
    # After TLS: a LOGIN7 whose offsets point outside it, an oversized one.
    cl = TdsClient("127.0.0.1", port, rig.ca_file)
    cl.prelogin(fedauth_required=False)
    cl.start_tls()
    bad = bytearray(codec.build_login7(user="app", password="x"))
    bad[36:38] = (60000).to_bytes(2, "little")
    bad[38:40] = (5).to_bytes(2, "little")
    cl.send(codec.PT_LOGIN7, bytes(bad))
    assert _closed(cl)
    cl = TdsClient("127.0.0.1", port, rig.ca_file)
    cl.prelogin(fedauth_required=False)
    cl.start_tls()
    try:  # 200 KB of LOGIN7 without an end: refused before the end
        for i in range(3):
            cl.send_raw(hdr(0x10, 0, 0xFFFF, 0, i + 1, 0) + b"\0" * (0xFFFF - 8))
    except OSError:
        pass
    assert _closed(cl)
    # Logged in: a packet of an unknown type, a broken request.
    for payload, ptype in ((b"\0" * 20, 0x53), (b"\x50\x00\x00\x00" + "SELECT 1".encode("utf-16-le"), 1)):
        cl = TdsClient("127.0.0.1", port, rig.ca_file)
        cl.login(user=CLIENT_USER, password=CLIENT_PASSWORD, fedauth_required=False)
        cl.send(ptype, payload)
        assert _closed(cl)
    # still serving, nothing crashed
    out = tedious(rig, port, [{"sql": "SELECT 1"}])
    assert out["results"][0]["rows"] == [[1]]
    assert tp.running
