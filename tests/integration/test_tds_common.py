"""Helpers for the test_tds_*.py files (no tests here): the rig's TDS
servers standing in for Azure SQL, a tokenpool config for a sqlserver pool
in front of them, and the real clients (tedious through the rig's
tedious_client.js, FreeTDS tsql, pymssql) pointed at tokenpool."""

import contextlib
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

from helpers import CLIENT_PASSWORD, CLIENT_USER, pool_config  # noqa: E402  (CLIENT_* re-exported)

NODE_MODULES = os.path.join(HERE, "node_modules")
TEDIOUS_CLIENT = os.path.join(TDS_DIR, "tedious_client.js")
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


@contextlib.contextmanager
def running_servers(rig, workdir, **kw):
    """start_servers() for a module fixture: stopped on exit, and
    FREETDSCONF (which the pymssql tests set) restored."""
    srv = start_servers(rig, workdir, **kw)
    old_conf = os.environ.get("FREETDSCONF")
    try:
        yield srv
    finally:
        stop_servers(srv)
        if old_conf is None:
            os.environ.pop("FREETDSCONF", None)
        else:
            os.environ["FREETDSCONF"] = old_conf


def sqlserver_config(rig, server_port, free_port, **overrides):
    """One sqlserver pool "orders" in front of the rig's TDS server: IMDS
    token, verify-full TLS against the rig CA, static client credentials,
    client TLS with the rig's localhost certificate."""
    return pool_config(rig, free_port, "orders", "sqlserver", {
        "host": "localhost",
        "port": server_port,
        "database": "orders",
        "scope": DB_SCOPE,
        "tls": {"mode": "verify-full", "ca_file": rig.ca_file},
    }, overrides, client_tls={"mode": "allow", "cert_file": rig.server_cert_file,
                              "key_file": rig.server_key_file})


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


# ---------------------------------------------------------------- client loops

# Drives tedious connections against one or more tokenpool listeners until a
# stop file appears (or `seconds` pass) and reports every attempt. Targets:
# [{port, workers, persistent, sql}]. A churn worker connects, runs sql and
# disconnects, over and over; a persistent worker keeps its connection and
# reconnects after an error. An attempt: [start, end (ms since t0, the epoch
# ms the loop started at), ok, detail]
# where detail is the first row's first value or the error text (tedious'
# message plus every ERROR token the connection received, "NUMBER: text").
CLIENT_LOOP = r"""
const { Connection, Request } = require('tedious');
const fs = require('fs');
const cfg = JSON.parse(process.argv[1]);
const ca = cfg.ca ? fs.readFileSync(cfg.ca) : undefined;
const t0 = Date.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
function stopping() {
  return (cfg.seconds && Date.now() - t0 > cfg.seconds * 1000) || (cfg.stopFile && fs.existsSync(cfg.stopFile));
}
function connect(port) {
  return new Promise((resolve, reject) => {
    const c = new Connection({ server: 'localhost',
      authentication: { type: 'default', options: { userName: cfg.user, password: cfg.password } },
      options: { port, encrypt: cfg.encrypt === undefined ? true : cfg.encrypt, database: 'orders',
                 trustServerCertificate: false, cryptoCredentialsDetails: ca ? { ca } : undefined,
                 connectTimeout: cfg.connectTimeout || 20000, requestTimeout: 0,
                 maxRetriesOnTransientErrors: 0, rowCollectionOnRequestCompletion: true } });
    c.msgs = [];
    c.on('errorMessage', (e) => c.msgs.push(`${e.number}: ${e.message}`));
    c.on('error', (e) => c.msgs.push(`error: ${e.message}`));
    c.connect((err) => (err ? reject(Object.assign(err, { msgs: c.msgs })) : resolve(c)));
  });
}
function exec(c, sql) {
  return new Promise((resolve, reject) => {
    const r = new Request(sql, (err, n, rows) => (err ? reject(Object.assign(err, { msgs: c.msgs }))
                                                     : resolve(rows)));
    c.execSql(r);
  });
}
function detail(e) {
  const msgs = (e && e.msgs) || [];
  return [String(e && e.message)].concat(msgs).join(' | ');
}
async function worker(target, log) {
  let c = null;
  while (!stopping()) {
    const t = Date.now() - t0;
    try {
      if (!c) c = await connect(target.port);
      const rows = await exec(c, target.sql || 'SELECT SUSER_SNAME()');
      log.push([t, Date.now() - t0, true, rows.length ? rows[0][0].value : null]);
      if (!target.persistent) { c.close(); c = null; } else { await sleep(target.pauseMs || 20); }
    } catch (e) {
      log.push([t, Date.now() - t0, false, detail(e)]);
      if (c) { try { c.close(); } catch (x) { /* closed already */ } c = null; }
      await sleep(50);
    }
  }
  if (c) c.close();
}
(async () => {
  const logs = cfg.targets.map(() => []);
  const all = [];
  cfg.targets.forEach((tg, i) => {
    for (let w = 0; w < (tg.workers || 1); w++) all.push(worker(tg, logs[i]));
  });
  await Promise.all(all);
  process.stdout.write(JSON.stringify({ logs, t0, ms: Date.now() - t0 }) + '\n', () => process.exit(0));
})();
"""


class ClientLoop:
    """CLIENT_LOOP in the background: start(), then stop() returns one list
    of attempts per target: (start, end, ok, detail), times as time.time()."""

    def __init__(self, workdir, targets, ca=None, seconds=None, **cfg):
        self.stop_file = os.path.join(workdir, f"loop-stop-{os.getpid()}-{id(self)}")
        if os.path.exists(self.stop_file):
            os.unlink(self.stop_file)
        c = {"targets": targets, "ca": ca, "user": CLIENT_USER, "password": CLIENT_PASSWORD,
             "stopFile": self.stop_file, "seconds": seconds}
        c.update(cfg)
        self.cfg = c
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(["node", "-e", CLIENT_LOOP, json.dumps(self.cfg)], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     env=dict(os.environ, NODE_PATH=NODE_MODULES))
        return self

    def stop(self, timeout=60):
        with open(self.stop_file, "w"):
            pass
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError(f"client loop did not stop within {timeout}s: {err[-2000:]}")
        finally:
            os.unlink(self.stop_file)
        assert self.proc.returncode == 0 and out, f"client loop failed: {err[-3000:]}"
        report = json.loads(out.splitlines()[-1])
        t0 = report["t0"] / 1000.0
        return [[(t0 + t / 1000.0, t0 + e / 1000.0, ok, d) for t, e, ok, d in log] for log in report["logs"]]

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            with open(self.stop_file, "w"):
                pass
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def errors_in(log):
    """(start, end, detail) of the failed attempts."""
    return [(t, e, d) for t, e, ok, d in log if not ok]


def metrics(tp):
    """tokenpool's /metrics as {(name, frozenset(labels)): value}."""
    import urllib.request

    host, port = tp.http
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, value = line.rsplit(" ", 1)
        if "{" in name_labels:
            name, labels = name_labels[:-1].split("{", 1)
            pairs = frozenset(tuple(kv.split("=", 1)) for kv in labels.split(",") if kv)
            pairs = frozenset((k, v.strip('"')) for k, v in pairs)
        else:
            name, pairs = name_labels, frozenset()
        out[(name, pairs)] = float(value)
    return out


def metric(m, name, **labels):
    """Sum of the samples of name whose labels include the given ones."""
    want = set(labels.items())
    return sum(v for (n, ls), v in m.items() if n == name and want <= set(ls))
