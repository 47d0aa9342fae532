"""The rig's TDS server (tests/rig/tds, the stand-in for Azure SQL Database)
is as strict as Azure: proven with real clients — tedious (Node), FreeTDS
`tsql` and pymssql — talking to it directly, no tokenpool involved.

Two servers per module: `target` (token and SQL logins) and `gateway`
(answers every login with an ENVCHANGE 20 redirect to `target`, like Azure's
gateway under the Redirect connection policy)."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
import types

import pymssql
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
TDS_DIR = os.path.join(REPO, "tests", "rig", "tds")
sys.path.insert(0, TDS_DIR)

import codec  # noqa: E402  (the rig's own TDS codec, for crafted input)
from client import LoginFailed, TdsClient, errors_of, rows_of  # noqa: E402
from server import TdsServerProcess  # noqa: E402

NODE_MODULES = os.path.join(HERE, "node_modules")
TEDIOUS_CLIENT = os.path.join(TDS_DIR, "tedious_client.js")
DB_AUDIENCE = "https://database.windows.net"
SQL_USER = "legacy_sql"
SQL_PASSWORD = "Sql-Passw0rd-for-the-rig"
TOKEN_FAIL = "Login failed for user '<token-identified principal>'."


@pytest.fixture(scope="module")
def tds(rig, tmp_path_factory):
    work = str(tmp_path_factory.mktemp("tds"))
    pw_file = os.path.join(work, "sql-password")
    with open(pw_file, "w") as f:
        f.write(SQL_PASSWORD + "\n")
    common = dict(cert=rig.server_cert_file, key=rig.server_key_file, jwt_key_file=rig.key_file, workdir=work)
    old_conf = os.environ.get("FREETDSCONF")
    target = TdsServerProcess.start(name="rig-target", sql_user=SQL_USER, sql_password_file=pw_file, **common)
    gateway = None
    try:
        gateway = TdsServerProcess.start(name="rig-gateway", redirect_to=f"localhost:{target.port}", **common)
        conf = os.path.join(work, "freetds.conf")
        write_freetds_conf(conf, target.port, rig.ca_file)
        os.environ["FREETDSCONF"] = conf     # pymssql (FreeTDS) reads it at each connect
        yield types.SimpleNamespace(target=target, gateway=gateway, work=work, freetds_conf=conf)
    finally:
        if gateway is not None:
            gateway.stop()
        target.stop()
        if old_conf is None:
            os.environ.pop("FREETDSCONF", None)
        else:
            os.environ["FREETDSCONF"] = old_conf


def write_freetds_conf(path, port, ca_file, encryption="require"):
    with open(path, "w") as f:
        f.write(f"[global]\n\ttds version = 7.4\n\tencryption = {encryption}\n\tca file = {ca_file}\n"
                f"[rig]\n\thost = localhost\n\tport = {port}\n")


@pytest.fixture(scope="module")
def db_token(rig):
    return rig.token(resource=DB_AUDIENCE)


@pytest.fixture(autouse=True)
def _fresh_counters(request):
    if "tds" in request.fixturenames:
        t = request.getfixturevalue("tds")
        t.target.reset()
        t.gateway.reset()
    yield


def tedious(rig, port, token=None, steps=(), **cfg):
    """Run tests/rig/tds/tedious_client.js; returns its JSON report."""
    assert os.path.isdir(os.path.join(NODE_MODULES, "tedious")), \
        "tedious is not installed: run `npm install` in tests/integration (tests/deps.sh does)"
    c = {"port": port, "ca": rig.ca_file, "database": "orders", "steps": list(steps)}
    if token is not None:
        c["token"] = token
    c.update(cfg)
    p = subprocess.run(["node", TEDIOUS_CLIENT, json.dumps(c)], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, NODE_PATH=NODE_MODULES))
    assert p.returncode == 0 and p.stdout, f"tedious client failed: {p.stderr[-2000:]}"
    return json.loads(p.stdout.splitlines()[-1])


def tsql(conf, sql, user=SQL_USER, password=SQL_PASSWORD, database="orders"):
    p = subprocess.run(["tsql", "-S", "rig", "-U", user, "-P", password, "-D", database],
                       input=f"{sql}\ngo\nexit\n", capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, FREETDSCONF=conf))
    return p.stdout + p.stderr


def mssql_connect(port, **kw):
    args = dict(server="localhost", port=port, user=SQL_USER, password=SQL_PASSWORD, database="orders",
                login_timeout=10)
    args.update(kw)
    return pymssql.connect(**args)


# ---------------------------------------------------------------- token logins (tedious)

def test_tedious_token_login_over_verified_tls(rig, tds, db_token):
    out = tedious(rig, tds.target.port, db_token, [
        {"sql": "SELECT 1"},
        {"batch": "SELECT SUSER_SNAME(), @@SPID, DB_NAME(), @@SERVERNAME"},
    ])
    assert out["connect"]["ok"], out
    assert out["results"][0]["rows"] == [[1]]
    who, spid, db, name = out["results"][1]["rows"][0]
    assert (who, db, name) == (rig.identity("system")["db_user"], "orders", "rig-target")
    login = tds.target.last_login()
    assert login["result"] == "ok" and login["auth"] == "token" and login["spid"] == spid
    assert login["appid"] == rig.identity("system")["client_id"]
    assert login["fedauth_echo"] == 1 and login["prelogin_fedauth_required"] is True
    assert login["tds_version"] == "0x74000004" and login["tls_version"] == "TLSv1.2"
    assert login["sni"] == "localhost"
    assert login["token_chars"] > 1000      # real-size token went through whole


@pytest.mark.parametrize("case", ["bad_signature", "expired", "wrong_aud", "not_yet_valid", "no_user_claim"])
def test_bad_tokens_get_18456(rig, tds, case):
    if case == "bad_signature":
        tok = rig.mint_token("orders_app", aud=DB_AUDIENCE, key=b"k" * 64)
    elif case == "expired":
        tok = rig.mint_token("orders_app", aud=DB_AUDIENCE, lifetime=-30)
    elif case == "wrong_aud":
        tok = rig.token()               # a real token, but for the PostgreSQL/MySQL audience
    elif case == "not_yet_valid":
        tok = rig.mint_token("orders_app", aud=DB_AUDIENCE, nbf=int(time.time()) + 600)
    else:
        tok = rig.mint_token("", aud=DB_AUDIENCE)
    out = tedious(rig, tds.target.port, tok, [{"sql": "SELECT 1"}])
    assert not out["connect"]["ok"]
    assert out["connect"]["error"] == TOKEN_FAIL
    assert {"errorMessage": {"number": 18456, "message": TOKEN_FAIL}} in out["events"]
    login = tds.target.last_login()
    assert login["result"] == "fail" and login["reason"] == case


def test_audience_with_trailing_slash_is_accepted(rig, tds):
    tok = rig.token(resource=DB_AUDIENCE + "/")
    assert rig.decode_token(tok)["aud"] == DB_AUDIENCE + "/"
    out = tedious(rig, tds.target.port, tok, [{"sql": "SELECT SUSER_SNAME()"}])
    assert out["results"][0]["rows"] == [["orders_app"]]


def test_fedauth_echo_must_match_prelogin(rig, tds, db_token):
    """The FEDAUTH echo bit must say what the server's PRELOGIN said."""
    cl = TdsClient("127.0.0.1", tds.target.port, rig.ca_file)
    with pytest.raises(LoginFailed) as e:
        cl.login(token=db_token, echo=0)
    assert e.value.numbers == [18456]
    assert cl.closed_by_server()
    assert tds.target.last_login()["reason"] == "fedauth_echo_mismatch"
    cl = TdsClient("127.0.0.1", tds.target.port, rig.ca_file)
    assert cl.login(token=db_token, fedauth_required=False, echo=0)      # no FEDAUTHREQUIRED: echo 0
    assert cl.scalar("SELECT SUSER_SNAME()") == "orders_app"
    cl.close()


