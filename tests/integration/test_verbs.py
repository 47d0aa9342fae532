"""The verbs and what they print: --version, --help, check, hash, run's exit
codes, SIGTERM, and logs that never hold a token or a password."""

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import signal
import socket
import struct
import subprocess
import time

import psycopg2
import pytest

from conftest import CLIENT_PASSWORD, CLIENT_USER
from test_pg_clients import _msg, error_fields, pg_login, recv_msg


def run_bin(tokenpool_bin, *args, input=None, env=None, cwd=None, timeout=30):
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("AZURE_", "IDENTITY_", "TOKENPOOL_", "MSI_", "PG"))}
    base.update(env or {})
    return subprocess.run([tokenpool_bin, *args], input=input, capture_output=True, text=True,
                          env=base, cwd=cwd, timeout=timeout)


def write_config(path, cfg):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(cfg, f)
    return str(path)


def minimal_config(**pool_extra):
    pool = {
        "name": "orders",
        "protocol": "postgres",
        "listen": "127.0.0.1:6432",
        "server": {"host": "orders.postgres.database.azure.com", "database": "orders",
                   "user": "orders-app-identity"},
        "clients": [{"user": "app", "password": "pw-" + secrets.token_hex(8)}],
    }
    pool.update(pool_extra)
    return {"pools": [pool]}


def scram_verifier_matches(verifier, password):
    """True if a PostgreSQL-style SCRAM-SHA-256 verifier belongs to password."""
    m = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)", verifier)
    assert m, verifier
    iterations, salt = int(m.group(1)), base64.b64decode(m.group(2))
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return (base64.b64decode(m.group(3)) == stored_key and
            base64.b64decode(m.group(4)) == server_key)


# ---------------------------------------------------------------- --version, --help

def test_version(tokenpool_bin):
    p = run_bin(tokenpool_bin, "--version")
    assert p.returncode == 0, p.stderr
    assert re.fullmatch(r"tokenpool \d+\.\d+\.\d+\S*\n", p.stdout), p.stdout


def test_help(tokenpool_bin):
    p = run_bin(tokenpool_bin, "--help")
    assert p.returncode == 0, p.stderr
    for verb in ("run", "check", "hash", "-c"):
        assert verb in p.stdout, p.stdout


def test_unknown_verb_exits_2(tokenpool_bin):
    p = run_bin(tokenpool_bin, "frobnicate")
    assert p.returncode == 2
    assert "frobnicate" in p.stderr


# ---------------------------------------------------------------- check

