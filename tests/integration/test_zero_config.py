"""Zero config: tokenpool with no config file, only the variables Azure
Service Connector sets (CONTRACT.md "Environment alone").

  * One test per connection-string form Service Connector writes for
    PostgreSQL (libpq keywords, URI, ADO.NET, JDBC) and one for the split
    variables: tokenpool starts in an empty directory, serves on the listen
    address, and psycopg2 through it is the token's database user.
  * The default listen address (127.0.0.1:5432) when it is free.
  * AZURE_POSTGRESQL_CLIENTID picks a user-assigned identity.
  * TLS settings from the environment never weaken verification:
    sslmode=require against a server whose CA is unknown still fails, and
    TOKENPOOL_TLS_MODE=require is what relaxes it.
  * `check` with the environment alone prints the config, secrets masked;
    errors (bad string, no client credential, no config at all) are one
    line and exit 2; a config file wins over the environment; MySQL and SQL
    Server pools parse and validate, and `run` says if the engine cannot
    serve them yet.

The rig's IMDS is reached through TOKENPOOL_IMDS_ENDPOINT. Runtime: ~10 s.
"""

import json
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request

import psycopg2
import pytest

from conftest import CLIENT_PASSWORD, CLIENT_USER, _free_port
from test_verbs import run_bin, write_config

PG_VAR = "AZURE_POSTGRESQL_CONNECTIONSTRING"
IGNORED_REQUIRE = ("ignored {setting} from " + PG_VAR + ": tokenpool verifies the "
                   "server before it sends a token; set TOKENPOOL_TLS_MODE to relax")


def sc_env(rig, port, **extra):
    """What a sidecar next to a Service Connector app has, plus the two
    test-only pointers: the rig's IMDS and a free listen port."""
    env = {"TOKENPOOL_CLIENT_USER": CLIENT_USER,
           "TOKENPOOL_CLIENT_PASSWORD": CLIENT_PASSWORD,
           "TOKENPOOL_IMDS_ENDPOINT": rig.imds_endpoint,
           # not the default 9090: two of these may run at once
           "TOKENPOOL_HTTP_LISTEN": f"127.0.0.1:{_free_port()}"}
    if port is not None:
        env["TOKENPOOL_POSTGRESQL_LISTEN"] = f"127.0.0.1:{port}"
    env.update(extra)
    return env


def start(tokenpool, env, port):
    return tokenpool(None, env=env, args=["run"], wait_port=("127.0.0.1", port))


def whoami(port, dbname="orders"):
    conn = psycopg2.connect(host="127.0.0.1", port=port, user=CLIENT_USER,
                            password=CLIENT_PASSWORD, dbname=dbname,
                            sslmode="disable", connect_timeout=10)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT current_user, current_database()")
            return cur.fetchone()
    finally:
        conn.close()


def forms(rig):
    """Connection strings as Service Connector writes them (plus the CA of
    the rig, which a real Azure server would not need)."""
    host, port, db, ca = rig.pg_host, rig.pg_port, rig.pg_database, rig.ca_file
    user = rig.identity("system")["db_user"]
    return {
        "libpq": (f"host={host} port={port} dbname={db} user={user} "
                  f"sslmode=require sslrootcert='{ca}'", "sslmode=require"),
        "uri": (f"postgresql://{user}@{host}:{port}/{db}?sslmode=require"
                f"&sslrootcert={urllib.parse.quote(ca, safe='')}", "sslmode=require"),
        # The Single Server form of the user name, "user@server", too.
        "ado.net": (f"Server={host};Database={db};Port={port};User Id={user}@{host};"
                    f"Ssl Mode=Require;Root Certificate={ca};", "Ssl Mode=Require"),
        "jdbc": (f"jdbc:postgresql://{host}:{port}/{db}?sslmode=require&user={user}"
                 f"&sslrootcert={ca}", "sslmode=require"),
    }


# ---------------------------------------------------------------- serving

