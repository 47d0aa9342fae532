"""Fixtures for integration tests: the rig (a local stand-in for Azure) and
tokenpool processes in front of it.

Fixtures
  rig            session: a started tests/rig/rig.py Rig (see its docstring for
                 attributes). With TOKENPOOL_RIG_JSON=/path/rig.json the tests
                 attach to a rig started by `rig.py up` instead.
                 After each test that used it: IdP reset (config, faults,
                 counters), PostgreSQL running again, localhost certificate.
  tokenpool_bin  session: path of the binary ($TOKENPOOL_BIN or build/tokenpool).
  tokenpool      factory: tokenpool(config_dict, env=None, args=None,
                 wait_port=..., timeout=10) -> TokenpoolProcess, stopped at teardown.
  pg_config      factory: pg_config(**overrides) -> config dict for one postgres
                 pool in front of the rig (IMDS identity, verified TLS, free ports).
  free_port      the function free_port() -> an unused loopback TCP port.
"""

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "rig"))

import rig as rig_mod  # noqa: E402
from rig import Rig, free_port as _free_port  # noqa: E402

from helpers import CLIENT_PASSWORD, CLIENT_USER, pool_config  # noqa: E402  (re-exported)


# ---------------------------------------------------------------- the rig

def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "timer_bound: runs for tens of seconds on timers (token lifetimes, refresh "
        "schedules); tests/run.sh runs these in the Release suite only")


@pytest.fixture(scope="session")
def rig():
    attach = os.environ.get("TOKENPOOL_RIG_JSON")
    if attach:
        yield Rig.attach(attach)
        return
    r = Rig()
    r.start()
    try:
        yield r
    finally:
        r.stop()


def _rig_used(request):
    """The rig, if the test used it and it started; else None."""
    if "rig" not in request.fixturenames:
        return None
    try:
        return request.getfixturevalue("rig")
    except Exception:  # the rig did not start; that error is reported already
        return None


@pytest.fixture(autouse=True)
def _rig_isolation(request):
    """Undo what a test may have changed on the shared rig, even if it failed."""
    yield
    r = _rig_used(request)
    if r is None:
        return
    r.idp_reset()
    if not r.postgres_running():
        r.start_postgres()
    if r.pg_certificate != "localhost":
        r.use_pg_certificate("localhost")
    if r.tds_admin_url:  # the TDS servers: faults off, sessions and tables gone
        for tds in (r.tds(), r.tds_gateway()):
            tds.kill_all()
            tds.reset(tables=True)


@pytest.fixture
def free_port():
    return _free_port


# ---------------------------------------------------------------- tokenpool