def _assert_masked(obj, path="$"):
    """Every secret-valued key holds "***" (or a list of them)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("password", "password_hash", "client_secret", "admin_token"):
                vals = v if isinstance(v, list) else [v]
                assert vals and all(x == "***" for x in vals), f"{path}.{k} = {v!r}"
            else:
                _assert_masked(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _assert_masked(v, f"{path}[{i}]")


def test_check_prints_effective_config_with_secrets_masked(tokenpool_bin, tmp_path):
    inline = "inline-" + secrets.token_hex(12)
    hashed_pw = "hashed-" + secrets.token_hex(12)
    env_pw = "fromenv-" + secrets.token_hex(12)
    file_pw = "fromfile-" + secrets.token_hex(12)
    upstream_pw = "upstream-" + secrets.token_hex(12)
    h = run_bin(tokenpool_bin, "hash", input=hashed_pw + "\n")
    scram = [line for line in h.stdout.splitlines() if line.startswith("SCRAM-SHA-256$")][0]
    pw_file = tmp_path / "pw"
    pw_file.write_text(file_pw + "\n")
    os.chmod(pw_file, 0o600)
    cfg = minimal_config(clients=[
        {"user": "app", "password": inline},
        {"user": "hashed", "password_hash": scram},
        {"user": "env", "password_env": "TP_CHECK_ENV_PW"},
        {"user": "file", "password_file": str(pw_file)},
    ])
    cfg["pools"].append({
        "name": "legacy", "protocol": "postgres", "listen": "127.0.0.1:6433",
        "server": {"host": "db.example.com", "database": "legacy", "user": "legacy",
                   "auth": "password", "password_env": "TP_CHECK_UPSTREAM_PW"},
        "clients": [{"user": "app", "password": inline}],
    })
    path = write_config(tmp_path / "good.json", cfg)
    p = run_bin(tokenpool_bin, "check", "-c", path,
                env={"TP_CHECK_ENV_PW": env_pw, "TP_CHECK_UPSTREAM_PW": upstream_pw})
    assert p.returncode == 0, p.stdout + p.stderr
    out = json.loads(p.stdout)
    everything = p.stdout + p.stderr
    for secret in (inline, hashed_pw, env_pw, file_pw, upstream_pw, scram, scram.split("$")[2]):
        assert secret not in everything, f"check printed a secret: {secret}"
    _assert_masked(out)
    clients = out["pools"][0]["clients"]
    assert clients[0]["password"] == "***"
    assert clients[1]["password_hash"] in ("***", ["***"]), clients[1]
    assert clients[2].get("password_env") == "TP_CHECK_ENV_PW"
    assert clients[3].get("password_file") == str(pw_file)
    # The effective config: defaults filled in.
    pool = out["pools"][0]
    assert pool["server"]["port"] == 5432
    assert pool["server"]["auth"] == "token"
    assert pool["server"]["scope"] == "https://ossrdbms-aad.database.windows.net/.default"
    assert pool["server"]["tls"]["mode"] == "verify-full"
    assert pool["client_tls"]["mode"] == "allow"
    assert pool["pool"]["mode"] == "session" and pool["pool"]["size"] == 20
    assert pool["pool"]["max_clients"] == 1000
    assert out["log"]["level"] == "info"
    assert out["pools"][1]["server"]["auth"] == "password"
    # What check prints is itself a config meaning the same thing.
    again = write_config(tmp_path / "again.json", out)
    p2 = run_bin(tokenpool_bin, "check", "-c", again,
                 env={"TP_CHECK_ENV_PW": env_pw, "TP_CHECK_UPSTREAM_PW": upstream_pw})
    if "***" not in json.dumps(out):  # masked values cannot round-trip
        assert p2.returncode == 0 and json.loads(p2.stdout) == out


def test_check_finds_config_through_env_and_cwd(tokenpool_bin, tmp_path):
    cfg = minimal_config()
    path = write_config(tmp_path / "elsewhere.json", cfg)
    p = run_bin(tokenpool_bin, "check", env={"TOKENPOOL_CONFIG": path}, cwd=str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["pools"][0]["name"] == "orders"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    cfg["pools"][0]["name"] = "fromcwd"
    write_config(cwd / "tokenpool.json", cfg)
    p = run_bin(tokenpool_bin, "check", cwd=str(cwd))
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["pools"][0]["name"] == "fromcwd"


BAD_CONFIGS = [
    ("pools[0].server.port", lambda c: c["pools"][0]["server"].__setitem__("port", "abc")),
    ("pools[0].server.port", lambda c: c["pools"][0]["server"].__setitem__("port", 70000)),
    ("pools[0].pool.mode", lambda c: c["pools"][0].__setitem__("pool", {"mode": "statement-ish"})),
    ("pools[0].pool.size", lambda c: c["pools"][0].__setitem__("pool", {"size": -1})),
    ("pools[0].server.tls.mode", lambda c: c["pools"][0]["server"].__setitem__("tls", {"mode": "disable"})),
    ("pools[0].protocol", lambda c: c["pools"][0].__setitem__("protocol", "oracle")),
    ("pools[0].clients[0]", lambda c: c["pools"][0]["clients"][0].pop("password")),
    ("log.level", lambda c: c.__setitem__("log", {"level": "loud"})),
]


@pytest.mark.parametrize("key,mutate", BAD_CONFIGS, ids=[f"{k}-{i}" for i, (k, _) in enumerate(BAD_CONFIGS)])
def test_check_bad_config_names_the_key(tokenpool_bin, tmp_path, key, mutate):
    cfg = minimal_config()
    secret = cfg["pools"][0]["clients"][0].get("password")
    mutate(cfg)
    path = write_config(tmp_path / "bad.json", cfg)
    p = run_bin(tokenpool_bin, "check", "-c", path)
    assert p.returncode == 2, p.stdout + p.stderr
    lines = [line for line in (p.stdout + p.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{p.stdout}{p.stderr}"
    assert key in lines[0], lines[0]
    if secret:
        assert secret not in lines[0]


def test_check_invalid_json(tokenpool_bin, tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"pools": [ {"name": "orders", }\n')
    p = run_bin(tokenpool_bin, "check", "-c", str(path))
    assert p.returncode == 2
    lines = [line for line in (p.stdout + p.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, p.stdout + p.stderr
    assert re.search(r"JSON|parse|syntax", lines[0], re.I), lines[0]


def test_check_missing_file(tokenpool_bin, tmp_path):
    p = run_bin(tokenpool_bin, "check", "-c", str(tmp_path / "nope.json"))
    assert p.returncode == 2
    assert "nope.json" in p.stderr


# ---------------------------------------------------------------- run

def test_run_with_bad_config_exits_2(tokenpool, pg_config):
    cfg = pg_config(server={"port": "abc"})
    tp = tokenpool(cfg, wait_port=False)
    assert tp.wait(10) == 2, tp.output()
    assert "pools[0].server.port" in tp.output()


def test_run_with_port_in_use_exits_1(tokenpool, pg_config):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    port = blocker.getsockname()[1]
    try:
        tp = tokenpool(pg_config(listen=f"127.0.0.1:{port}"), wait_port=False)
        assert tp.wait(10) == 1, tp.output()
        out = tp.output()
        assert f"127.0.0.1:{port}" in out, out
        assert re.search(r"in use", out, re.I), out
    finally:
        blocker.close()


def test_warns_about_inline_password_in_readable_config(tokenpool, pg_config, tmp_path):
    cfg = pg_config()
    path = tmp_path / "open.json"
    path.write_text(json.dumps(cfg))
    os.chmod(path, 0o644)
    listen = tuple(cfg["pools"][0]["listen"].rsplit(":", 1))
    tp = tokenpool(None, args=["run", "-c", str(path)], wait_port=(listen[0], int(listen[1])))
    out = tp.output()
    warn = [line for line in out.splitlines() if "warn" in line.lower() and "open.json" in line]
    assert warn, out
    assert cfg["pools"][0]["clients"][0]["password"] not in out
    # The fixture's own 0600 files get no such warning.
    quiet = tokenpool(pg_config())
    assert not [line for line in quiet.output().splitlines()
                if "warn" in line.lower() and "readable" in line.lower()], quiet.output()


def test_sigterm_exits_0(rig, tokenpool, pg_config):
    tp = tokenpool(pg_config())
    conn = psycopg2.connect(tp.pg_dsn())
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
    conn.close()
    tp.send_signal(signal.SIGTERM)
    assert tp.wait(10) == 0, tp.output()


def _query(sock, sql):
    """Simple query on a raw connection: the messages up to ReadyForQuery."""
    sock.sendall(_msg(b"Q", sql.encode() + b"\0"))
    msgs = []
    while True:
        kind, body = recv_msg(sock)
        msgs.append((kind, body))
        if kind in (b"Z", b"E") and (kind == b"Z" or error_fields(body).get("S") == "FATAL"):
            return msgs


def test_sigterm_lets_a_session_client_finish_then_exits_0(rig, tokenpool, pg_config):
    """On SIGTERM new clients are refused with 57P01, session clients go on
    until they disconnect; after shutdown.timeout the rest get 57P01; exit 0."""
    tp = tokenpool(pg_config(shutdown={"timeout": 2}, pool={"mode": "session"}))
    sock = pg_login(tp.listen[1], CLIENT_USER, CLIENT_PASSWORD, rig.pg_database)
    try:
        assert _query(sock, "SELECT 1")[-1][0] == b"Z"
        tp.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert tp.running, "tokenpool exited at once with a session client connected:\n" + tp.output()[-3000:]
        late = socket.create_connection(tp.listen, timeout=5)
        try:
            body = b"user\0" + CLIENT_USER.encode() + b"\0database\0" + rig.pg_database.encode() + b"\0\0"
            late.sendall(struct.pack("!II", 8 + len(body), 196608) + body)
            kind, err = recv_msg(late)
            assert kind == b"E" and error_fields(err).get("C") == "57P01", (kind, err)
        finally:
            late.close()
        msgs = _query(sock, "SELECT 40 + 2")
        rows = [b for k, b in msgs if k == b"D"]
        assert rows and rows[0].endswith(b"42"), msgs
        # The timeout ends the session with a protocol-native error.
        sock.settimeout(5)
        kind, body = recv_msg(sock)
        assert kind == b"E" and error_fields(body).get("C") == "57P01", (kind, body)
        assert tp.wait(5) == 0, tp.output()
    finally:
        sock.close()


# ---------------------------------------------------------------- hash

def test_hash_prints_a_scram_verifier_for_the_password(tokenpool_bin):
    password = "hash-me-" + secrets.token_hex(8)
    p = run_bin(tokenpool_bin, "hash", input=password + "\n")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    scram = [line for line in lines if line.startswith("SCRAM-SHA-256$4096:")]
    assert len(scram) == 1, p.stdout
    assert scram_verifier_matches(scram[0], password)
    assert not scram_verifier_matches(scram[0], password + "x")
    assert password not in p.stdout + p.stderr
    # A fresh salt each time.
    p2 = run_bin(tokenpool_bin, "hash", input=password + "\n")
    scram2 = [line for line in p2.stdout.splitlines() if line.startswith("SCRAM-SHA-256$4096:")]
    assert scram2 and scram2[0] != scram[0] and scram_verifier_matches(scram2[0], password)


def test_hash_without_input(tokenpool_bin):
    p = run_bin(tokenpool_bin, "hash", input="")
    assert p.returncode != 0
    assert "SCRAM" not in p.stdout


# ---------------------------------------------------------------- logs hold no secrets

@pytest.mark.parametrize("fmt", ["text", "json"])
def test_logs_never_contain_tokens_or_passwords(rig, tokenpool, tokenpool_bin, pg_config, fmt):
    client_pw = "client-" + secrets.token_hex(10)
    wrong_pw = "wrong-" + secrets.token_hex(10)
    # "plain" gets a SCRAM login; "legacy" has a hash tokenpool can only check
    # against a cleartext password, so that password crosses into tokenpool.
    h = run_bin(tokenpool_bin, "hash", input=client_pw + "\n")
    non_scram = [line for line in h.stdout.splitlines() if line and not line.startswith("SCRAM-SHA-256$")]
    clients = [{"user": CLIENT_USER, "password": client_pw}]
    if non_scram:
        clients.append({"user": "legacy", "password_hash": non_scram[-1]})
    tp = tokenpool(pg_config(log={"level": "debug", "format": fmt}, clients=clients))
    for user in [c["user"] for c in clients]:
        conn = psycopg2.connect(tp.pg_dsn(user=user, password=client_pw))
        with conn.cursor() as cur:
            cur.execute("SELECT current_user")
            assert cur.fetchone() == (rig.identity("system")["db_user"],)
        conn.close()
        with pytest.raises(psycopg2.OperationalError):
            psycopg2.connect(tp.pg_dsn(user=user, password=wrong_pw)).close()
    token = rig.token()
    upstream = tokenpool(pg_config(log={"level": "debug", "format": fmt},
                                   server={"auth": "password", "user": rig.pg_password_user,
                                           "password_env": "TP_VERBS_UPSTREAM_PW"},
                                   clients=[{"user": CLIENT_USER, "password": client_pw}]),
                         env={"TP_VERBS_UPSTREAM_PW": rig.pg_password})
    conn = psycopg2.connect(upstream.pg_dsn(password=client_pw))
    with conn.cursor() as cur:
        cur.execute("SELECT current_user")
        assert cur.fetchone() == (rig.pg_password_user,)
    conn.close()
    for t in (tp, upstream):
        t.stop()
        out = t.output()
        assert "logged in" in out or "login ok" in out, out  # the debug log did run
        assert "eyJ" not in out, "a JWT-looking string is in tokenpool's log"
        assert token.split(".")[2] not in out
        assert client_pw not in out
        assert wrong_pw not in out
        assert rig.pg_password not in out
        assert rig.header_secret not in out

