"""Every Entra identity source, end to end: tokenpool gets a token from the
rig's identity provider and a client logs in to PostgreSQL through it as
that identity's database user.

  * client secret, client certificate (the rig verifies the RS256 assertion
    against the certificate registered on the app; an unregistered
    certificate and an EC key are refused with a clear 08006), workload
    identity (including the federated token file replaced while tokenpool
    runs: the old service account token is revoked, and only the new one
    gets tokens afterwards), the Azure CLI (the stub tests/rig/az first on
    PATH; also the older expiresOn-only output, and `az login` missing);
  * `auto` picking each source from its environment in the
    DefaultAzureCredential order, and logging which one and why;
  * misconfigurations: one clear line naming what to fix, in the log and
    in the client's 08006;
  * nothing tokenpool prints, at log level debug and with every source in
    one process, contains a token, a client secret, an assertion, the
    IDENTITY_HEADER or the private key.

The `auto` log line comes from the token cache through the engine
(auth_tokens_set_logger, wired in proxy/engine.c).

Runtime: about 12 s (the rig start not counted).
"""

import os
import re
import time

import pytest

from helpers import pg_whoami as whoami, wait_until
from test_pg_faults import LoginRefused, raw_login

APP_SECRET_VAR = "TP_TEST_APP_SECRET"


# ---------------------------------------------------------------- helpers

def login_error(tp, dbname=None, port=None):
    """The ErrorResponse a client gets at login (.sqlstate, .message); it
    must not get in."""
    with pytest.raises(LoginRefused) as ei:
        raw_login(port or tp.listen[1], database=dbname or tp.config["pools"][0]["name"],
                  timeout=15).close()
    return ei.value


def entra_requests(rig):
    return [r for r in rig.idp_stats()["recent"] if r["endpoint"] == "entra"]


def closed_port(free_port):
    """A loopback port nobody listens on: connections are refused at once."""
    return free_port()


@pytest.fixture
def az_path(tmp_path, rig):
    """PATH and environment for the stub `az`: (env dict, argv log path)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    os.symlink(rig.az_stub, bindir / "az")
    log = tmp_path / "az-argv.log"
    rig_json = os.environ.get("TOKENPOOL_RIG_JSON") or os.path.join(rig.dir, "rig.json")
    env = {"PATH": f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
           "AZ_STUB_RIG_JSON": rig_json, "AZ_STUB_LOG": str(log)}
    return env, log


def app_identity(rig, name, source, **extra):
    """An identity block for one of the rig's app registrations."""
    ident = {"source": source, "tenant_id": rig.tenant_id,
             "client_id": rig.identity(name)["client_id"], "authority": rig.authority}
    ident.update(extra)
    return ident


def write_token_file(path, token):
    """Replace the file atomically, as the kubelet does (new file, rename)."""
    tmp = str(path) + ".tmp"
    with open(tmp, "w") as f:
        f.write(token)
    os.replace(tmp, path)


# ---------------------------------------------------------------- each source

def test_client_secret(rig, tokenpool, pg_config):
    app = rig.identity("batch")
    cfg = pg_config(identity=app_identity(rig, "batch", "client_secret",
                                          client_secret_env=APP_SECRET_VAR),
                    server={"user": app["db_user"]})
    tp = tokenpool(cfg, env={APP_SECRET_VAR: app["client_secret"]})
    assert whoami(tp) == app["db_user"]
    reqs = entra_requests(rig)
    assert reqs and all(r["credential"] == "client_secret" and r["status"] == 200 for r in reqs), reqs
    assert all(r["client_id"] == app["client_id"] for r in reqs)


def test_client_certificate(rig, tokenpool, pg_config):
    app = rig.identity("etl")
    cfg = pg_config(identity=app_identity(rig, "etl", "client_certificate",
                                          certificate_file=rig.app_certificate_file),
                    server={"user": app["db_user"]})
    tp = tokenpool(cfg)
    assert whoami(tp) == app["db_user"]
    reqs = entra_requests(rig)
    assert reqs and all(r["credential"] == "certificate" and r["status"] == 200 for r in reqs), reqs
    # A fresh jti per assertion (the rig refuses replays).
    assert len({r["assertion_jti"] for r in reqs}) == len(reqs)