class TokenpoolProcess:
    """One tokenpool process. Attributes: proc, pid, config (dict),
    config_path, log_path, listen ((host, port) of the first pool or None),
    http ((host, port) of http.listen or None)."""

    def __init__(self, binary, workdir, index, config, env=None, args=None):
        self.binary = binary
        self.config = copy.deepcopy(config) if config is not None else None
        self.config_path = None
        self.log_path = os.path.join(workdir, f"tokenpool-{index}.log")
        self.listen = None
        self.http = None
        cmd = [binary] + list(args or ["run"])
        if self.config is not None:
            self.config_path = os.path.join(workdir, f"tokenpool-{index}.json")
            # 0600: tokenpool warns about inline passwords in readable files.
            fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(self.config, f, indent=2)
            if args is None or "-c" not in args:
                cmd += ["-c", self.config_path]
            pools = self.config.get("pools") or []
            if pools and pools[0].get("listen"):
                self.listen = _split_hostport(pools[0]["listen"])
            if (self.config.get("http") or {}).get("listen"):
                self.http = _split_hostport(self.config["http"]["listen"])
        self.cmd = cmd
        # A clean environment: nothing from the developer's shell should pick
        # an identity source for tokenpool.
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("AZURE_", "IDENTITY_", "TOKENPOOL_", "MSI_", "PG"))}
        base.update(env or {})
        self.env = base
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=self.env, cwd=workdir)
        self.pid = self.proc.pid

    def output(self):
        """Everything tokenpool printed so far (stdout and stderr)."""
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def wait_port(self, addr=None, timeout=10):
        """Wait until addr (default: first pool's listen) accepts TCP; raise
        with tokenpool's output if it exits or the time runs out."""
        addr = addr or self.listen
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise TokenpoolError(f"tokenpool exited with {self.proc.returncode} before "
                                     f"{addr[0]}:{addr[1]} accepted connections", self)
            try:
                with socket.create_connection(addr, timeout=0.5):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TokenpoolError(f"{addr[0]}:{addr[1]} did not accept connections "
                                     f"within {timeout}s", self)
            time.sleep(0.05)

    def wait_for_output(self, text, timeout=10):
        """Wait until `text` appears in tokenpool's output; return the output."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.output()
            if text in out:
                return out
            if time.monotonic() > deadline:
                raise TokenpoolError(f"{text!r} did not appear in tokenpool's output within {timeout}s", self)
            time.sleep(0.05)

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout=10):
        """Wait for exit; return the exit code (raises subprocess.TimeoutExpired)."""
        return self.proc.wait(timeout)

    @property
    def running(self):
        return self.proc.poll() is None

    def stop(self, timeout=5):
        """SIGTERM, then SIGKILL after `timeout` seconds. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._log.closed:
            self._log.close()
        return self.proc.returncode

    def pg_dsn(self, user=CLIENT_USER, password=CLIENT_PASSWORD, dbname=None, port=None, **extra):
        """libpq keywords for a client connecting to tokenpool's first pool."""
        params = {"host": "127.0.0.1", "port": port or self.listen[1], "user": user,
                  "password": password, "connect_timeout": 10}
        if dbname is None and self.config and self.config.get("pools"):
            dbname = self.config["pools"][0].get("name")
        if dbname:
            params["dbname"] = dbname
        params.setdefault("sslmode", "disable")
        params.update(extra)
        return " ".join(f"{k}={rig_mod._libpq_quote(v)}" for k, v in params.items())


class TokenpoolError(AssertionError):
    def __init__(self, msg, tp):
        super().__init__(f"{msg}\ncommand: {' '.join(tp.cmd)}\n--- tokenpool output ---\n"
                         f"{tp.output()[-8000:]}")


def _split_hostport(s):
    host, _, port = str(s).rpartition(":")
    return (host.strip("[]") or "127.0.0.1", int(port))


@pytest.fixture(scope="session")
def tokenpool_bin():
    path = os.environ.get("TOKENPOOL_BIN") or os.path.join(REPO, "build", "tokenpool")
    if not os.access(path, os.X_OK):
        pytest.fail(f"tokenpool binary not found at {path}: build it (cmake -S . -B build && "
                    f"cmake --build build -j) or set TOKENPOOL_BIN", pytrace=False)
    return path


@pytest.fixture
def tokenpool(tokenpool_bin, tmp_path):
    """Factory: tokenpool(config, env=None, args=None, wait_port=True, timeout=10).

    config: dict written to a 0600 JSON file and passed as `run -c FILE`
    (args replaces ["run"]; "-c FILE" is appended unless args has "-c").
    wait_port: True waits for the first pool's listen port, a (host, port)
    waits for that, False/None does not wait. All processes are stopped
    (SIGTERM, SIGKILL after 5 s) at teardown."""
    started = []

    def start(config, env=None, args=None, wait_port=True, timeout=10):
        tp = TokenpoolProcess(tokenpool_bin, str(tmp_path), len(started), config, env, args)
        started.append(tp)
        if wait_port:
            addr = wait_port if isinstance(wait_port, tuple) else None
            if addr or tp.listen:
                tp.wait_port(addr, timeout)
        return tp

    yield start
    for tp in started:
        tp.stop()


