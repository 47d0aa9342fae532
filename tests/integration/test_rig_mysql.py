"""The rig's MariaDB (the stand-in for Azure Database for MySQL) is as strict
as Azure: proven with real clients (pymysql and the `mariadb` CLI) against
the rig's MariaDB and IdP directly, no tokenpool involved."""

import time

import pymysql
import pytest

from helpers import assert_token_not_logged

WRONG_KEY = b"0123456789abcdef0123456789abcdef-not-the-rig-key"


def whoami(conn):
    """(CURRENT_USER(), TLS version of this session or '')."""
    with conn.cursor() as cur:
        cur.execute("SELECT CURRENT_USER()")
        user = cur.fetchone()[0]
        cur.execute("SHOW SESSION STATUS LIKE 'Ssl_version'")
        row = cur.fetchone()
    return user, row[1] if row else ""


def login_fails(rig, user, password, **kw):
    """Try to log in with pymysql; return (errno, message). The test fails
    if the login succeeds."""
    with pytest.raises(pymysql.err.OperationalError) as exc:
        rig.mysql_connect(user, password, **kw).close()
    return exc.value.args[0], str(exc.value.args[1])


def mysql_pam_decisions(rig, user):
    return [e for e in rig.pam_log() if e.get("user") == user and e.get("service") == rig.mysql_pam_service]


def last_pam_decision(rig, user):
    entries = mysql_pam_decisions(rig, user)
    assert entries, f"no PAM decision logged for {user} by MariaDB"
    return entries[-1]


def cli_lines(p):
    return [line for line in p.stdout.splitlines() if not line.startswith("WARNING: ")]


# ---------------------------------------------------------------- the server is set up like Azure

def test_server_requires_tls_and_takes_tokens_through_pam(rig):
    (row,) = rig.mysql_admin("SELECT @@require_secure_transport, @@pam_use_cleartext_plugin, @@have_ssl")
    assert row == (1, 1, "YES")
    users = dict(rig.mysql_admin("SELECT user, CONCAT(plugin, ' ', authentication_string) FROM mysql.user "
                                 "WHERE host = '%'"))
    for user in rig.mysql_token_users:
        assert users[user] == f"pam {rig.mysql_pam_service}"
    assert users[rig.mysql_password_user].startswith("mysql_native_password *")
    assert set(rig.mysql_token_users) == set(rig.pg_token_users) >= {"orders_app", "reports_app"}
    dbs = {r[0] for r in rig.mysql_admin("SHOW DATABASES")}
    assert dbs >= set(rig.mysql_databases) == {"orders", "inventory"}
    with open(rig.mysql_pam_service_file) as f:
        svc = f.read()
    assert f"auth    required {rig.pam_module} key={rig.key_file} aud={rig.mysql_audience} " in svc
    assert "account required pam_permit.so" in svc


# ---------------------------------------------------------------- logging in with tokens

def test_imds_token_logs_in_over_verified_tls(rig):
    token = rig.token()
    claims = rig.decode_token(token)
    assert claims["aud"] == rig.mysql_audience and claims["db_user"] == "orders_app"
    # The IdP's normal token is real-size; MariaDB's PAM helper must pass it whole.
    assert len(token) >= 2000
    conn = rig.mysql_connect("orders_app", token)
    try:
        user, tls = whoami(conn)
        assert user == "orders_app@%"
        assert tls.startswith("TLSv1.")
    finally:
        conn.close()
    entry = last_pam_decision(rig, "orders_app")
    assert (entry["result"], entry["reason"]) == ("allow", "ok")
    assert entry["len"] == str(len(token))
    assert entry["appid"] == rig.identity("system")["client_id"]


def test_mariadb_cli_logs_in_with_a_token(rig):
    p = rig.mysql_cli("orders_app", rig.token(), "SELECT CURRENT_USER()",
                      extra=["--enable-cleartext-plugin"])
    assert p.returncode == 0, p.stderr
    assert cli_lines(p) == ["orders_app@%"]
    assert "--ssl-verify-server-cert" in p.args


def test_user_assigned_identity_logs_in_as_its_user(rig):
    conn = rig.mysql_connect("reports_app", rig.token("reports"), database="inventory")
    try:
        assert whoami(conn)[0] == "reports_app@%"
    finally:
        conn.close()


