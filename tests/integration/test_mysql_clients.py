"""Real MySQL clients through tokenpool, in front of the rig's MariaDB.

The mariadb CLI, PyMySQL and node mysql2 log in to tokenpool with the
static credentials from its config; tokenpool logs in upstream with an
Entra token (IMDS) over verified TLS, answering MariaDB's switch to
mysql_clear_password the way Azure Database for MySQL takes a token. What
a client sees on refusals is read from the client libraries' error codes.
"""

import hashlib
import json
import os
import subprocess

import pymysql
import pytest

from conftest import CLIENT_PASSWORD, CLIENT_USER

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_MODULES = os.path.join(HERE, "node_modules")
MARIADB = "/usr/bin/mariadb"


# ---------------------------------------------------------------- helpers

def token_user(rig):
    return rig.identity("system")["db_user"]


def connect(tp, user=CLIENT_USER, password=CLIENT_PASSWORD, database=None, tls=False, **kw):
    """PyMySQL to tokenpool's first pool (database: the pool's name)."""
    if database is None:
        database = tp.config["pools"][0]["name"]
    if tls:
        kw["ssl"] = {"check_hostname": False, "verify_mode": 0}
        kw["ssl_verify_cert"] = False
    kw.setdefault("autocommit", True)
    return pymysql.connect(host="127.0.0.1", port=tp.listen[1], user=user, password=password,
                           database=database or None, connect_timeout=10, **kw)


def one(conn, sql, args=None):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchone()


def cli(tp, sql, user=CLIENT_USER, password=CLIENT_PASSWORD, database=None, tls=True, extra=()):
    """The mariadb CLI against tokenpool; password in MYSQL_PWD."""
    if database is None:
        database = tp.config["pools"][0]["name"]
    cmd = [MARIADB, "--no-defaults", "--protocol=TCP", "-h", "127.0.0.1", "-P", str(tp.listen[1]),
           "-u", user, "--batch", "--skip-column-names", "--connect-timeout=10",
           "--ssl" if tls else "--skip-ssl", *extra, "-e", sql]
    if database:
        cmd.append(database)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYSQL")}
    env["MYSQL_PWD"] = password
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)


def login_error(tp, **kw):
    """(errno, message) of a refused PyMySQL login."""
    with pytest.raises(pymysql.err.OperationalError) as exc:
        connect(tp, **kw)
    return exc.value.args[0], exc.value.args[1]


# ---------------------------------------------------------------- logins

@pytest.mark.parametrize("tls", [False, True])
def test_cli_runs_queries_as_the_token_user(rig, tokenpool, mysql_config, tls):
    tp = tokenpool(mysql_config())
    r = cli(tp, "SELECT CURRENT_USER(); SELECT DATABASE(); SELECT 40 + 2", tls=tls)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [f"{token_user(rig)}@%", rig.mysql_database, "42"]
    assert "client logged in as app" + (" over TLS" if tls else "") in tp.output()


@pytest.mark.parametrize("tls", [False, True])
def test_pymysql_login(rig, tokenpool, mysql_config, tls):
    tp = tokenpool(mysql_config())
    conn = connect(tp, tls=tls)
    try:
        assert one(conn, "SELECT CURRENT_USER()")[0] == f"{token_user(rig)}@%"
        # The upstream side is TLS, whatever the client chose.
        assert one(conn, "SHOW SESSION STATUS LIKE 'Ssl_cipher'")[1] != ""
    finally:
        conn.close()


def test_node_mysql2(rig, tokenpool, mysql_config):
    tp = tokenpool(mysql_config())
    script = """
const mysql = require('mysql2/promise');
(async () => {
  const out = [];
  for (const ssl of [undefined, {rejectUnauthorized: false}]) {
    const c = await mysql.createConnection({host: '127.0.0.1', port: %d, user: %s,
      password: %s, database: %s, ssl});
    const [rows] = await c.query('SELECT CURRENT_USER() AS u');
    const [prep] = await c.execute('SELECT ? + 1 AS x, ? AS s', [41, 'abc']);
    out.push([rows[0].u, prep[0].x, prep[0].s]);
    await c.end();
  }
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
""" % (tp.listen[1], json.dumps(CLIENT_USER), json.dumps(CLIENT_PASSWORD),
       json.dumps(rig.mysql_database))
    r = subprocess.run(["node", "-e", script], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, NODE_PATH=NODE_MODULES))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [[f"{token_user(rig)}@%", 42, "abc"]] * 2