@pytest.mark.parametrize("which,expect", [
    ("unregistered", ["AADSTS700027", "is not registered on application", "(configuration error)"]),
    ("ec", ["the private key is EC, Entra client assertions need RSA"]),
])
def test_client_certificate_refused(rig, tokenpool, pg_config, which, expect):
    path = {"unregistered": rig.app_certificate_unregistered_file,
            "ec": rig.app_certificate_ec_file}[which]
    app = rig.identity("etl")
    cfg = pg_config(identity=app_identity(rig, "etl", "client_certificate", certificate_file=path),
                    server={"user": app["db_user"]})
    tp = tokenpool(cfg)
    err = login_error(tp)
    assert err.sqlstate == "08006", err
    for part in expect:
        assert part in err.message, err.message
    if which == "ec":
        assert path in err.message  # the line names the file
        assert not entra_requests(rig)  # refused before anything was sent
    out = tp.wait_for_output(expect[0])
    assert [ln for ln in out.splitlines() if expect[0] in ln], out


def test_workload_identity_token_file_rotated(rig, tokenpool, pg_config, tmp_path):
    """Access tokens live 6 s (refreshed every ~4.5 s); the service account
    token file is replaced and the old token revoked while tokenpool runs."""
    app = rig.identity("aks")
    rig.idp_config(lifetime=6)
    token_file = tmp_path / "azure-identity-token"
    first = rig.k8s_token()
    write_token_file(token_file, first["token"])
    cfg = pg_config(identity=app_identity(rig, "aks", "workload_identity",
                                          federated_token_file=str(token_file)),
                    server={"user": app["db_user"]})
    tp = tokenpool(cfg)
    assert whoami(tp) == app["db_user"]
    assert {r["assertion_jti"] for r in entra_requests(rig)} == {first["jti"]}

    second = rig.k8s_token()
    write_token_file(token_file, second["token"])
    rig.k8s_revoke(first["jti"])
    rotated = time.time()
    wait_until(lambda: any(r["assertion_jti"] == second["jti"] and r["status"] == 200
                           for r in entra_requests(rig)), 12, "a token fetched with the new file", step=0.1)
    later = [r for r in entra_requests(rig) if r["t"] > rotated + 0.5]
    # Every fetch after the swap presented the new file's token; none of
    # them (nor any other) got a token with the revoked one.
    assert later and all(r["assertion_jti"] == second["jti"] for r in later), later
    assert not [r for r in entra_requests(rig)
                if r["assertion_jti"] == first["jti"] and r["t"] > rotated and r["status"] == 200]
    assert whoami(tp) == app["db_user"]
    for r in entra_requests(rig):
        assert r["credential"] == "federated"


@pytest.mark.parametrize("old_az", [False, True], ids=["expires_on", "expiresOn_only"])
def test_azure_cli(rig, tokenpool, pg_config, az_path, old_az):
    env, log = az_path
    if old_az:
        env["AZ_STUB_NO_EPOCH"] = "1"
    app = rig.identity("devbox")
    tp = tokenpool(pg_config(identity={"source": "azure_cli"}, server={"user": app["db_user"]}), env=env)
    assert whoami(tp) == app["db_user"]
    calls = log.read_text().splitlines()
    assert calls and calls[0] == ('["account", "get-access-token", "--resource", '
                                  '"https://ossrdbms-aad.database.windows.net", "-o", "json"]')
    assert whoami(tp) == app["db_user"]
    assert len(log.read_text().splitlines()) == 1  # cached, not one az run per login


def test_azure_cli_not_logged_in(rig, tokenpool, pg_config, az_path):
    env, _ = az_path
    env["AZ_STUB_FAIL"] = "login"
    tp = tokenpool(pg_config(identity={"source": "azure_cli"}), env=env)
    err = login_error(tp)
    assert err.sqlstate == "08006"
    assert "azure_cli: az exited with 1: ERROR: Please run 'az login' to setup account." in err.message, err


# ---------------------------------------------------------------- auto