def test_encryption_is_required(rig, tds, db_token):
    out = tedious(rig, tds.target.port, db_token, [], encrypt=False)
    assert not out["connect"]["ok"] and "requires encryption" in out["connect"]["error"]
    out = tedious(rig, tds.target.port, db_token, [], ca=rig.other_ca_file)
    assert not out["connect"]["ok"]                       # the certificate is the rig CA's
    # A client that goes on in plaintext after the REQ answer is refused.
    cl = TdsClient("127.0.0.1", tds.target.port)
    pre = cl.prelogin(encryption=codec.ENCRYPT_NOT_SUP)
    assert pre[codec.PL_ENCRYPTION] == bytes([codec.ENCRYPT_REQ])
    cl.send(codec.PT_LOGIN7, codec.build_login7(fedauth_token=db_token))
    _, payload, _ = cl.read_message()
    assert errors_of(codec.parse_tokens(payload)) == [18456]
    assert cl.closed_by_server()
    conf = os.path.join(tds.work, "freetds-off.conf")
    write_freetds_conf(conf, tds.target.port, rig.ca_file, encryption="off")
    assert "(1 row affected)" not in tsql(conf, "SELECT 1")
    assert tds.target.stats()["refused_no_tls"] >= 2


def test_tds8_strict_tls_first(rig, tds, db_token):
    out = tedious(rig, tds.target.port, db_token, [{"sql": "SELECT @@SPID"}], encrypt="strict")
    assert out["connect"]["ok"], out
    login = tds.target.last_login()
    assert login["strict"] is True and login["alpn"] == "tds/8.0" and login["tls_version"] == "TLSv1.3"


