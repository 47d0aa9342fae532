"""Helpers for the test_tds_*.py files (no tests here): the rig's TDS
servers standing in for Azure SQL, a tokenpool config for a sqlserver pool
in front of them, and the real clients (tedious through the rig's
tedious_client.js, FreeTDS tsql, pymssql) pointed at tokenpool."""

import json
import os
import subprocess
import sys
import types

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
TDS_DIR = os.path.join(REPO, "tests", "rig", "tds")
if TDS_DIR not in sys.path:
    sys.path.insert(0, TDS_DIR)

from server import TdsServerProcess  # noqa: E402  (the rig's TDS server)

NODE_MODULES = os.path.join(HERE, "node_modules")
TEDIOUS_CLIENT = os.path.join(TDS_DIR, "tedious_client.js")
CLIENT_USER = "app"
CLIENT_PASSWORD = "app-password"
DB_SCOPE = "https://database.windows.net/.default"


def start_servers(rig, workdir, redirect=True, **kw):
    """A target server (and a gateway redirecting to it, like Azure's)."""
    common = dict(cert=rig.server_cert_file, key=rig.server_key_file, jwt_key_file=rig.key_file,
                  workdir=workdir)
    common.update(kw)
    target = TdsServerProcess.start(name="rig-target", **common)
    gateway = None
    if redirect:
        try:
            gateway = TdsServerProcess.start(name="rig-gateway", redirect_to=f"localhost:{target.port}",
                                             **common)
        except Exception:
            target.stop()
            raise
    return types.SimpleNamespace(target=target, gateway=gateway, work=workdir)


def stop_servers(srv):
    if srv.gateway is not None:
        srv.gateway.stop()
    srv.target.stop()


def merge(dst, src):
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            merge(dst[k], v)
        else:
            dst[k] = v


def sqlserver_config(rig, server_port, free_port, **overrides):
    """One sqlserver pool "orders" in front of the rig's TDS server: IMDS
    token, verify-full TLS against the rig CA, static client credentials,
    client TLS with the rig's localhost certificate."""
    cfg = {
        "log": {"level": "debug", "format": "text"},
        "http": {"listen": f"127.0.0.1:{free_port()}"},
        "shutdown": {"timeout": 2},
        "identity": {"source": "imds", "imds_endpoint": rig.imds_endpoint},
        "pools": [{
            "name": "orders",
            "protocol": "sqlserver",
            "listen": f"127.0.0.1:{free_port()}",
            "server": {
                "host": "localhost",
                "port": server_port,
                "database": "orders",
                "user": rig.identity("system")["db_user"],
                "auth": "token",
                "scope": DB_SCOPE,
                "tls": {"mode": "verify-full", "ca_file": rig.ca_file},
            },
            "clients": [{"user": CLIENT_USER, "password": CLIENT_PASSWORD}],
            "client_tls": {"mode": "allow", "cert_file": rig.server_cert_file,
                           "key_file": rig.server_key_file},
            "pool": {"mode": "session", "size": 5, "connect_timeout": 5, "wait_timeout": 5},
        }],
    }
    for key, value in overrides.items():
        target = cfg if key in ("log", "http", "shutdown", "identity", "pools") else cfg["pools"][0]
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = value
    return cfg


def tedious(rig, port, steps=(), user=CLIENT_USER, password=CLIENT_PASSWORD, **cfg):
    """Runs tedious (tests/rig/tds/tedious_client.js) against port with
    static credentials; returns its JSON report."""
    c = {"port": port, "ca": rig.ca_file, "database": "orders", "steps": list(steps),
         "user": user, "password": password}
    c.update(cfg)
    p = subprocess.run(["node", TEDIOUS_CLIENT, json.dumps(c)], capture_output=True, text=True, timeout=90,
                       env=dict(os.environ, NODE_PATH=NODE_MODULES))
    assert p.returncode == 0 and p.stdout, f"tedious client failed: {p.stderr[-2000:]}"
    return json.loads(p.stdout.splitlines()[-1])


def node(script, arg, timeout=120):
    """Runs a node script (source text) with NODE_PATH set; returns the
    JSON its last stdout line holds."""
    p = subprocess.run(["node", "-e", script, json.dumps(arg)], capture_output=True, text=True,
                       timeout=timeout, env=dict(os.environ, NODE_PATH=NODE_MODULES))
    assert p.returncode == 0 and p.stdout, f"node failed: {p.stderr[-3000:]}"
    return json.loads(p.stdout.splitlines()[-1])


def write_freetds_conf(path, port, ca_file, encryption="require", extra=""):
    with open(path, "w") as f:
        f.write(f"[global]\n\ttds version = 7.4\n\tencryption = {encryption}\n\tca file = {ca_file}\n"
                f"[tokenpool]\n\thost = localhost\n\tport = {port}\n{extra}")


def tsql(conf, sql, user=CLIENT_USER, password=CLIENT_PASSWORD, database="orders"):
    p = subprocess.run(["tsql", "-S", "tokenpool", "-U", user, "-P", password, "-D", database],
                       input=f"{sql}\ngo\nexit\n", capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, FREETDSCONF=conf))
    return p.stdout + p.stderr


def mssql_connect(port, conf, **kw):
    """pymssql (FreeTDS) to tokenpool; conf is a freetds.conf path."""
    import pymssql

    os.environ["FREETDSCONF"] = conf
    args = dict(server="localhost", port=port, user=CLIENT_USER, password=CLIENT_PASSWORD,
                database="orders", login_timeout=10)
    args.update(kw)
    return pymssql.connect(**args)