@pytest.mark.parametrize("form", ["libpq", "uri", "ado.net", "jdbc"])
def test_connection_string_form_serves(rig, tokenpool, form):
    string, weak = forms(rig)[form]
    port = _free_port()
    tp = start(tokenpool, sc_env(rig, port, **{PG_VAR: string}), port)
    user = rig.identity("system")["db_user"]
    assert whoami(port) == (user, rig.pg_database)
    out = tp.output()
    assert IGNORED_REQUIRE.format(setting=weak) in out, out
    if form == "ado.net":
        assert f'as "{user}": the "@{rig.pg_host}" suffix is for Single Server' in out, out


def test_split_variables_serve(rig, tokenpool):
    port = _free_port()
    env = sc_env(rig, port,
                 AZURE_POSTGRESQL_HOST=rig.pg_host,
                 AZURE_POSTGRESQL_PORT=str(rig.pg_port),
                 AZURE_POSTGRESQL_DATABASE=rig.pg_database,
                 AZURE_POSTGRESQL_USER=rig.identity("system")["db_user"],
                 AZURE_POSTGRESQL_SSL="true",
                 # Split variables carry no CA: the system store is used,
                 # and OpenSSL reads its location from here.
                 SSL_CERT_FILE=rig.ca_file)
    tp = start(tokenpool, env, port)
    assert whoami(port) == (rig.identity("system")["db_user"], rig.pg_database)
    assert "WARN" not in tp.output(), tp.output()


def _port_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def test_default_listen_address(rig, tokenpool):
    if not _port_free(5432):
        pytest.skip("127.0.0.1:5432 is taken on this machine")
    string, _ = forms(rig)["libpq"]
    start(tokenpool, sc_env(rig, None, **{PG_VAR: string}), 5432)
    assert whoami(5432)[0] == rig.identity("system")["db_user"]


def test_client_id_selects_user_assigned_identity(rig, tokenpool):
    ident = rig.identity("reports")
    string = (f"host={rig.pg_host} port={rig.pg_port} dbname={rig.pg_database} "
              f"user={ident['db_user']} sslmode=verify-full sslrootcert={rig.ca_file}")
    port = _free_port()
    tp = start(tokenpool, sc_env(rig, port, **{PG_VAR: string,
                                               "AZURE_POSTGRESQL_CLIENTID": ident["client_id"]}),
               port)
    assert whoami(port)[0] == ident["db_user"]
    assert "WARN" not in tp.output(), tp.output()


# ---------------------------------------------------------------- TLS is not weakened

def test_sslmode_require_does_not_skip_verification(rig, tokenpool):
    """No CA for the rig in the string: verify-full against the system store
    must fail, whatever sslmode says; TOKENPOOL_TLS_MODE relaxes it."""
    user = rig.identity("system")["db_user"]
    string = (f"host={rig.pg_host} port={rig.pg_port} dbname={rig.pg_database} "
              f"user={user} sslmode=require")
    port = _free_port()
    start(tokenpool, sc_env(rig, port, **{PG_VAR: string}), port)
    with pytest.raises(psycopg2.OperationalError) as e:
        whoami(port)
    assert "certificate" in str(e.value).lower() or "tls" in str(e.value).lower(), str(e.value)

    port = _free_port()
    tp = start(tokenpool, sc_env(rig, port, **{PG_VAR: string, "TOKENPOOL_TLS_MODE": "require"}),
               port)
    assert whoami(port)[0] == user
    out = tp.output()
    assert "ignored sslmode=require" not in out, out
    assert "require encrypts but does not verify" in out, out


# ---------------------------------------------------------------- check and errors