def test_token_users_can_use_their_databases(rig):
    conn = rig.mysql_connect("billing_app", rig.token("billing"), autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE rig_probe (x INT PRIMARY KEY)")
            cur.execute("INSERT INTO rig_probe VALUES (1), (2)")
            cur.execute("SELECT SUM(x) FROM rig_probe")
            assert cur.fetchone()[0] == 3
            cur.execute("DROP TABLE rig_probe")
            with pytest.raises(pymysql.err.OperationalError) as exc:
                cur.execute("CREATE DATABASE not_granted")
            assert exc.value.args[0] == 1044  # access denied to database
    finally:
        conn.close()


def test_long_token_still_logs_in(rig):
    # Tokens of identities in many groups grow past 4 KB.
    rig.idp_config(groups=120)
    token = rig.token()
    assert len(token) > 6000
    rig.mysql_connect("orders_app", token).close()
    assert last_pam_decision(rig, "orders_app")["len"] == str(len(token))


def test_added_token_user_logs_in(rig):
    rig.add_mysql_token_user("rig_probe_app")
    conn = rig.mysql_connect("rig_probe_app", rig.mint_token("rig_probe_app"))
    try:
        assert whoami(conn)[0] == "rig_probe_app@%"
    finally:
        conn.close()
        rig.mysql_admin("DROP USER 'rig_probe_app'@'%'")
        rig.mysql_token_users.remove("rig_probe_app")


# ---------------------------------------------------------------- refusals

def test_no_tls_is_refused(rig):
    token = rig.token()
    assert login_fails(rig, "orders_app", token, tls="disable")[0] == 1045
    p = rig.mysql_cli("orders_app", token, "SELECT 1", tls="disable")
    assert p.returncode != 0 and "ERROR 1045" in p.stderr
    assert login_fails(rig, rig.mysql_password_user, rig.mysql_password, tls="disable")[0] == 1045
    # The same credentials over TLS pass: the transport was the reason.
    rig.mysql_connect("orders_app", token).close()
    rig.mysql_connect(rig.mysql_password_user, rig.mysql_password).close()


@pytest.mark.parametrize("case,reason", [
    ("garbage", "malformed"),
    ("expired", "expired"),
    ("not_yet_valid", "not_yet_valid"),
    ("wrong_audience", "wrong_aud"),
    ("other_user", "user_mismatch"),
    ("wrong_key", "bad_signature"),
])
def test_bad_tokens_are_refused(rig, case, reason):
    token = {
        "garbage": lambda: "not-a-token",
        "expired": lambda: rig.mint_token("orders_app", lifetime=-60),
        "not_yet_valid": lambda: rig.mint_token("orders_app", nbf=int(time.time()) + 300),
        "wrong_audience": lambda: rig.token(resource="https://database.windows.net"),
        "other_user": lambda: rig.token("reports"),  # reports_app's token
        "wrong_key": lambda: rig.mint_token("orders_app", key=WRONG_KEY),
    }[case]()
    errno, msg = login_fails(rig, "orders_app", token)
    assert errno == 1045 and "Access denied for user 'orders_app'" in msg
    assert (last_pam_decision(rig, "orders_app")["result"], last_pam_decision(rig, "orders_app")["reason"]) \
        == ("deny", reason)


def test_mariadb_cli_refuses_a_bad_token(rig):
    before = len(mysql_pam_decisions(rig, "orders_app"))
    p = rig.mysql_cli("orders_app", rig.token(resource="https://database.windows.net"), "SELECT 1")
    assert p.returncode != 0 and "ERROR 1045" in p.stderr
    decisions = mysql_pam_decisions(rig, "orders_app")
    assert len(decisions) == before + 1 and decisions[-1]["reason"] == "wrong_aud"


def test_unknown_user_is_refused(rig):
    assert login_fails(rig, "nobody_app", rig.mint_token("nobody_app"))[0] == 1045
    # root exists but may only come in over the Unix socket.
    assert login_fails(rig, "root", rig.token())[0] == 1045


def test_client_refuses_wrong_ca(rig):
    errno, msg = login_fails(rig, "orders_app", rig.token(), ca_file=rig.other_ca_file)
    assert errno == 2003 and "CERTIFICATE_VERIFY_FAILED" in msg
    p = rig.mysql_cli("orders_app", rig.token(), "SELECT 1", ca_file=rig.other_ca_file)
    assert p.returncode != 0 and "ERROR 2026" in p.stderr


def test_client_refuses_wrong_host_name(rig):
    rig.use_mysql_certificate("wronghost")
    assert rig.mysql_certificate == "wronghost"
    errno, msg = login_fails(rig, "orders_app", rig.token())
    assert errno == 2003 and "Hostname mismatch" in msg
    p = rig.mysql_cli("orders_app", rig.token(), "SELECT 1")
    assert p.returncode != 0 and "ERROR 2026" in p.stderr
    # verify-ca only checks the chain, so the same certificate passes.
    rig.mysql_connect("orders_app", rig.token(), tls="verify-ca").close()
    rig.use_mysql_certificate("localhost")
    rig.mysql_connect("orders_app", rig.token()).close()


def test_logs_never_contain_the_token(rig):
    token = rig.token()
    rig.mysql_connect("orders_app", token).close()
    login_fails(rig, "reports_app", token)
    assert_token_not_logged(rig, token, rig.mysql_log())


# ---------------------------------------------------------------- the password user

def test_password_user_logs_in_with_native_password_over_tls(rig):
    conn = rig.mysql_connect(rig.mysql_password_user, rig.mysql_password)
    try:
        assert whoami(conn)[0] == f"{rig.mysql_password_user}@%"
    finally:
        conn.close()
    p = rig.mysql_cli(rig.mysql_password_user, rig.mysql_password, "SELECT CURRENT_USER()")
    assert p.returncode == 0, p.stderr
    assert cli_lines(p) == [f"{rig.mysql_password_user}@%"]
    assert login_fails(rig, rig.mysql_password_user, "wrong-password")[0] == 1045
    # A token is no password for it.
    assert login_fails(rig, rig.mysql_password_user, rig.mint_token(rig.mysql_password_user))[0] == 1045


# ---------------------------------------------------------------- MariaDB control

def test_restart_mysql(rig):
    old = rig.mysql_server_pid()
    assert old and rig.mysql_running()
    rig.restart_mysql()
    new = rig.mysql_server_pid()
    assert new != old and rig.mysql_pid == new
    rig.mysql_connect("orders_app", rig.token()).close()


def test_stop_and_crash_mysql(rig):
    rig.stop_mysql(mode="immediate")
    assert not rig.mysql_running()
    errno, _ = login_fails(rig, "orders_app", rig.token())
    assert errno == 2003
    rig.start_mysql()
    conn = rig.mysql_connect("orders_app", rig.token())
    try:
        assert whoami(conn)[0] == "orders_app@%"
    finally:
        conn.close()