# ---------------------------------------------------------------- redirect (Azure gateway)

def test_redirect_sends_tedious_to_the_target(rig, tds, db_token):
    out = tedious(rig, tds.gateway.port, db_token, [{"sql": "SELECT @@SERVERNAME, SUSER_SNAME()"}])
    assert out["connect"]["ok"], out
    assert out["results"][0]["rows"] == [["rig-target", "orders_app"]]
    gw = tds.gateway.stats()
    assert gw["redirects"] == 1 and gw["last_login"]["redirected_to"] == f"localhost:{tds.target.port}"
    assert tds.target.last_login()["sni"] == "localhost"


def test_redirect_routing_token_shape(rig, tds, db_token):
    cl = TdsClient("127.0.0.1", tds.gateway.port, rig.ca_file)
    toks = cl.login(token=db_token)
    names = [k for k, _ in toks]
    assert names == ["LOGINACK", "FEATUREEXTACK", "ENVCHANGE", "DONE"]
    routing = toks[2][1]
    assert routing == {"type": 20, "protocol": 0, "port": tds.target.port, "host": "localhost"}
    assert cl.closed_by_server()


# ---------------------------------------------------------------- requests (tedious)

def test_tedious_cancel_interrupts_waitfor(rig, tds, db_token):
    out = tedious(rig, tds.target.port, db_token, [
        {"sql": "WAITFOR DELAY '00:00:20'", "cancelAfterMs": 200},      # RPC (sp_executesql)
        {"sql": "SELECT 42"},
        {"batch": "SELECT 1; WAITFOR DELAY '00:00:20'", "cancelAfterMs": 200},
        {"batch": "SELECT 43"},
    ])
    canceled, after, canceled2, after2 = out["results"]
    assert canceled["code"] == "ECANCEL" and canceled["ms"] < 1500
    assert after["rows"] == [[42]]
    assert canceled2["code"] == "ECANCEL" and canceled2["ms"] < 1500
    assert after2["rows"] == [[43]]
    assert tds.target.stats()["attentions"] == 2


