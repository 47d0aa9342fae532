"""Real PostgreSQL clients through tokenpool, in front of the rig.

psql, pgbench, psycopg2 and node `pg` log in to tokenpool with the static
credentials from its config; tokenpool logs in upstream with an Entra token
over verified TLS. What a client sees on refusals (SQLSTATEs) is read from
the wire by a small raw protocol client, since libpq does not expose the
SQLSTATE of a failed login.
"""

import hashlib
import json
import os
import re
import secrets
import subprocess
import time

import psycopg2
import pytest

from conftest import CLIENT_PASSWORD, CLIENT_USER

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_MODULES = os.path.join(HERE, "node_modules")
MODES = ["session", "transaction"]


# ---------------------------------------------------------------- helpers

def client_env(**extra):
    """An environment for client programs: nothing PG* from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(extra)
    return env


from pgraw import LoginRefused, error_fields, msg as _msg, pg_login, recv_exact as _recv_exact, recv_msg  # noqa: F401,E501


def login_refused(port, user, password, database, **kw):
    """The LoginRefused of a login that must fail."""
    try:
        sock = pg_login(port, user, password, database, **kw)
    except LoginRefused as e:
        return e
    sock.close()
    pytest.fail(f"login as {user!r} to {database!r} succeeded; expected a refusal")


def psql(tp, sql, **dsn):
    return subprocess.run(["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql, tp.pg_dsn(**dsn)],
                          capture_output=True, text=True, env=client_env(), timeout=30)


def query(conn, sql, args=None):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def pam_entries(rig):
    return rig.pam_log()


def pg_log_size(rig):
    return os.path.getsize(rig.pg_log_file)


def pg_log_since(rig, offset):
    with open(rig.pg_log_file, errors="replace") as f:
        f.seek(offset)
        return f.read()


def db_user(rig):
    return rig.identity("system")["db_user"]


# ---------------------------------------------------------------- psql

@pytest.mark.parametrize("mode", MODES)
def test_psql_queries_through_tokenpool(rig, tokenpool, pg_config, mode):
    tp = tokenpool(pg_config(pool={"mode": mode}))
    out = psql(tp, "SELECT current_user, (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), 6 * 7")
    assert out.returncode == 0, out.stderr + tp.output()[-3000:]
    assert out.stdout.strip() == f"{db_user(rig)}|t|42"
    # A transaction over several statements, each sent on its own (-c per statement).
    out = subprocess.run(["psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
                          "-c", "BEGIN", "-c", "CREATE TEMP TABLE t_psql (x int)",
                          "-c", "INSERT INTO t_psql VALUES (1), (2)", "-c", "SELECT sum(x) FROM t_psql",
                          "-c", "COMMIT", tp.pg_dsn()],
                         capture_output=True, text=True, env=client_env(), timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["3"], out.stdout
    out = psql(tp, "SELECT 1/0")
    assert out.returncode != 0 and "division by zero" in out.stderr


# ---------------------------------------------------------------- pgbench

@pytest.mark.parametrize("mode", MODES)
def test_pgbench_through_tokenpool(rig, tokenpool, pg_config, mode):
    tp = tokenpool(pg_config(pool={"mode": mode, "size": 5}))
    env = client_env(PGPASSWORD=CLIENT_PASSWORD)
    conn = ["-h", "127.0.0.1", "-p", str(tp.listen[1]), "-U", CLIENT_USER, rig.pg_database]
    init = subprocess.run(["pgbench", "-i", "-s", "1", "-q"] + conn,
                          capture_output=True, text=True, env=env, timeout=60)
    assert init.returncode == 0, init.stderr + tp.output()[-3000:]
    assert "done" in init.stderr
    run = subprocess.run(["pgbench", "-S", "-T", "3", "-c", "4", "-j", "2"] + conn,
                         capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr + tp.output()[-3000:]
    failed = re.search(r"number of failed transactions: (\d+)", run.stdout)
    assert failed, run.stdout
    assert int(failed.group(1)) == 0, run.stdout
    processed = re.search(r"number of transactions actually processed: (\d+)", run.stdout)
    assert processed and int(processed.group(1)) > 0, run.stdout
    tps = re.search(r"tps = ([0-9.]+)", run.stdout)
    assert tps and float(tps.group(1)) > 0, run.stdout


# ---------------------------------------------------------------- psycopg2

@pytest.mark.parametrize("mode", MODES)
def test_psycopg2_through_tokenpool(rig, tokenpool, pg_config, mode):
    # Session mode gives each client a server of its own; transaction mode
    # shares two servers among three clients.
    tp = tokenpool(pg_config(pool={"mode": mode, "size": 3 if mode == "session" else 2}))
    conns = [psycopg2.connect(tp.pg_dsn()) for _ in range(3)]
    try:
        for i, conn in enumerate(conns):
            assert query(conn, "SELECT current_user") == [(db_user(rig),)]
            assert query(conn, "SELECT %s::int + 1, %s::text", (i, "x" * 1000)) == [(i + 1, "x" * 1000)]
            conn.commit()
        # A real transaction with a rollback.
        conn = conns[0]
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS tp_clients_probe (x int)")
        conn.commit()
        with conn.cursor() as cur:
            cur.execute("INSERT INTO tp_clients_probe VALUES (1)")
        conn.rollback()
        assert query(conn, "SELECT count(*) FROM tp_clients_probe") == [(0,)]
        # A large result crosses the proxy intact.
        rows = query(conn, "SELECT g, md5(g::text) FROM generate_series(1, 20000) g")
        assert len(rows) == 20000 and rows[-1] == (20000, hashlib.md5(b"20000").hexdigest())
        conn.commit()
        with conn.cursor() as cur:
            cur.execute("DROP TABLE tp_clients_probe")
        conn.commit()
    finally:
        for c in conns:
            c.close()


# ---------------------------------------------------------------- node pg

NODE_SCRIPT = r"""
const { Client, Pool } = require('pg');
const cfg = JSON.parse(process.argv[2]);
async function main() {
  const out = {};
  const c = new Client(cfg);
  await c.connect();
  out.user = (await c.query('SELECT current_user AS u')).rows[0].u;
  out.ssl = (await c.query('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()')).rows[0].ssl;
  out.sum = (await c.query('SELECT $1::int + $2::int AS s', [40, 2])).rows[0].s;
  await c.query('BEGIN');
  out.inTxn = (await c.query("SELECT 'in txn' AS t")).rows[0].t;
  await c.query('COMMIT');
  await c.end();
  const pool = new Pool({ ...cfg, max: 4 });
  const res = await Promise.all(Array.from({ length: 20 }, (_, i) =>
    pool.query('SELECT $1::int * 2 AS v', [i])));
  out.poolValues = res.map(r => r.rows[0].v);
  await pool.end();
  const tls = new Client({ ...cfg, ssl: { rejectUnauthorized: false } });
  await tls.connect();
  out.tlsUser = (await tls.query('SELECT current_user AS u')).rows[0].u;
  out.tlsToProxy = tls.connection.stream.encrypted === true;
  await tls.end();
  const bad = new Client({ ...cfg, password: cfg.password + '-wrong' });
  try { await bad.connect(); out.wrong = 'connected'; await bad.end(); }
  catch (e) { out.wrong = e.code || String(e); }
  console.log(JSON.stringify(out));
}
main().catch(e => { console.error(e); process.exit(1); });
"""


def run_node(tmp_path, cfg):
    assert os.path.isdir(os.path.join(NODE_MODULES, "pg")), \
        "node pg is not installed: run `npm install` in tests/integration (tests/deps.sh does)"
    script = tmp_path / "client.js"
    script.write_text(NODE_SCRIPT)
    return subprocess.run(["node", str(script), json.dumps(cfg)], capture_output=True, text=True,
                          env=client_env(NODE_PATH=NODE_MODULES), timeout=60)


@pytest.mark.parametrize("mode", MODES)
def test_node_pg_through_tokenpool(rig, tokenpool, pg_config, tmp_path, mode):
    # The script's pg.Pool holds up to 4 clients: in session mode each needs
    # a server, in transaction mode they share 2.
    tp = tokenpool(pg_config(pool={"mode": mode, "size": 5 if mode == "session" else 2}))
    cfg = {"host": "127.0.0.1", "port": tp.listen[1], "user": CLIENT_USER, "password": CLIENT_PASSWORD,
           "database": rig.pg_database}
    p = run_node(tmp_path, cfg)
    assert p.returncode == 0, p.stdout + p.stderr + tp.output()[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out == {"user": db_user(rig), "ssl": True, "sum": 42, "inTxn": "in txn",
                   "poolValues": [i * 2 for i in range(20)], "tlsUser": db_user(rig), "tlsToProxy": True,
                   "wrong": "28P01"}


# ---------------------------------------------------------------- refusals

def test_wrong_password_unknown_user_and_unknown_database(rig, tokenpool, pg_config):
    tp = tokenpool(pg_config())
    port = tp.listen[1]
    wrong_pw = login_refused(port, CLIENT_USER, "not-the-password", rig.pg_database)
    assert wrong_pw.sqlstate == "28P01", wrong_pw.fields
    unknown = login_refused(port, "nobody", CLIENT_PASSWORD, rig.pg_database)
    assert unknown.sqlstate == "28P01", unknown.fields
    # Same words as a wrong password: nothing tells which user names exist.
    assert unknown.message == wrong_pw.message.replace(f'"{CLIENT_USER}"', '"nobody"'), \
        (unknown.message, wrong_pw.message)
    nodb = login_refused(port, CLIENT_USER, CLIENT_PASSWORD, "no_such_db")
    assert nodb.sqlstate == "3D000", nodb.fields
    assert "no_such_db" in nodb.message
    # What libpq users read.
    out = psql(tp, "SELECT 1", password="not-the-password")
    assert out.returncode != 0 and "password authentication failed" in out.stderr, out.stderr
    out = psql(tp, "SELECT 1", dbname="no_such_db")
    assert out.returncode != 0 and "no_such_db" in out.stderr and "does not exist" in out.stderr, out.stderr
    # The proxy still serves the right credentials.
    conn = psycopg2.connect(tp.pg_dsn())
    assert query(conn, "SELECT 1") == [(1,)]
    conn.close()


# ---------------------------------------------------------------- identity and TLS upstream

def test_token_login_over_tls_as_system_identity(rig, tokenpool, pg_config):
    # tokenpool logs in once at start (readiness), before any client asks.
    before = len(pam_entries(rig))
    log_at = pg_log_size(rig)
    tp = tokenpool(pg_config())
    conn = psycopg2.connect(tp.pg_dsn())
    try:
        user, ssl_on = query(conn, "SELECT current_user, (SELECT ssl FROM pg_stat_ssl "
                                   "WHERE pid = pg_backend_pid())")[0]
        assert user == db_user(rig)
        assert ssl_on is True
    finally:
        conn.close()
    new = pam_entries(rig)[before:]
    allowed = [e for e in new if e.get("user") == db_user(rig) and e.get("result") == "allow"]
    assert allowed, f"no PAM decision allowing {db_user(rig)}: {new}"
    assert allowed[-1]["reason"] == "ok"
    assert allowed[-1]["appid"] == rig.identity("system")["client_id"]
    assert int(allowed[-1]["len"]) > 1000  # a real-size token went through whole
    new_log = pg_log_since(rig, log_at)
    assert re.search(rf"connection authorized: user={db_user(rig)} database={rig.pg_database}"
                     rf"( application_name=\S+)? SSL enabled", new_log), new_log


def test_long_token_logs_in_through_tokenpool(rig, tokenpool, pg_config):
    # Tokens of identities in many groups grow past 6 KB; poolers have broken on that.
    rig.idp_config(groups=120)
    before = len(pam_entries(rig))
    tp = tokenpool(pg_config())
    conn = psycopg2.connect(tp.pg_dsn())
    try:
        assert query(conn, "SELECT current_user") == [(db_user(rig),)]
    finally:
        conn.close()
    allowed = [e for e in pam_entries(rig)[before:] if e.get("result") == "allow"]
    assert allowed and int(allowed[-1]["len"]) > 6000, pam_entries(rig)[before:]


def test_weaker_tls_modes_do_what_they_say(rig, tokenpool, pg_config):
    """verify-ca checks the chain but not the name; require encrypts without
    verifying, and says so in the log."""
    rig.use_pg_certificate("wronghost")
    tp = tokenpool(pg_config(server={"tls": {"mode": "verify-ca"}}))
    conn = psycopg2.connect(tp.pg_dsn())
    try:
        assert query(conn, "SELECT current_user") == [(db_user(rig),)]
    finally:
        conn.close()
    tp = tokenpool(pg_config(server={"tls": {"mode": "verify-ca", "ca_file": rig.other_ca_file}}))
    err = login_refused(tp.listen[1], CLIENT_USER, CLIENT_PASSWORD, rig.pg_database)
    assert err.sqlstate == "08006" and "certificate" in err.message, err.fields
    tp = tokenpool(pg_config(server={"tls": {"mode": "require", "ca_file": rig.other_ca_file}}))
    conn = psycopg2.connect(tp.pg_dsn())
    try:
        assert query(conn, "SELECT current_user, (SELECT ssl FROM pg_stat_ssl "
                           "WHERE pid = pg_backend_pid())") == [(db_user(rig), True)]
    finally:
        conn.close()
    assert re.search(r"warn.*(verif|require)", tp.output(), re.I), tp.output()[-3000:]


def _assert_tls_refusal_without_token(rig, tp, want):
    """The client gets 08006 naming the certificate problem; PostgreSQL never
    saw a login attempt and the PAM module never saw a token."""
    pam_before = len(pam_entries(rig))
    log_at = pg_log_size(rig)
    t0 = time.monotonic()
    err = login_refused(tp.listen[1], CLIENT_USER, CLIENT_PASSWORD, rig.pg_database)
    assert time.monotonic() - t0 < 8, "the refusal took longer than connect_timeout"
    assert err.sqlstate == "08006", err.fields
    assert re.search(want, err.message, re.I), err.message
    # libpq users read the reason too.
    with pytest.raises(psycopg2.OperationalError) as exc:
        psycopg2.connect(tp.pg_dsn()).close()
    assert re.search(want, str(exc.value), re.I), str(exc.value)
    time.sleep(0.3)  # let the PAM module / postgres write anything they would
    assert pam_entries(rig)[pam_before:] == [], "a token reached PAM over unverified TLS"
    new_log = pg_log_since(rig, log_at)
    assert db_user(rig) not in new_log, f"PostgreSQL saw a login for {db_user(rig)}:\n{new_log}"
    assert "authentication" not in new_log.lower(), new_log
    assert tp.running


def test_wrong_host_certificate_fails_before_the_token_is_sent(rig, tokenpool, pg_config):
    rig.use_pg_certificate("wronghost")
    tp = tokenpool(pg_config())
    _assert_tls_refusal_without_token(rig, tp, r"certificate.*(host ?name|mismatch)")


def test_untrusted_ca_fails_before_the_token_is_sent(rig, tokenpool, pg_config):
    tp = tokenpool(pg_config(server={"tls": {"ca_file": rig.other_ca_file}}))
    _assert_tls_refusal_without_token(rig, tp, r"certificate.*(issuer|unknown|untrusted|self.signed)")


def test_verify_full_with_wrong_server_name_fails(rig, tokenpool, pg_config):
    tp = tokenpool(pg_config(server={"tls": {"mode": "verify-full", "server_name": rig.wronghost_name}}))
    _assert_tls_refusal_without_token(rig, tp, r"certificate.*(host ?name|mismatch)")


# ---------------------------------------------------------------- client-side TLS

def _assert_session(tp, sslmode, ssl_in_use, sql, expected):
    """A libpq session with sslmode: TLS in use or not as told, and sql
    answers `expected`."""
    conn = psycopg2.connect(tp.pg_dsn(sslmode=sslmode))
    try:
        assert conn.info.ssl_in_use == ssl_in_use
        assert query(conn, sql) == expected
    finally:
        conn.close()


def test_client_tls_allow_accepts_ssl_and_plain(rig, tokenpool, pg_config):
    tp = tokenpool(pg_config())  # client_tls default: allow, self-signed
    _assert_session(tp, "require", True, "SELECT current_user", [(db_user(rig),)])
    out = psql(tp, "SELECT 1", sslmode="require")
    assert out.returncode == 0 and out.stdout.strip() == "1", out.stderr
    _assert_session(tp, "disable", False, "SELECT 1", [(1,)])


def test_client_tls_require_refuses_plaintext(rig, tokenpool, pg_config):
    tp = tokenpool(pg_config(client_tls={"mode": "require"}))
    with pytest.raises(psycopg2.OperationalError) as exc:
        psycopg2.connect(tp.pg_dsn(sslmode="disable")).close()
    assert re.search(r"SSL|TLS|encrypt", str(exc.value)), str(exc.value)
    err = login_refused(tp.listen[1], CLIENT_USER, CLIENT_PASSWORD, rig.pg_database)
    assert err.fields.get("S") == "FATAL" and re.search(r"SSL|TLS", err.message), err.fields
    # With TLS it works, with the raw client as with libpq.
    pg_login(tp.listen[1], CLIENT_USER, CLIENT_PASSWORD, rig.pg_database, tls=True).close()
    _assert_session(tp, "require", True, "SELECT current_user", [(db_user(rig),)])


def test_client_tls_disable_refuses_sslmode_require(rig, tokenpool, pg_config):
    tp = tokenpool(pg_config(client_tls={"mode": "disable"}))
    with pytest.raises(psycopg2.OperationalError) as exc:
        psycopg2.connect(tp.pg_dsn(sslmode="require")).close()
    assert "does not support SSL" in str(exc.value), str(exc.value)
    conn = psycopg2.connect(tp.pg_dsn(sslmode="disable"))
    try:
        assert query(conn, "SELECT 1") == [(1,)]
    finally:
        conn.close()


# ---------------------------------------------------------------- other credentials

def test_password_auth_upstream(rig, tokenpool, pg_config):
    tp = tokenpool(pg_config(server={"auth": "password", "user": rig.pg_password_user,
                                     "password_env": "TP_TEST_UPSTREAM_PW"}),
                   env={"TP_TEST_UPSTREAM_PW": rig.pg_password})
    for mode in ("disable", "require"):
        conn = psycopg2.connect(tp.pg_dsn(sslmode=mode))
        try:
            assert query(conn, "SELECT current_user, (SELECT ssl FROM pg_stat_ssl "
                               "WHERE pid = pg_backend_pid())") == [(rig.pg_password_user, True)]
        finally:
            conn.close()
    assert rig.pg_password not in tp.output()


def test_password_hash_credential_with_psql(rig, tokenpool, tokenpool_bin, pg_config):
    password = "hashed-" + secrets.token_urlsafe(12)
    h = subprocess.run([tokenpool_bin, "hash"], input=password + "\n", capture_output=True, text=True,
                       timeout=30)
    assert h.returncode == 0, h.stderr
    scram = [line for line in h.stdout.splitlines() if line.startswith("SCRAM-SHA-256$4096:")]
    assert len(scram) == 1, h.stdout
    tp = tokenpool(pg_config(clients=[{"user": "hashed", "password_hash": scram[0]}]))
    out = psql(tp, "SELECT current_user", user="hashed", password=password)
    assert out.returncode == 0, out.stderr + tp.output()[-3000:]
    assert out.stdout.strip() == db_user(rig)
    out = psql(tp, "SELECT current_user", user="hashed", password=password + "x")
    assert out.returncode != 0 and "password authentication failed" in out.stderr, out.stderr
    err = login_refused(tp.listen[1], "hashed", "wrong", rig.pg_database)
    assert err.sqlstate == "28P01"


# ---------------------------------------------------------------- limits

def test_max_clients(rig, tokenpool, pg_config):
    tp = tokenpool(pg_config(pool={"max_clients": 2}))
    held = [psycopg2.connect(tp.pg_dsn()) for _ in range(2)]
    try:
        for c in held:
            assert query(c, "SELECT 1") == [(1,)]
        err = login_refused(tp.listen[1], CLIENT_USER, CLIENT_PASSWORD, rig.pg_database)
        assert err.sqlstate == "53300", err.fields
        with pytest.raises(psycopg2.OperationalError) as exc:
            psycopg2.connect(tp.pg_dsn()).close()
        assert re.search(r"too many|clients|full", str(exc.value), re.I), str(exc.value)
    finally:
        held[0].close()
    # A place came free.
    deadline = time.monotonic() + 5
    while True:
        try:
            conn = psycopg2.connect(tp.pg_dsn())
            break
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    try:
        assert query(conn, "SELECT 1") == [(1,)]
    finally:
        conn.close()
        held[1].close()