def test_check_with_environment_only_masks_secrets(rig, tokenpool_bin, tmp_path):
    secret = "sp-Secret-" + "x" * 12
    env = sc_env(rig, None, **{
        PG_VAR: f"Server={rig.pg_host};Database=orders;Port=5432;User Id=orders_app;"
                f"Ssl Mode=Require;Password=db-Secret-1",
        "AZURE_POSTGRESQL_CLIENTID": "8d1f3b5a-7c9e-4d1b-a3f5-9c1e3a5d7f61",
        "AZURE_POSTGRESQL_TENANTID": rig.tenant_id,
        "AZURE_POSTGRESQL_CLIENTSECRET": secret,
    })
    p = run_bin(tokenpool_bin, "check", env=env, cwd=str(tmp_path))
    assert p.returncode == 0, p.stderr
    for value in (secret, CLIENT_PASSWORD, "db-Secret-1"):
        assert value not in p.stdout + p.stderr
    out = json.loads(p.stdout)
    pool = out["pools"][0]
    assert pool["name"] == "orders" and pool["protocol"] == "postgres"
    assert pool["listen"] == "127.0.0.1:5432"
    assert pool["server"]["tls"]["mode"] == "verify-full"
    assert pool["clients"] == [{"user": CLIENT_USER, "password_env": "TOKENPOOL_CLIENT_PASSWORD"}]
    ident = pool["server"]["identity"]
    assert ident["source"] == "client_secret"
    assert ident["client_secret_env"] == "AZURE_POSTGRESQL_CLIENTSECRET"
    assert ident["tenant_id"] == rig.tenant_id
    assert out["identity"]["imds_endpoint"] == rig.imds_endpoint.rstrip("/")


