"""The rig is as strict as Azure: proven with real clients (psycopg2, psql)
against the rig's PostgreSQL and IdP directly, no tokenpool involved."""

import base64
import json
import os
import socket
import subprocess
import threading
import time
import urllib.parse

import psycopg2
import pytest

from helpers import assert_token_not_logged

import idp as idp_mod

IMDS = "/metadata/identity/oauth2/token"


def imds_path(resource, **selector):
    return IMDS + "?" + urllib.parse.urlencode({"api-version": "2018-02-01", "resource": resource, **selector})


def login_fails(rig, user, password, **kw):
    """Try to log in; return the server's error message (the test fails if
    the login succeeds)."""
    with pytest.raises(psycopg2.OperationalError) as exc:
        rig.pg_connect(user, password, **kw).close()
    return str(exc.value)


def last_pam_decision(rig, user):
    entries = [e for e in rig.pam_log() if e.get("user") == user]
    assert entries, f"no PAM decision logged for {user}"
    return entries[-1]


def whoami(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT current_user, (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())")
        return cur.fetchone()


# ---------------------------------------------------------------- logging in with tokens

def test_imds_token_logs_in_over_verified_tls(rig):
    resp = rig.imds_token_response()
    claims = rig.decode_token(resp["access_token"])
    assert claims["aud"] == rig.pg_audience
    assert claims["db_user"] == rig.identity("system")["db_user"] == "orders_app"
    conn = rig.pg_connect(claims["db_user"], resp["access_token"], sslmode="verify-full")
    try:
        assert whoami(conn) == ("orders_app", True)
    finally:
        conn.close()
    entry = last_pam_decision(rig, "orders_app")
    assert entry["result"] == "allow" and entry["reason"] == "ok"
    assert entry["appid"] == rig.identity("system")["client_id"]


def test_psql_logs_in_with_a_token(rig):
    token = rig.token()
    env = dict(os.environ, PGPASSWORD=token)
    out = subprocess.run(
        ["psql", "-X", "-A", "-t", "-c", "SELECT current_user",
         f"host=localhost hostaddr=127.0.0.1 port={rig.pg_port} dbname={rig.pg_database} "
         f"user=orders_app sslmode=verify-full sslrootcert={rig.ca_file}"],
        capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "orders_app"


@pytest.mark.parametrize("selector", ["client_id", "object_id", "msi_res_id"])
def test_user_assigned_identity_logs_in_as_its_role(rig, selector):
    ident = rig.identity("reports")
    value = ident["resource_id"] if selector == "msi_res_id" else ident[selector]
    resp = rig.imds_token_response(**{selector: value})
    assert resp["client_id"] == ident["client_id"]
    conn = rig.pg_connect("reports_app", resp["access_token"], dbname="inventory")
    try:
        assert whoami(conn) == ("reports_app", True)
    finally:
        conn.close()


def test_token_roles_can_create_tables(rig):
    conn = rig.pg_connect("orders_app", rig.token())
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TEMP TABLE t (x int); CREATE TABLE IF NOT EXISTS rig_probe (x int)")
            cur.execute("DROP TABLE rig_probe")
        conn.commit()
    finally:
        conn.close()


def test_long_token_still_logs_in(rig):
    # Real tokens of identities in many groups grow past 4 KB.
    rig.idp_config(groups=120)
    token = rig.token()
    assert len(token) > 6000
    rig.pg_connect("orders_app", token).close()


# ---------------------------------------------------------------- refusals

def test_no_tls_is_rejected(rig):
    msg = login_fails(rig, "orders_app", rig.token(), sslmode="disable")
    assert "pg_hba.conf rejects connection" in msg and "no encryption" in msg


def test_token_for_another_user_is_rejected(rig):
    msg = login_fails(rig, "reports_app", rig.token())  # the system identity's token
    assert 'PAM authentication failed for user "reports_app"' in msg
    entry = last_pam_decision(rig, "reports_app")
    assert (entry["result"], entry["reason"]) == ("deny", "user_mismatch")


def test_expired_token_is_rejected(rig):
    rig.idp_config(lifetime=1)
    resp = rig.imds_token_response()
    assert resp["expires_in"] == "1"
    time.sleep(2)
    assert "PAM authentication failed" in login_fails(rig, "orders_app", resp["access_token"])
    assert last_pam_decision(rig, "orders_app")["reason"] == "expired"


def test_not_yet_valid_token_is_rejected(rig):
    rig.idp_config(time_offset=120)  # the IdP's clock runs 2 minutes ahead
    login_fails(rig, "orders_app", rig.token())
    assert last_pam_decision(rig, "orders_app")["reason"] == "not_yet_valid"


def _flip(ch):
    return "A" if ch != "A" else "B"


def test_tampered_signature_is_rejected(rig):
    token = rig.token()
    head, payload, sig = token.split(".")
    bad = f"{head}.{payload}.{sig[:10]}{_flip(sig[10])}{sig[11:]}"
    login_fails(rig, "orders_app", bad)
    assert last_pam_decision(rig, "orders_app")["reason"] == "bad_signature"


def test_tampered_claims_are_rejected(rig):
    # Another identity's token, rewritten to claim orders_app, signature kept.
    token = rig.token("reports")
    head, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["db_user"] = "orders_app"
    forged = idp_mod.b64url(json.dumps(claims, separators=(",", ":")).encode())
    login_fails(rig, "orders_app", f"{head}.{forged}.{sig}")
    assert last_pam_decision(rig, "orders_app")["reason"] == "bad_signature"


def test_token_signed_with_another_key_is_rejected(rig):
    token = rig.mint_token("orders_app", key=b"0123456789abcdef0123456789abcdef-not-the-rig-key")
    login_fails(rig, "orders_app", token)
    assert last_pam_decision(rig, "orders_app")["reason"] == "bad_signature"


def test_unsigned_token_is_rejected(rig):
    head = idp_mod.b64url(b'{"alg":"none","typ":"JWT"}')
    payload = rig.mint_token("orders_app").split(".")[1]
    login_fails(rig, "orders_app", f"{head}.{payload}.")
    assert last_pam_decision(rig, "orders_app")["reason"] == "alg_not_hs256"


def sign_raw(rig, payload_text, header_text='{"alg":"HS256","typ":"JWT"}'):
    """A token whose payload is exactly payload_text (for JSON edge cases)."""
    import hashlib
    import hmac
    signing_input = idp_mod.b64url(header_text.encode()) + "." + idp_mod.b64url(payload_text.encode())
    mac = hmac.new(idp_mod.read_key(rig.key_file), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + idp_mod.b64url(mac)


@pytest.mark.parametrize("payload,reason", [
    # Two readers of one token must not disagree on which claim counts.
    ('{{"aud":"{aud}","exp":{exp},"db_user":"reports_app","db_user":"orders_app"}}', "duplicate_claim"),
    ('{{"aud":"{aud}","db_user":"orders_app"}}', "no_exp"),
    ('{{"aud":"{aud}","exp":"{exp}","db_user":"orders_app"}}', "no_exp"),
    ('{{"aud":["{aud}"],"exp":{exp},"db_user":"orders_app"}}', "no_aud"),
    ('{{"aud":"{aud}","exp":{exp}}}', "no_user_claim"),
    ('{{"aud":"{aud}","exp":{exp},"db_user":"orders_app"}} x', "bad_json"),
    ('{{"aud":"{aud}","exp":{exp},"db_user":"orders_app","x":' + "[" * 40 + "]" * 40 + "}}", "bad_json"),
    ('{{"aud":"{aud}","exp":{exp},"db_user":"orders_app\\u0000"}}', "bad_json"),
    ('{{"aud":"{aud}","exp":{exp},"db_user":"orders_app","nbf":"soon"}}', "bad_nbf"),
    # Escapes decode like any JSON reader would, and nesting is skipped.
    ('{{"x":{{"db_user":"reports_app"}},"aud":"{aud}","exp":{exp},"db_user":"orders\\u005fapp"}}', "ok"),
])
def test_pam_module_reads_claims_strictly(rig, payload, reason):
    token = sign_raw(rig, payload.format(aud=rig.pg_audience, exp=int(time.time()) + 600))
    if reason == "ok":
        rig.pg_connect("orders_app", token).close()
    else:
        login_fails(rig, "orders_app", token)
    assert last_pam_decision(rig, "orders_app")["reason"] == reason


def test_non_canonical_base64_is_rejected(rig):
    # The last character of a 43-character signature carries 2 unused bits;
    # setting them gives another spelling of the same bytes.
    token = rig.token()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(token[-1])
    assert last & 3 == 0
    login_fails(rig, "orders_app", token[:-1] + alphabet[last | 1])
    assert last_pam_decision(rig, "orders_app")["reason"] == "bad_signature"


def test_wrong_audience_is_rejected(rig):
    token = rig.token(resource="https://database.windows.net")  # an Azure SQL token
    assert rig.decode_token(token)["aud"] == "https://database.windows.net"
    login_fails(rig, "orders_app", token)
    assert last_pam_decision(rig, "orders_app")["reason"] == "wrong_aud"


def test_garbage_password_is_rejected(rig):
    login_fails(rig, "orders_app", "not-a-token")
    assert last_pam_decision(rig, "orders_app")["reason"] == "malformed"


def test_user_without_pam_entry_is_rejected(rig):
    # The superuser exists but may only come in over the local socket.
    msg = login_fails(rig, "postgres", rig.token())
    assert "pg_hba.conf rejects connection" in msg and "SSL encryption" in msg


def test_client_refuses_wrong_ca(rig):
    msg = login_fails(rig, "orders_app", rig.token(), sslrootcert=rig.other_ca_file)
    assert "certificate verify failed" in msg


def test_client_refuses_wrong_host_name(rig):
    rig.use_pg_certificate("wronghost")
    msg = login_fails(rig, "orders_app", rig.token())
    assert "does not match host name" in msg
    # verify-ca only checks the chain, so the same certificate passes.
    rig.pg_connect("orders_app", rig.token(), sslmode="verify-ca").close()


def test_logs_never_contain_the_token(rig):
    token = rig.token()
    rig.pg_connect("orders_app", token).close()
    login_fails(rig, "reports_app", token)
    assert_token_not_logged(rig, token, rig.pg_log())


# ---------------------------------------------------------------- tokens look like Azure's

def test_tokens_are_realistically_long(rig):
    imds = rig.token()
    _, _, app_svc = rig.idp_request("GET", f"/msi/token?api-version=2019-08-01&resource={rig.pg_audience}",
                                    headers={"X-IDENTITY-HEADER": rig.header_secret})
    app = rig.identity("batch")
    status, _, entra = rig.idp_request(
        "POST", f"/{rig.tenant_id}/oauth2/v2.0/token",
        urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": app["client_id"],
                                "scope": rig.pg_scope, "client_secret": app["client_secret"]}),
        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200
    for token in (imds, app_svc["access_token"], entra["access_token"]):
        assert 1000 <= len(token) <= 4000, len(token)
        claims = rig.decode_token(token)
        for claim in ("aud", "iss", "iat", "nbf", "exp", "appid", "oid", "tid", "db_user"):
            assert claim in claims


def test_imds_response_shape(rig):
    resp = rig.imds_token_response()
    assert set(resp) >= {"access_token", "refresh_token", "expires_in", "expires_on", "not_before",
                         "resource", "token_type", "client_id"}
    assert resp["token_type"] == "Bearer" and resp["refresh_token"] == ""
    for k in ("expires_in", "expires_on", "not_before"):
        assert isinstance(resp[k], str) and resp[k].isdigit()
    assert abs(int(resp["expires_on"]) - time.time() - 3600) < 5


def test_imds_requires_metadata_header(rig):
    status, _, body = rig.idp_request("GET", imds_path(rig.pg_audience))
    assert status == 400
    assert body["error"] == "invalid_request"
    status, _, _ = rig.idp_request("GET", imds_path(rig.pg_audience), headers={"Metadata": "false"})
    assert status == 400


def test_imds_refuses_unknown_identity_and_resource(rig):
    status, _, body = rig.idp_request("GET", imds_path(rig.pg_audience, client_id="no-such-identity"),
                                      headers={"Metadata": "true"})
    assert status == 400 and "Identity not found" in body["error_description"]
    status, _, body = rig.idp_request("GET", imds_path("https://unknown.example"),
                                      headers={"Metadata": "true"})
    assert status == 400 and "AADSTS500011" in body["error_description"]


def test_app_service_requires_identity_header(rig):
    path = f"/msi/token?api-version=2019-08-01&resource={rig.pg_audience}"
    assert rig.idp_request("GET", path)[0] == 401
    assert rig.idp_request("GET", path, headers={"X-IDENTITY-HEADER": "wrong"})[0] == 401
    status, _, body = rig.idp_request("GET", path + "&client_id=" + rig.identity("billing")["client_id"],
                                      headers={"X-IDENTITY-HEADER": rig.header_secret})
    assert status == 200
    assert body["expires_on"].isdigit() and body["token_type"] == "Bearer"
    assert rig.decode_token(body["access_token"])["db_user"] == "billing_app"
    rig.pg_connect("billing_app", body["access_token"]).close()


def _entra(rig, **form):
    return rig.idp_request("POST", f"/{form.pop('tenant', rig.tenant_id)}/oauth2/v2.0/token",
                           urllib.parse.urlencode(form),
                           headers={"Content-Type": "application/x-www-form-urlencoded"})


def test_entra_client_secret(rig):
    app = rig.identity("batch")
    status, _, body = _entra(rig, grant_type="client_credentials", client_id=app["client_id"],
                             scope=rig.pg_scope, client_secret=app["client_secret"])
    assert status == 200
    assert isinstance(body["expires_in"], int) and isinstance(body["ext_expires_in"], int)
    assert body["token_type"] == "Bearer"
    claims = rig.decode_token(body["access_token"])
    assert claims["aud"] == rig.pg_audience and claims["appid"] == app["client_id"]
    conn = rig.pg_connect("batch_app", body["access_token"])
    assert whoami(conn) == ("batch_app", True)
    conn.close()


def test_entra_refusals(rig):
    app = rig.identity("batch")
    good = dict(grant_type="client_credentials", client_id=app["client_id"], scope=rig.pg_scope,
                client_secret=app["client_secret"])
    status, _, body = _entra(rig, **dict(good, client_secret="wrong"))
    assert status == 401 and body["error"] == "invalid_client" and body["error_codes"] == [7000215]
    status, _, body = _entra(rig, **{k: v for k, v in good.items() if k != "client_secret"})
    assert status == 401 and body["error_codes"] == [7000218]
    status, _, body = _entra(rig, **dict(good, scope=rig.pg_audience))  # no /.default
    assert status == 400 and body["error"] == "invalid_scope"
    status, _, body = _entra(rig, **dict(good, tenant="00000000-0000-0000-0000-000000000000"))
    assert status == 400 and body["error_codes"] == [90002]
    status, _, body = _entra(rig, **dict(good, client_id="00000000-0000-0000-0000-000000000000"))
    assert status == 400 and body["error_codes"] == [700016]
    status, _, body = _entra(rig, **dict(good, grant_type="password"))
    assert status == 400 and body["error"] == "unsupported_grant_type"


def test_idp_serves_https_with_the_rig_ca(rig):
    status, _, body = rig.idp_request("GET", imds_path(rig.pg_audience), headers={"Metadata": "true"},
                                      https=True)
    assert status == 200 and body["access_token"]


# ---------------------------------------------------------------- faults and counters

def test_fault_500_then_success(rig):
    rig.idp_fault("500", count=2)
    assert rig.idp_request("GET", imds_path(rig.pg_audience), headers={"Metadata": "true"})[0] == 500
    assert rig.idp_request("GET", f"/msi/token?api-version=2019-08-01&resource={rig.pg_audience}",
                           headers={"X-IDENTITY-HEADER": rig.header_secret})[0] == 500
    assert rig.idp_request("GET", imds_path(rig.pg_audience), headers={"Metadata": "true"})[0] == 200
    stats = rig.idp_stats()
    assert stats["faults"] == {"500": 2}
    assert stats["issued"]["imds"] == 1 and stats["requests"]["imds"] == 2


def test_fault_429_carries_retry_after(rig):
    rig.idp_fault("429", count=1, retry_after=7)
    status, headers, _ = rig.idp_request("GET", imds_path(rig.pg_audience), headers={"Metadata": "true"})
    assert status == 429 and headers["Retry-After"] == "7"
    assert rig.idp_request("GET", imds_path(rig.pg_audience), headers={"Metadata": "true"})[0] == 200


def _raw_get(rig, path, headers="Metadata: true\r\n", timeout=5):
    s = socket.create_connection(("127.0.0.1", rig.idp_port), timeout=timeout)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode())
    return s


def test_fault_reset_aborts_the_connection(rig):
    rig.idp_fault("reset")
    s = _raw_get(rig, imds_path(rig.pg_audience))
    with pytest.raises(ConnectionResetError):
        while s.recv(4096):
            pass
    s.close()
    assert rig.idp_stats()["faults"] == {"reset": 1}


def test_fault_hang_blocks_only_that_request(rig):
    rig.idp_fault("hang")
    s = _raw_get(rig, imds_path(rig.pg_audience), timeout=1)
    time.sleep(0.2)  # let the hang take hold before the next request
    t0 = time.monotonic()
    status, _, _ = rig.idp_request("GET", imds_path(rig.pg_audience), headers={"Metadata": "true"})
    assert status == 200 and time.monotonic() - t0 < 3  # not queued behind the hang
    with pytest.raises(socket.timeout):
        s.recv(4096)  # still nothing for the hung client
    s.close()


def test_fault_hang_released_by_reset(rig):
    rig.idp_fault("hang")
    s = _raw_get(rig, imds_path(rig.pg_audience), timeout=5)
    time.sleep(0.2)
    rig.idp_reset()
    assert s.recv(4096) == b""  # closed without an answer
    s.close()


def test_fault_counts_apply_across_endpoints_in_order(rig):
    rig.idp_fault("503", count=1)
    rig.idp_fault("500", count=1)
    codes = [rig.idp_request("GET", imds_path(rig.pg_audience), headers={"Metadata": "true"})[0]
             for _ in range(3)]
    assert codes == [503, 500, 200]


def test_fault_until_cleared(rig):
    rig.idp_fault("500", count=-1)
    for _ in range(3):
        assert rig.idp_request("GET", imds_path(rig.pg_audience), headers={"Metadata": "true"})[0] == 500
    rig.idp_fault("none")
    assert rig.idp_request("GET", imds_path(rig.pg_audience), headers={"Metadata": "true"})[0] == 200


def test_stats_count_requests_per_endpoint(rig):
    rig.token()
    rig.token("billing")
    rig.idp_request("GET", imds_path(rig.pg_audience))  # refused: no Metadata header
    rig.idp_request("GET", f"/msi/token?api-version=2019-08-01&resource={rig.pg_audience}",
                    headers={"X-IDENTITY-HEADER": rig.header_secret})
    stats = rig.idp_stats()
    assert stats["requests"] == {"imds": 3, "app_service": 1, "entra": 0}
    assert stats["issued"] == {"imds": 2, "app_service": 1, "entra": 0}
    assert stats["errors"]["imds"] == 1
    assert [r["client_id"] for r in stats["recent"] if r.get("status") == 200][:2] == \
        [rig.identity("system")["client_id"], rig.identity("billing")["client_id"]]


def test_concurrent_token_requests(rig):
    results = []

    def fetch():
        results.append(rig.idp_request("GET", imds_path(rig.pg_audience), headers={"Metadata": "true"})[0])

    threads = [threading.Thread(target=fetch) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 20


# ---------------------------------------------------------------- the password role

def test_password_role_logs_in_with_scram_over_tls(rig):
    stored = rig.psql_admin(f"SELECT rolpassword FROM pg_authid WHERE rolname = '{rig.pg_password_user}';")
    assert stored.startswith("SCRAM-SHA-256$")
    conn = rig.pg_connect(rig.pg_password_user, rig.pg_password)
    try:
        assert whoami(conn) == (rig.pg_password_user, True)
    finally:
        conn.close()
    assert f'identity="{rig.pg_password_user}" method=scram-sha-256' in rig.pg_log()


def test_password_role_refusals(rig):
    msg = login_fails(rig, rig.pg_password_user, "wrong-password")
    assert "password authentication failed" in msg
    msg = login_fails(rig, rig.pg_password_user, rig.pg_password, sslmode="disable")
    assert "no encryption" in msg


# ---------------------------------------------------------------- PostgreSQL control

def test_restart_postgres(rig):
    old = rig.postgres_pid()
    rig.restart_postgres(mode="immediate")
    assert rig.postgres_pid() != old
    rig.pg_connect("orders_app", rig.token()).close()