def test_tedious_large_result_and_packet_size(rig, tds, db_token):
    n = 3 * 1024 * 1024
    out = tedious(rig, tds.target.port, db_token, [
        {"sql": f"SELECT REPLICATE('ab', {n // 2}) AS big, LEN(REPLICATE('ab', {n // 2}))"},
    ], packetSize=16384)
    big, length = out["results"][0]["rows"][0]
    assert length == n and big == "ab" * (n // 2)
    assert out["packetSize"] == 16384
    assert tds.target.last_login()["packet_size"] == 16384


def test_forced_small_packet_size(rig, tds, db_token):
    """--packet-size (here via the admin API) overrides the client's request;
    replies are framed in packets of that size and tedious follows it."""
    tds.target.config(packet_size=512)
    out = tedious(rig, tds.target.port, db_token, [{"sql": "SELECT REPLICATE('q', 20000), 'x' + REPLICATE('y', 3)"}])
    assert out["packetSize"] == 512
    assert out["results"][0]["rows"] == [["q" * 20000, "xyyy"]]
    assert tds.target.last_login()["packet_size_requested"] == 4096
    assert tds.target.last_login()["packet_size"] == 512


def test_client_gone_during_waitfor_ends_the_session(rig, tds, db_token):
    cl = TdsClient("127.0.0.1", tds.target.port, rig.ca_file)
    cl.login(token=db_token)
    spid = cl.spid
    cl.send(codec.PT_SQLBATCH, codec.build_all_headers() + "WAITFOR DELAY '00:00:30'".encode("utf-16-le"))
    deadline = time.monotonic() + 5
    while spid not in [s["spid"] for s in tds.target.sessions() if s["busy"]]:
        assert time.monotonic() < deadline, "the WAITFOR never started"
        time.sleep(0.02)
    cl.close()
    deadline = time.monotonic() + 5
    while spid in [s["spid"] for s in tds.target.sessions()]:
        assert time.monotonic() < deadline, "session still there 5 s after its client left a 30 s WAITFOR"
        time.sleep(0.05)


def test_tedious_parameters_and_kv_table(rig, tds, db_token):
    key = f"tedious-{os.getpid()}"
    out = tedious(rig, tds.target.port, db_token, [
        {"sql": "SELECT @a + 1, @s", "params": [{"name": "a", "type": "Int", "value": 41},
                                                {"name": "s", "type": "NVarChar", "value": "héllo"}]},
        {"sql": "INSERT INTO kv (k, v) VALUES (@k, @v)", "params": [{"name": "k", "type": "NVarChar", "value": key},
                                                                   {"name": "v", "type": "NVarChar", "value": "one"}]},
        {"sql": "UPDATE kv SET v = 'two' WHERE k = @k", "params": [{"name": "k", "type": "NVarChar", "value": key}]},
        {"batch": f"SELECT v FROM kv WHERE k = '{key}'"},
        {"batch": f"DELETE FROM kv WHERE k = '{key}'; SELECT COUNT(*) FROM kv WHERE k = '{key}'"},
        {"batch": "SELECT * FROM no_such_table"},
        {"batch": "SELEC 1"},
        {"sql": "EXEC sp_who"},
    ])
    r = out["results"]
    assert r[0]["rows"] == [[42, "héllo"]]
    assert r[1]["ok"] and r[1]["rowCount"] == 1 and r[2]["rowCount"] == 1
    assert r[3]["rows"] == [["two"]]
    assert r[4]["rows"] == [[0]]
    assert r[5]["number"] == 208 and r[6]["number"] == 102 and r[7]["number"] == 2812


def test_tedious_transactions(rig, tds, db_token):
    out = tedious(rig, tds.target.port, db_token, [
        {"begin": True},                          # TransMgrReq
        {"sql": "SELECT @@TRANCOUNT"},
        {"rollback": True},
        {"batch": "SELECT @@TRANCOUNT"},
        {"batch": "BEGIN TRANSACTION"},
        {"batch": "BEGIN TRAN; SELECT @@TRANCOUNT"},
        {"batch": "COMMIT; COMMIT; SELECT @@TRANCOUNT"},
        {"batch": "COMMIT"},
    ])
    r = out["results"]
    assert r[0]["ok"] and r[1]["rows"] == [[1]] and r[2]["ok"] and r[3]["rows"] == [[0]]
    assert r[5]["rows"] == [[2]] and r[6]["rows"] == [[0]]
    assert r[7]["number"] == 3902


def test_tedious_context_info_and_reset(rig, tds, db_token):
    out = tedious(rig, tds.target.port, db_token, [
        {"batch": "SET CONTEXT_INFO 0x0102"},
        {"sql": "SELECT CONTEXT_INFO()"},
        {"reset": True},                       # next request carries RESETCONNECTION
        {"sql": "SELECT CONTEXT_INFO()"},
    ])
    r = out["results"]
    assert r[1]["rows"] == [[{"hex": "0102" + "00" * 126}]]
    assert r[3]["rows"] == [[None]]
    assert {"resetConnection": True} in out["events"]
    assert tds.target.stats()["resets"] == 1


def test_reset_keeps_isolation_and_rolls_back(rig, tds, db_token):
    """RESETCONNECTION as sp_reset_connection: session state back to login
    state, open transaction rolled back, isolation level kept; ENVCHANGE 18
    comes first. RESETCONNECTIONSKIPTRAN keeps the transaction."""
    cl = TdsClient("127.0.0.1", tds.target.port, rig.ca_file)
    cl.login(token=db_token)
    cl.batch("SET CONTEXT_INFO 0xAB; SET TRANSACTION ISOLATION LEVEL SERIALIZABLE; SET NOCOUNT ON; "
             "CREATE TABLE #t (id INT); BEGIN TRAN")
    q = ("SELECT CONTEXT_INFO(), @@TRANCOUNT, SESSIONPROPERTY('NOCOUNT'), transaction_isolation_level "
         "FROM sys.dm_exec_sessions WHERE session_id = @@SPID")
    toks = cl.batch(q, codec.ST_RESETCONNECTION)
    assert toks[0] == ("ENVCHANGE", {"type": 18, "new": b"", "old": b""})
    assert toks[1][0] == "ENVCHANGE" and toks[1][1]["type"] == codec.ENV_ROLLBACKTRAN
    assert rows_of(toks) == [[None, 0, 0, 4]]
    assert errors_of(cl.batch("SELECT * FROM #t")) == [208]
    cl.batch("BEGIN TRAN; SET CONTEXT_INFO 0xCD")
    toks = cl.batch("SELECT @@TRANCOUNT, CONTEXT_INFO()", codec.ST_RESETCONNECTIONSKIPTRAN)
    assert toks[0][1]["type"] == 18 and rows_of(toks) == [[1, None]]
    cl.close()


# ---------------------------------------------------------------- FreeTDS: tsql and pymssql (SQL auth)

def test_tsql_sql_auth(rig, tds):
    out = tsql(tds.freetds_conf, "SELECT SUSER_SNAME(), DB_NAME()")
    assert f"{SQL_USER}\torders" in out
    login = tds.target.last_login()
    assert login["auth"] == "sql" and login["tls_version"] == "TLSv1.2" and login["library_name"] == "TDS-Library"
    out = tsql(tds.freetds_conf, "SELECT 1", password="wrong")
    assert "Msg 18456" in out and f"Login failed for user '{SQL_USER}'." in out
    assert tds.target.last_login()["reason"] == "bad_password"
    out = tsql(tds.freetds_conf, "SELECT 1", database="nosuchdb")
    assert "Msg 4060" in out and "Msg 18456" in out


def test_pymssql_sql_auth_transactions_and_errors(rig, tds):
    conn = mssql_connect(tds.target.port)
    try:
        cur = conn.cursor()
        cur.execute("SELECT SUSER_SNAME(), @@TRANCOUNT")     # pymssql opened a transaction
        assert cur.fetchone() == (SQL_USER, 1)
        key = f"pymssql-{os.getpid()}"
        cur.execute("INSERT INTO kv (k, v) VALUES (%s, %s)", (key, "v1"))
        assert cur.rowcount == 1
        conn.commit()
        cur.execute("SELECT v FROM kv WHERE k = %s", (key,))
        assert cur.fetchall() == [("v1",)]
        cur.execute("SELECT REPLICATE(%s, %d)", ("xyz", 400000))
        assert cur.fetchone()[0] == "xyz" * 400000
        with pytest.raises(pymssql.ProgrammingError) as e:
            cur.execute("SELECT nope FROM nowhere")
        assert e.value.args[0] == 208
        cur.execute(f"DELETE FROM kv WHERE k = '{key}'")
        conn.commit()
    finally:
        conn.close()
    with pytest.raises(pymssql.OperationalError) as e:
        mssql_connect(tds.target.port, password="wrong")
    assert "18456" in str(e.value)
    # pymssql reports only the last message (18456); the server sent 4060 first
    with pytest.raises(pymssql.OperationalError) as e:
        mssql_connect(tds.target.port, database="nosuchdb")
    assert e.value.args[0][0] == 18456
    assert tds.target.last_login()["error_numbers"] == [4060, 18456]
    # FreeTDS cancels (Attention) after results even when idle; had the
    # server not answered with DONE+ATTN, pymssql would have hung above.
    assert tds.target.stats()["attentions"] >= 1


def test_many_concurrent_sessions_and_kill(rig, tds):
    n = 200
    conns = [None] * n
    errors = []

    def one(i):
        try:
            c = mssql_connect(tds.target.port, autocommit=True)
            cur = c.cursor()
            cur.execute("SELECT @@SPID")
            conns[i] = (c, cur.fetchone()[0])
        except Exception as e:  # collected and asserted below
            errors.append(repr(e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert errors == []
        spids = [s for _, s in conns]
        assert len(set(spids)) == n
        assert tds.target.stats()["open"] >= n
        victim, vspid = conns[0]
        assert tds.target.kill(vspid) == 1
        with pytest.raises(pymssql.OperationalError):
            cur = victim.cursor()
            cur.execute("SELECT 1")
            cur.fetchall()
        other = conns[1][0].cursor()
        other.execute("SELECT @@SPID")
        assert other.fetchone() == (conns[1][1],)
        assert vspid not in [s["spid"] for s in tds.target.sessions()]
    finally:
        for c in conns:
            if c:
                try:
                    c[0].close()
                except Exception:
                    pass


# ---------------------------------------------------------------- bad input

def _raw(port, data):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(data)
    try:
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):
            pass
        return True
    except (ConnectionResetError, socket.timeout):
        return True
    finally:
        s.close()


def test_bad_input_closes_without_harm(rig, tds, db_token):
    port = tds.target.port
    hdr = codec.HEADER.pack
    cases = [
        b"\x12\x01\x00\x04\x00\x00\x01\x00",                          # length < 8
        b"\x12\x01\xff\xff\x00\x00\x01\x00" + b"x" * 100,             # truncated packet
        hdr(0x12, 1, 8 + 6, 0, 1, 0) + b"\x00\x00\x40\x00\x06\xff",   # option outside payload
        codec.packetize(codec.PT_LOGIN7, codec.build_login7(fedauth_token="x"), 4096),   # no PRELOGIN
        os.urandom(3000),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    for data in cases:
        assert _raw(port, data)
    # After TLS: a LOGIN7 whose offsets point outside the record, a request
    # with a broken ALL_HEADERS, a packet bigger than the negotiated size.
    cl = TdsClient("127.0.0.1", port, rig.ca_file)
    cl.prelogin()
    cl.start_tls()
    bad = bytearray(codec.build_login7(fedauth_token=db_token))
    bad[36:38] = (60000).to_bytes(2, "little")
    bad[38:40] = (5).to_bytes(2, "little")
    cl.send(codec.PT_LOGIN7, bytes(bad))
    assert cl.closed_by_server()
    for payload in (b"\x50\x00\x00\x00" + "SELECT 1".encode("utf-16-le"),
                    codec.build_all_headers() + b"S\x00E"):
        cl = TdsClient("127.0.0.1", port, rig.ca_file)
        cl.login(token=db_token)
        cl.send(codec.PT_SQLBATCH, payload)
        assert cl.closed_by_server()
    cl = TdsClient("127.0.0.1", port, rig.ca_file)
    cl.login(token=db_token)
    cl.packet_size = 8192
    cl.send(codec.PT_SQLBATCH, codec.build_all_headers() + ("SELECT 1 " * 800).encode("utf-16-le"))
    assert cl.closed_by_server()
    stats = tds.target.stats()
    assert stats["protocol_errors"] >= 7
    # still serving
    out = tedious(rig, port, db_token, [{"sql": "SELECT 1"}])
    assert out["results"][0]["rows"] == [[1]]
    events = tds.target.events()
    assert not [e for e in events if e["event"] == "internal_error"]