def one_line(p):
    lines = [line for line in (p.stdout + p.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, p.stdout + p.stderr
    return lines[0]


def test_bad_connection_string_exits_2_with_one_line(tokenpool_bin, rig, tmp_path):
    env = sc_env(rig, None, **{PG_VAR: "host=h dbname='orders user=u password=pw-Secret-4"})
    p = run_bin(tokenpool_bin, "run", env=env, cwd=str(tmp_path), timeout=10)
    assert p.returncode == 2
    assert one_line(p) == f"tokenpool: {PG_VAR}: unterminated quote at position 15"
    assert "pw-Secret-4" not in p.stdout + p.stderr


def test_missing_client_credential_refused(tokenpool_bin, rig, tmp_path):
    env = {PG_VAR: f"host={rig.pg_host} dbname=orders user=orders_app"}
    for verb in ("run", "check"):
        p = run_bin(tokenpool_bin, verb, env=env, cwd=str(tmp_path), timeout=10)
        assert p.returncode == 2
        line = one_line(p)
        assert line.startswith("tokenpool: TOKENPOOL_CLIENT_USER and TOKENPOOL_CLIENT_PASSWORD "
                               "are not set"), line


def test_no_config_at_all_mentions_the_environment(tokenpool_bin, tmp_path):
    p = run_bin(tokenpool_bin, "check", cwd=str(tmp_path))
    assert p.returncode == 2
    line = one_line(p)
    assert "tokenpool.json" in line and "AZURE_POSTGRESQL_CONNECTIONSTRING" in line, line


def test_config_file_wins_over_environment(tokenpool_bin, rig, tmp_path):
    cfg = {"pools": [{"name": "fromfile", "protocol": "postgres", "listen": "127.0.0.1:6432",
                      "server": {"host": "h", "database": "d", "user": "u"},
                      "clients": [{"user": "app", "password": "pw"}]}]}
    write_config(tmp_path / "tokenpool.json", cfg)
    env = sc_env(rig, None, **{PG_VAR: "host=h dbname=fromenv user=u"})
    p = run_bin(tokenpool_bin, "check", env=env, cwd=str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["pools"][0]["name"] == "fromfile"


def test_mysql_and_sql_pools_from_the_environment(tokenpool_bin, rig, tmp_path):
    env = sc_env(rig, None, **{
        "AZURE_MYSQL_CONNECTIONSTRING": "Server=my.mysql.database.azure.com;Database=shop;"
                                        "Port=3306;User Id=shop_app;SslMode=Required;",
        "AZURE_SQL_CONNECTIONSTRING": "Driver={ODBC Driver 18 for SQL Server};"
                                      "Server=tcp:x.database.windows.net,1433;Database=ledger;"
                                      "UID=0c2e4a6b-8d1f-4b3a-9c5e-7f1a3b5d7e21;"
                                      "Authentication=ActiveDirectoryMsi;Encrypt=yes;",
        "TOKENPOOL_MYSQL_LISTEN": str(_free_port()),
        "TOKENPOOL_SQL_LISTEN": str(_free_port()),
    })
    p = run_bin(tokenpool_bin, "check", env=env, cwd=str(tmp_path))
    assert p.returncode == 0, p.stderr
    pools = json.loads(p.stdout)["pools"]
    assert [(x["name"], x["protocol"]) for x in pools] == [("shop", "mysql"), ("ledger", "sqlserver")]
    assert pools[1]["server"]["scope"] == "https://database.windows.net/.default"
    assert pools[1]["server"]["identity"]["client_id"] == "0c2e4a6b-8d1f-4b3a-9c5e-7f1a3b5d7e21"
    # The engine may not serve these protocols yet; then it says so (and
    # frees what it built: an ASan build checks that too).
    try:
        p = run_bin(tokenpool_bin, "run", env=env, cwd=str(tmp_path), timeout=3)
    except subprocess.TimeoutExpired:  # still running: it serves them
        return
    assert p.returncode == 2, p.stdout + p.stderr
    assert "is not supported yet" in p.stdout + p.stderr


def test_sidecar_settings_from_the_environment(rig, tokenpool):
    """A sidecar sets the HTTP endpoint, admin token and pool limits by
    variables: probes answer there, and the pool has the limits."""
    port, http_port = _free_port(), _free_port()
    string, _ = forms(rig)["libpq"]
    env = sc_env(rig, port, **{PG_VAR: string,
                               "TOKENPOOL_HTTP_LISTEN": f"127.0.0.1:{http_port}",
                               "TOKENPOOL_ADMIN_TOKEN": "adm-" + "x" * 20,
                               "TOKENPOOL_POOL_MODE": "transaction",
                               "TOKENPOOL_POOL_SIZE": "3",
                               "TOKENPOOL_MAX_CLIENTS": "40"})
    tp = start(tokenpool, env, port)
    assert whoami(port)[0] == rig.identity("system")["db_user"]
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v1/pools", timeout=5) as r:
        pool = json.loads(r.read())["pools"][0]
    assert (pool["mode"], pool["size"], pool["max_clients"]) == ("transaction", 3, 40), pool
    req = urllib.request.Request(f"http://127.0.0.1:{http_port}/v1/reload", data=b"", method="POST")
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(req, timeout=5)
    assert denied.value.code == 401
    req.add_header("Authorization", "Bearer adm-" + "x" * 20)
    with urllib.request.urlopen(req, timeout=5) as r:
        assert json.loads(r.read())["ok"] is True
    assert "adm-xxxx" not in tp.output()


@pytest.mark.parametrize("var,value", [("TOKENPOOL_POOL_SIZE", "lots"),
                                       ("TOKENPOOL_POOL_MODE", "statement"),
                                       ("TOKENPOOL_MAX_CLIENTS", "0")])
def test_bad_sidecar_setting_names_the_variable(tokenpool_bin, rig, tmp_path, var, value):
    string, _ = forms(rig)["libpq"]
    env = sc_env(rig, None, **{PG_VAR: string, var: value})
    p = run_bin(tokenpool_bin, "check", env=env, cwd=str(tmp_path), timeout=10)
    assert p.returncode == 2
    assert one_line(p).startswith(f"tokenpool: {var}: expected"), p.stderr


def test_check_prints_the_warnings_run_would_log(tokenpool_bin, rig, tmp_path):
    string, weak = forms(rig)["libpq"]
    p = run_bin(tokenpool_bin, "check", env=sc_env(rig, None, **{PG_VAR: string}),
                cwd=str(tmp_path))
    assert p.returncode == 0, p.stderr
    json.loads(p.stdout)  # stdout stays pure JSON
    assert "tokenpool: warning: " in p.stderr and IGNORED_REQUIRE.format(setting=weak) in p.stderr, p.stderr