@pytest.mark.parametrize("tls", [False, True])
def test_client_insisting_on_caching_sha2(rig, tokenpool, mysql_config, tls):
    tp = tokenpool(mysql_config())
    r = cli(tp, "SELECT CURRENT_USER()", tls=tls, extra=["--default-auth=caching_sha2_password"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{token_user(rig)}@%"
    bad = cli(tp, "SELECT 1", password="wrong", tls=tls,
              extra=["--default-auth=caching_sha2_password"])
    assert bad.returncode != 0 and "ERROR 1045" in bad.stderr


def test_password_hash_credentials(rig, tokenpool, tokenpool_bin, mysql_config):
    """Clients configured by hash: the native hash verifies the native
    scramble, the SHA256D hash the caching_sha2 fast path; each one also
    gets a client that started with the other method (auth switch)."""
    hashes = subprocess.run([tokenpool_bin, "hash"], input=CLIENT_PASSWORD,
                            capture_output=True, text=True, timeout=10)
    assert hashes.returncode == 0, hashes.stderr
    lines = hashes.stdout.split()
    native = [h for h in lines if h.startswith("*")]
    sha2 = [h for h in lines if h.startswith("SHA256D$")]
    tp = tokenpool(mysql_config(clients=[{"user": "n", "password_hash": native[0]},
                                      {"user": "s", "password_hash": sha2[0]}]))
    for user in ("n", "s"):
        for extra in ([], ["--default-auth=caching_sha2_password"]):
            r = cli(tp, "SELECT 1", user=user, extra=extra)
            assert r.returncode == 0, (user, extra, r.stderr)
            assert r.stdout.strip() == "1"
            bad = cli(tp, "SELECT 1", user=user, password="wrong", extra=extra)
            assert "ERROR 1045" in bad.stderr, (user, extra, bad.stderr)


def _scram_pool(tokenpool, tokenpool_bin, mysql_config):
    """A pool whose client "p" is configured by a SCRAM hash (written for
    PostgreSQL): no MySQL scramble can be checked against it, so
    caching_sha2_password full authentication is the only way in."""
    hashes = subprocess.run([tokenpool_bin, "hash"], input=CLIENT_PASSWORD,
                            capture_output=True, text=True, timeout=10)
    scram = [h for h in hashes.stdout.split() if h.startswith("SCRAM-SHA-256$")]
    return tokenpool(mysql_config(clients=[{"user": "p", "password_hash": scram[0]}]))


@pytest.mark.parametrize("tls", [True, False])
def test_full_authentication_over_tls_or_rsa(tokenpool, tokenpool_bin, mysql_config, tls):
    """The password in clear inside TLS; without TLS, RSA-encrypted with
    the public key tokenpool sends on request (the mariadb CLI and PyMySQL
    both ask for it)."""
    tp = _scram_pool(tokenpool, tokenpool_bin, mysql_config)
    ok = cli(tp, "SELECT 'full'", user="p", tls=tls)
    assert ok.returncode == 0 and ok.stdout.strip() == "full", ok.stderr
    bad = cli(tp, "SELECT 1", user="p", password="wrong", tls=tls)
    assert "ERROR 1045" in bad.stderr, bad.stderr
    for _ in range(2):  # the key is made once; the second login reuses it
        conn = connect(tp, user="p", tls=tls)
        assert one(conn, "SELECT 'pymysql'")[0] == "pymysql"
        conn.close()
    code, msg = login_error(tp, user="p", password="wrong", tls=tls)
    assert code == 1045, msg


class RawSha2Client:
    """caching_sha2_password by hand, without TLS, up to "perform full
    authentication" (01 04)."""

    def __init__(self, tp, user="p", password=CLIENT_PASSWORD):
        import socket
        import struct
        self.sock = socket.create_connection(("127.0.0.1", tp.listen[1]), timeout=10)
        greeting = self.recv()
        assert greeting[0] == 10
        # version NUL, thread id, scramble[8], filler, caps, charset,
        # status, caps hi, auth data len, 10 reserved, scramble rest
        i = greeting.index(b"\0", 1) + 1 + 4
        part1 = greeting[i:i + 8]
        j = i + 8 + 1 + 2 + 1 + 2 + 2 + 1 + 10
        part2 = greeting[j:j + 12]
        self.nonce = part1 + part2
        caps = 0x200 | 0x8000 | 0x80000 | 0x8 | 0x2000
        pw = password.encode()
        h1 = hashlib.sha256(pw).digest()
        h2 = hashlib.sha256(hashlib.sha256(h1).digest() + self.nonce).digest()
        scramble = bytes(a ^ b for a, b in zip(h1, h2))
        body = (struct.pack("<IIB", caps, 1 << 24, 45) + bytes(23) + user.encode() + b"\0"
                + bytes([len(scramble)]) + scramble + b"orders\0caching_sha2_password\0")
        self.seq = 1
        self.send(body)
        assert self.recv() == b"\x01\x04", "expected: perform full authentication"

    def send(self, payload):
        import struct
        self.sock.sendall(struct.pack("<I", len(payload))[:3] + bytes([self.seq]) + payload)
        self.seq += 2  # the answer takes the one in between

    def recv(self):
        def exact(n):
            out = b""
            while len(out) < n:
                chunk = self.sock.recv(n - len(out))
                assert chunk, f"closed after {out!r}"
                out += chunk
            return out
        head = exact(4)
        return exact(head[0] | head[1] << 8 | head[2] << 16)

    def public_key(self):
        from cryptography.hazmat.primitives import serialization
        self.send(b"\x02")
        more = self.recv()
        assert more[:1] == b"\x01", more[:40]
        return serialization.load_pem_public_key(more[1:])

    def encrypted(self, key, password):
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding
        plain = password.encode() + b"\0"
        plain = bytes(c ^ self.nonce[i % 20] for i, c in enumerate(plain))
        return key.encrypt(plain, padding.OAEP(mgf=padding.MGF1(hashes.SHA1()),
                                               algorithm=hashes.SHA1(), label=None))

    def result(self):
        """0 for OK, else the ERR code."""
        pkt = self.recv()
        self.sock.close()
        if pkt[0] == 0:
            return 0
        assert pkt[0] == 0xFF, pkt[:40]
        return pkt[1] | pkt[2] << 8


def test_rsa_key_exchange_by_hand(tokenpool, tokenpool_bin, mysql_config):
    """The wire exchange itself: "02" gets a PEM RSA public key; the
    password (NUL-terminated, XOR the scramble), RSA-OAEP encrypted, logs
    in; a wrong password, the password in clear, or a ciphertext under
    another key are refused with 1045."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    tp = _scram_pool(tokenpool, tokenpool_bin, mysql_config)

    c = RawSha2Client(tp)
    key = c.public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048
    c.send(c.encrypted(key, CLIENT_PASSWORD))
    assert c.result() == 0

    c = RawSha2Client(tp)  # the same key, known from before: no request
    c.send(c.encrypted(key, CLIENT_PASSWORD))
    assert c.result() == 0

    c = RawSha2Client(tp, password="wrong")
    c.send(c.encrypted(c.public_key(), "wrong"))
    assert c.result() == 1045

    c = RawSha2Client(tp)  # in clear without TLS: never taken
    c.send(CLIENT_PASSWORD.encode() + b"\0")
    assert c.result() == 1045

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    c = RawSha2Client(tp)
    c.send(c.encrypted(other, CLIENT_PASSWORD))
    assert c.result() == 1045

    c = RawSha2Client(tp)  # asking twice is not a client we understand
    c.public_key()
    c.send(b"\x02")
    assert c.result() == 1043
    assert tp.running


# ---------------------------------------------------------------- refusals

def test_wrong_password_unknown_user_unknown_database(tokenpool, mysql_config):
    tp = tokenpool(mysql_config())
    code, msg = login_error(tp, password="not-the-password")
    assert code == 1045 and "Access denied for user 'app'" in msg
    code, msg = login_error(tp, user="nobody")
    assert code == 1045 and "nobody" in msg
    code, msg = login_error(tp, database="no_such_db")
    assert code == 1049 and "no_such_db" in msg
    r = cli(tp, "SELECT 1", password="wrong")
    assert r.returncode != 0 and "ERROR 1045 (28000)" in r.stderr


def test_too_many_clients(tokenpool, mysql_config):
    tp = tokenpool(mysql_config(pool={"max_clients": 1}))
    first = connect(tp)
    try:
        code, msg = login_error(tp)
        assert code == 1040, msg
    finally:
        first.close()


def test_client_tls_with_the_configured_certificate(rig, tokenpool, mysql_config):
    """client_tls cert_file/key_file: a client that verifies the server
    (mariadb --ssl-verify-server-cert against the rig's CA, for the name
    localhost) gets in; with the certificate generated at start it does not,
    since no CA vouches for that one, while an unverifying client does."""
    verify = ["--ssl-ca", rig.ca_file, "--ssl-verify-server-cert"]

    def cli_localhost(tp, extra):
        cmd = [MARIADB, "--no-defaults", "--protocol=TCP", "-h", "localhost", "-P", str(tp.listen[1]),
               "-u", CLIENT_USER, "--batch", "--skip-column-names", "--connect-timeout=10", *extra,
               "-e", "SELECT CURRENT_USER(); SHOW SESSION STATUS LIKE 'Ssl_version'",
               tp.config["pools"][0]["name"]]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MYSQL")}
        env["MYSQL_PWD"] = CLIENT_PASSWORD
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)

    tp = tokenpool(mysql_config(client_tls={"mode": "require", "cert_file": rig.server_cert_file,
                                            "key_file": rig.server_key_file}))
    r = cli_localhost(tp, verify)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == f"{token_user(rig)}@%"
    assert "client logged in as app over TLS" in tp.output()

    generated = tokenpool(mysql_config(client_tls={"mode": "require"}))
    r = cli_localhost(generated, verify)
    assert r.returncode != 0 and "ERROR 2026" in r.stderr, r.stdout + r.stderr  # SSL connection error
    r = cli_localhost(generated, ["--ssl"])
    assert r.returncode == 0, r.stderr


def test_client_tls_required(tokenpool, mysql_config):
    tp = tokenpool(mysql_config(client_tls={"mode": "require"}))
    code, msg = login_error(tp)
    assert code == 3159 and "TLS" in msg
    conn = connect(tp, tls=True)
    assert one(conn, "SELECT 1")[0] == 1
    conn.close()


# ---------------------------------------------------------------- forwarding

def test_multi_statement_returns_every_result(tokenpool, mysql_config):
    tp = tokenpool(mysql_config())
    conn = connect(tp, client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1; SELECT 2, 'two'; SELECT 3")
            sets = [cur.fetchall()]
            while cur.nextset():
                sets.append(cur.fetchall())
        assert sets == [((1,),), ((2, "two"),), ((3,),)]
    finally:
        conn.close()
    # A client that did not ask for multi-statements gets the server's
    # refusal, even on a server connection that had them on before.
    single = connect(tp)
    try:
        with pytest.raises(pymysql.err.ProgrammingError):
            one(single, "SELECT 1; SELECT 2")
        assert one(single, "SELECT 5")[0] == 5
    finally:
        single.close()


def test_twenty_megabyte_value_round_trips(rig, tokenpool, mysql_config):
    rig.mysql_admin("SET GLOBAL max_allowed_packet = 64 * 1024 * 1024")
    try:
        tp = tokenpool(mysql_config())
        conn = connect(tp)
        try:
            value = os.urandom(20 * 1024 * 1024 + 13)
            with conn.cursor() as cur:
                cur.execute("CREATE TEMPORARY TABLE big (v LONGBLOB)")
                cur.execute("INSERT INTO big VALUES (%s)", (value,))
                cur.execute("SELECT v, LENGTH(v) FROM big")
                got, n = cur.fetchone()
            assert n == len(value) and got == value
            assert one(conn, "SELECT 'after'")[0] == "after"
        finally:
            conn.close()
    finally:
        rig.mysql_admin("SET GLOBAL max_allowed_packet = DEFAULT")


def test_load_data_local_infile(tokenpool, mysql_config, tmp_path):
    tp = tokenpool(mysql_config(pool={"mode": "transaction"}))
    data = tmp_path / "rows.csv"
    data.write_text("".join(f"{i},row{i}\n" for i in range(2000)))
    conn = connect(tp, local_infile=True)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TEMPORARY TABLE li (id INT, name VARCHAR(20))")
            cur.execute(f"LOAD DATA LOCAL INFILE '{data}' INTO TABLE li "
                        "FIELDS TERMINATED BY ','")
            cur.execute("SELECT COUNT(*), MAX(id) FROM li")
            assert cur.fetchone() == (2000, 1999)
    finally:
        conn.close()


# ---------------------------------------------------------------- pooling

def _count_logins(tp):
    return tp.output().count("server login ok")


def test_session_state_pins_and_never_leaks(rig, tokenpool, mysql_config):
    """Transaction mode: user variables, temporary tables and prepared
    statements keep a client's server; nobody else sees them, before or
    after that client leaves."""
    tp = tokenpool(mysql_config(pool={"mode": "transaction", "size": 2}))
    a = connect(tp)
    with a.cursor() as cur:
        cur.execute("SET @mine = 42")
        cur.execute("CREATE TEMPORARY TABLE t_pinned (x INT)")
        cur.execute("INSERT INTO t_pinned VALUES (7)")
    others = [connect(tp) for _ in range(4)]
    for o in others:
        assert one(o, "SELECT @mine")[0] is None
    assert one(a, "SELECT @mine, (SELECT x FROM t_pinned)") == (42, 7)
    a.close()
    for o in others:
        assert one(o, "SELECT @mine")[0] is None
        with pytest.raises(pymysql.err.ProgrammingError):
            one(o, "SELECT x FROM t_pinned")
        o.close()


def test_server_reported_session_state_pins(rig, tokenpool, mysql_config):
    """A procedure that sets a user variable: nothing in the SQL text says
    so; the server's session-state tracking does."""
    rig.mysql_admin("DROP PROCEDURE IF EXISTS tp_setv; "
                    "CREATE PROCEDURE tp_setv() SET @pv = 9", db=rig.mysql_database)
    tp = tokenpool(mysql_config(pool={"mode": "transaction", "size": 2}))
    a = connect(tp)
    with a.cursor() as cur:
        cur.execute("CALL tp_setv()")
    others = [connect(tp) for _ in range(4)]
    for o in others:
        assert one(o, "SELECT @pv")[0] is None
    assert one(a, "SELECT @pv")[0] == 9
    a.close()
    for o in others:
        assert one(o, "SELECT @pv")[0] is None
        o.close()


def test_session_mode_resets_between_clients(rig, tokenpool, mysql_config):
    tp = tokenpool(mysql_config(pool={"size": 1}))
    a = connect(tp, autocommit=False)
    with a.cursor() as cur:
        cur.execute("SET @left_behind = 1")
        cur.execute("SET SESSION sql_mode = 'ANSI_QUOTES'")
        cur.execute("CREATE TEMPORARY TABLE t_left (x INT)")
    a.close()
    b = connect(tp)
    try:
        assert one(b, "SELECT @left_behind")[0] is None
        assert "ANSI_QUOTES" not in one(b, "SELECT @@SESSION.sql_mode")[0]
        assert one(b, "SELECT @@autocommit")[0] == 1
        with pytest.raises(pymysql.err.ProgrammingError):
            one(b, "SELECT x FROM t_left")
    finally:
        b.close()
    assert _count_logins(tp) == 1


def test_character_set_follows_the_client(tokenpool, mysql_config):
    tp = tokenpool(mysql_config(pool={"mode": "transaction", "size": 1}))
    latin = connect(tp, charset="latin1")
    utf8 = connect(tp, charset="utf8mb4")
    try:
        for _ in range(2):
            assert one(latin, "SELECT @@character_set_client")[0] == "latin1"
            assert one(utf8, "SELECT @@character_set_client")[0] == "utf8mb4"
            assert one(utf8, "SELECT %s", ("h\u00e9llo \u2603",))[0] == "h\u00e9llo \u2603"
    finally:
        latin.close()
        utf8.close()


def test_quit_ping_and_reset(tokenpool, mysql_config):
    tp = tokenpool(mysql_config(pool={"mode": "transaction", "size": 1}))
    conn = connect(tp)
    conn.ping(reconnect=False)
    with conn.cursor() as cur:
        cur.execute("SET @x = 5")
    # COM_RESET_CONNECTION through pymysql's raw command
    conn._execute_command(0x1F, b"")  # COM_RESET_CONNECTION
    conn._read_ok_packet()
    assert one(conn, "SELECT @x")[0] is None
    conn.close()
    # the pool's one server is free again for the next client
    other = connect(tp)
    assert one(other, "SELECT 1")[0] == 1
    other.close()


def test_database_switch_is_undone_for_the_next_client(rig, tokenpool, mysql_config):
    other = [d for d in rig.mysql_databases if d != rig.mysql_database][0]
    tp = tokenpool(mysql_config(pool={"size": 1}))
    a = connect(tp)
    with a.cursor() as cur:
        cur.execute(f"USE `{other}`")
        cur.execute("SELECT DATABASE()")
        assert cur.fetchone()[0] == other
    a.close()
    b = connect(tp)
    try:
        assert one(b, "SELECT DATABASE()")[0] == rig.mysql_database
    finally:
        b.close()
    assert _count_logins(tp) == 1


# ---------------------------------------------------------------- faults

def test_upstream_restart(rig, tokenpool, mysql_config):
    tp = tokenpool(mysql_config(pool={"size": 2, "wait_timeout": 20}))
    a = connect(tp)
    assert one(a, "SELECT 1")[0] == 1
    try:
        rig.restart_mysql("immediate")
        # The client whose server died hears why, MySQL-style.
        with pytest.raises(pymysql.err.OperationalError) as exc:
            one(a, "SELECT 2")
        assert exc.value.args[0] in (2013, 2006), exc.value.args
        # New clients get fresh server connections.
        b = connect(tp)
        assert one(b, "SELECT CURRENT_USER()")[0] == f"{token_user(rig)}@%"
        b.close()
        assert tp.running
    finally:
        if not rig.mysql_running():
            rig.start_mysql()


def _raw_login(tp, payload, seq=1):
    """Read the greeting, send one packet, return what comes back (bytes)
    until the connection closes."""
    import socket
    import struct
    s = socket.create_connection(("127.0.0.1", tp.listen[1]), timeout=10)
    try:
        head = s.recv(4)
        n = head[0] | head[1] << 8 | head[2] << 16
        got = b""
        while len(got) < n:
            got += s.recv(n - len(got))
        assert got[0] == 10  # HandshakeV10
        s.sendall(struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk
    finally:
        s.close()


def test_malformed_login_is_refused_and_closed(tokenpool, mysql_config):
    tp = tokenpool(mysql_config())
    # pre-4.1 HandshakeResponse320
    out = _raw_login(tp, b"\x85\x24\x00\x00\x00app\x00")
    assert out[4] == 0xFF and out[5:7] == (1043).to_bytes(2, "little"), out
    # a user name without its NUL
    out = _raw_login(tp, b"\x0d\xa2\x3a\x00" + bytes(28) + b"x" * 40)
    assert out[4] == 0xFF and out[5:7] == (1043).to_bytes(2, "little"), out
    # a login packet claiming 16 MB
    import socket
    s = socket.create_connection(("127.0.0.1", tp.listen[1]), timeout=10)
    s.recv(4096)
    s.sendall(b"\xff\xff\xff\x01\x0d")
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    assert data[4] == 0xFF, data
    # and it goes on serving
    conn = connect(tp)
    assert one(conn, "SELECT 1")[0] == 1
    conn.close()