def _auto_case(rig, tmp_path, case, az_env, free_port):
    """(environment, identity block, expected db_user, expected log text)."""
    imds = rig.imds_endpoint
    sp = {"AZURE_TENANT_ID": rig.tenant_id, "AZURE_AUTHORITY_HOST": rig.authority}
    lower = {"IDENTITY_ENDPOINT": rig.app_service_endpoint, "IDENTITY_HEADER": rig.header_secret}
    if case == "client_secret":
        env = dict(sp, AZURE_CLIENT_ID=rig.identity("batch")["client_id"],
                   AZURE_CLIENT_SECRET=rig.identity("batch")["client_secret"], **lower)
        return env, imds, "batch", "identity auto: picked client_secret (AZURE_CLIENT_SECRET"
    if case == "client_certificate":
        env = dict(sp, AZURE_CLIENT_ID=rig.identity("etl")["client_id"],
                   AZURE_CLIENT_CERTIFICATE_PATH=rig.app_certificate_file, **lower)
        return env, imds, "etl", "identity auto: picked client_certificate (AZURE_CLIENT_CERTIFICATE_PATH"
    if case == "workload_identity":
        path = tmp_path / "sa-token"
        write_token_file(path, rig.k8s_token()["token"])
        env = dict(sp, AZURE_CLIENT_ID=rig.identity("aks")["client_id"],
                   AZURE_FEDERATED_TOKEN_FILE=str(path), **lower)
        return env, imds, "aks", ("identity auto: picked workload_identity (AZURE_FEDERATED_TOKEN_FILE "
                                  "is set); skipped client_secret/client_certificate")
    if case == "app_service":
        return dict(lower), imds, "system", ("identity auto: picked app_service (IDENTITY_ENDPOINT and "
                                             "IDENTITY_HEADER are set); skipped")
    if case == "imds":
        return dict(az_env), imds, "system", f"identity auto: picked imds (it answered at {imds}); skipped"
    dead = f"http://127.0.0.1:{closed_port(free_port)}"
    return dict(az_env), dead, "devbox", (f"identity auto: picked azure_cli (imds {dead} unreachable: "
                                          f"connection refused); skipped")


@pytest.mark.parametrize("case", ["client_secret", "client_certificate", "workload_identity",
                                  "app_service", "imds", "azure_cli"])
def test_auto_picks_and_logs(rig, tokenpool, pg_config, tmp_path, az_path, free_port, case):
    env, imds, who, logged = _auto_case(rig, tmp_path, case, az_path[0], free_port)
    ident = rig.identity(who)
    tp = tokenpool(pg_config(identity={"source": "auto", "imds_endpoint": imds},
                             server={"user": ident["db_user"]}), env=env)
    assert whoami(tp) == ident["db_user"]
    out = tp.wait_for_output(logged, timeout=5)
    picks = [ln for ln in out.splitlines() if "identity auto: picked" in ln]
    assert len(picks) == 1, picks
    st = rig.idp_stats()
    if case in ("app_service", "imds"):
        assert st["requests"]["entra"] == 0, st
    if case == "azure_cli":
        assert az_path[1].exists()


# ---------------------------------------------------------------- misconfiguration

MISCONFIGURED = {
    "identity_endpoint_without_header": (
        {"IDENTITY_ENDPOINT": "http://127.0.0.1:9/msi/token"}, {"source": "auto"},
        "auto: IDENTITY_ENDPOINT is set but IDENTITY_HEADER is not: set both"),
    "service_principal_without_tenant": (
        {"AZURE_CLIENT_ID": "8d1f3b5a-7c9e-4d1b-a3f5-9c1e3a5d7f61", "AZURE_CLIENT_SECRET": "x"},
        {"source": "auto"},
        "auto: AZURE_CLIENT_SECRET is set (service principal): no tenant: set identity.tenant_id "
        "or AZURE_TENANT_ID"),
    "unreadable_certificate": (
        {"AZURE_CLIENT_CERTIFICATE_PATH": "/nonexistent/app.pem"},
        {"source": "client_certificate", "tenant_id": "t", "client_id": "c"},
        "client_certificate: cannot read certificate file /nonexistent/app.pem: No such file or directory"),
    "missing_federated_token_file": (
        {}, {"source": "workload_identity", "tenant_id": "t", "client_id": "c",
             "federated_token_file": "/nonexistent/token"},
        "workload_identity: federated token file /nonexistent/token: No such file or directory"),
}