@pytest.fixture
def pg_config(rig):
    """Factory: pg_config(**overrides) -> a config dict with one postgres pool
    ("orders") in front of the rig, logging in as the system identity's
    db_user with an IMDS token over verify-full TLS. Keyword overrides are
    merged into pools[0] (server=..., pool=..., clients=..., listen=...) or,
    for log/http/shutdown/identity, into the top level."""

    def build(**overrides):
        return pool_config(rig, _free_port, rig.pg_database, "postgres", {
            "host": rig.pg_host,
            "port": rig.pg_port,
            "database": rig.pg_database,
            "scope": rig.pg_scope,
            "tls": {"mode": "verify-full", "ca_file": rig.ca_file},
        }, overrides)

    return build


# ====================================================================== MySQL
# MySQL (MariaDB) fixtures, for the rig's stand-in for Azure Database for MySQL.
#
#   mysql_config         factory: mysql_config(**overrides) -> config dict for one
#                        mysql pool in front of the rig (like pg_config).
#   mysql_token_connect  factory: a pymysql connection straight to the rig's
#                        MariaDB, logged in with a fresh IMDS token.
#   mysql_client         factory: a pymysql connection to a tokenpool listener.
#   (autouse) after each test that used the rig: MariaDB running again and
#   presenting the localhost certificate.

@pytest.fixture(autouse=True)
def _mysql_rig_isolation(request):
    """Undo what a test may have done to the rig's MariaDB, even if it failed."""
    yield
    r = _rig_used(request)
    if r is None:
        return
    if not r.mysql_config_file:  # attached to a rig.json without MariaDB
        return
    if not r.mysql_running():
        r.start_mysql()
    if r.mysql_certificate != "localhost":
        r.use_mysql_certificate("localhost")


@pytest.fixture
def mysql_config(rig):
    """Factory: mysql_config(**overrides) -> a config dict with one mysql pool
    ("orders") in front of the rig's MariaDB, logging in as the system
    identity's db_user with an IMDS token over verify-full TLS (server_name
    localhost). Overrides merge like pg_config's."""

    def build(**overrides):
        return pool_config(rig, _free_port, rig.mysql_database, "mysql", {
            "host": rig.mysql_host,
            "port": rig.mysql_port,
            "database": rig.mysql_database,
            "scope": rig.mysql_scope,
            "tls": {"mode": "verify-full", "ca_file": rig.ca_file, "server_name": "localhost"},
        }, overrides)

    return build


@pytest.fixture
def mysql_token_connect(rig):
    """Factory: mysql_token_connect(identity=None, user=None, token=None, **kw)
    -> pymysql connection straight to the rig's MariaDB over verified TLS.
    identity: None (system-assigned) or a user-assigned identity's name; user
    defaults to its db_user, token to a fresh IMDS token for it. kw go to
    rig.mysql_connect (database=, tls=, autocommit=, ...). Closed at teardown."""
    opened = []

    def connect(identity=None, user=None, token=None, **kw):
        if user is None:
            user = rig.identity(identity or "system")["db_user"]
        if token is None:
            token = rig.token(identity)
        conn = rig.mysql_connect(user, token, **kw)
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        try:
            conn.close()
        except Exception:
            pass


@pytest.fixture
def mysql_client():
    """Factory: mysql_client(tp, user="app", password="app-password",
    database=<first pool's name>, port=None, **kw) -> pymysql connection to
    tokenpool's first listener (no TLS unless ssl= is given). Closed at teardown."""
    import pymysql

    opened = []

    def connect(tp, user=CLIENT_USER, password=CLIENT_PASSWORD, database=None, port=None, **kw):
        if database is None and tp.config and tp.config.get("pools"):
            database = tp.config["pools"][0].get("name")
        kw.setdefault("connect_timeout", 10)
        conn = pymysql.connect(host=tp.listen[0], port=port or tp.listen[1], user=user,
                               password=password, database=database or None, **kw)
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        try:
            conn.close()
        except Exception:
            pass