@pytest.mark.parametrize("case", sorted(MISCONFIGURED))
def test_misconfiguration_gives_one_clear_line(rig, tokenpool, pg_config, case):
    env, ident, line = MISCONFIGURED[case]
    ident = dict(ident, imds_endpoint=rig.imds_endpoint, authority=rig.authority)
    tp = tokenpool(pg_config(identity=ident), env=env)
    out = tp.wait_for_output(line, timeout=5)
    err = login_error(tp)
    assert err.sqlstate == "08006"
    assert line in err.message, err.message
    assert sum(1 for r in rig.idp_stats()["recent"] if r["endpoint"] == "entra") == 0
    # The first report of it (above debug) is one line, at start, naming
    # the fix.
    first = [ln for ln in out.splitlines() if line in ln and " debug " not in ln]
    assert first and "no access token yet" in first[0], out


# ---------------------------------------------------------------- no secrets in output

def _pem_key_lines(path):
    """The base64 lines of the private key block in a PEM file."""
    with open(path) as f:
        text = f.read()
    block = re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----\n(.*?)-----END", text, re.S).group(1)
    return [ln for ln in block.splitlines() if len(ln) >= 32]


def test_no_token_secret_assertion_or_key_in_output(rig, tokenpool, pg_config, tmp_path, az_path,
                                                    free_port):
    """Every source in one process at log level debug, plus a refused
    certificate and a failing az, then a search of everything tokenpool
    printed."""
    batch, etl, aks = rig.identity("batch"), rig.identity("etl"), rig.identity("aks")
    k8s = rig.k8s_token()
    token_file = tmp_path / "sa-token"
    write_token_file(token_file, k8s["token"])
    env = dict(az_path[0], IDENTITY_ENDPOINT=rig.app_service_endpoint, IDENTITY_HEADER=rig.header_secret,
               **{APP_SECRET_VAR: batch["client_secret"]})
    env.update({"AZURE_TENANT_ID": rig.tenant_id, "AZURE_CLIENT_ID": batch["client_id"],
                "AZURE_CLIENT_SECRET": batch["client_secret"], "AZURE_AUTHORITY_HOST": rig.authority})
    idents = {
        "secret": (app_identity(rig, "batch", "client_secret", client_secret_env=APP_SECRET_VAR), "batch"),
        "cert": (app_identity(rig, "etl", "client_certificate",
                              certificate_file=rig.app_certificate_file), "etl"),
        "wi": (app_identity(rig, "aks", "workload_identity", federated_token_file=str(token_file)), "aks"),
        "cli": ({"source": "azure_cli"}, "devbox"),
        "appsvc": ({"source": "app_service"}, "system"),
        "imds": ({"source": "imds", "imds_endpoint": rig.imds_endpoint}, "system"),
        "auto": ({"source": "auto"}, "batch"),
        "badcert": (app_identity(rig, "etl", "client_certificate",
                                 certificate_file=rig.app_certificate_unregistered_file), "etl"),
    }
    cfg = pg_config(log={"level": "debug"})
    template = cfg["pools"][0]
    cfg["pools"] = []
    for name, (ident, who) in idents.items():
        pool = {**template, "name": name, "listen": f"127.0.0.1:{free_port()}",
                "server": dict(template["server"], identity=ident, user=rig.identity(who)["db_user"])}
        cfg["pools"].append(pool)
    tp = tokenpool(cfg, env=env)
    for pool in cfg["pools"]:
        tp.wait_port(("127.0.0.1", int(pool["listen"].rsplit(":", 1)[1])))
    for pool, (name, (_, who)) in zip(cfg["pools"], idents.items()):
        port = int(pool["listen"].rsplit(":", 1)[1])
        if name == "badcert":
            assert login_error(tp, dbname=name, port=port).sqlstate == "08006"
        else:
            assert whoami(tp, dbname=name, port=port) == rig.identity(who)["db_user"], name
    out = tp.output()
    # Make sure the debug lines were really produced.
    assert "fetching a token for" in out and "identity auto: picked client_secret" in out, out[-3000:]
    secrets = {
        "a JWT (token or assertion)": "eyJ",
        "client secret": batch["client_secret"],
        "service account token": k8s["token"],
        "IDENTITY_HEADER": rig.header_secret,
    }
    for i, line in enumerate(_pem_key_lines(rig.app_certificate_file)):
        secrets[f"private key line {i}"] = line
    for what, value in secrets.items():
        assert value not in out, f"tokenpool printed the {what}"
    # The az stub's secret never even reaches tokenpool, but check anyway.
    assert rig.identity("devbox")["client_secret"] not in out
    assert etl["client_id"] in out and aks["client_id"] in out  # identities are named
