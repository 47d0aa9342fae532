#!/usr/bin/env python3
"""The test rig: a local stand-in for Azure, started on loopback.

Pieces, each on its own free port, in a fresh run directory:
  * a CA, a `localhost` server certificate, a second unrelated CA and a
    certificate for a wrong host name (openssl CLI);
  * the identity provider (idp.py: IMDS, App Service, Entra token endpoint
    with client secrets, certificate assertions and workload identity);
  * app certificates (PEM: certificate + private key) for the certificate
    flow: one registered on app `etl`, one not registered anywhere, one with
    an EC key (Entra assertions need RSA); a stub `az` (tests/rig/az);
  * PostgreSQL with ssl=on that logs token users in through PAM (pam_jwt.so
    checks the token's signature, expiry, audience and user) and a
    SCRAM password role, and rejects every connection without TLS;
  * MariaDB (standing in for Azure Database for MySQL) with
    require_secure_transport, the same token users through PAM and the
    mysql_clear_password plugin, and a mysql_native_password user.

As a module:   with Rig() as rig: ... rig.pg_port, rig.token(), ...
As a CLI:      /usr/bin/python3 tests/rig/rig.py up --dir DIR
               (writes DIR/rig.json, runs until SIGTERM/SIGINT)

Needs root: PostgreSQL runs as the `postgres` OS user (via runuser), MariaDB
as root (its PAM helper must be executable), and the PAM service files live
in /etc/pam.d. Cleanup is threefold: stop() (also
from atexit), a guardian process that cleans up if this process dies
without stopping (even on SIGKILL), and a sweep of stale rigs at start.
"""

import argparse
import atexit
import glob
import grp
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
import idp as idp_mod  # noqa: E402  (the rig's own identity provider)
import importlib.util  # noqa: E402

# The TDS server stands in for Azure SQL (tests/rig/tds/server.py; loaded
# by path: its folder holds modules named like common ones).
_spec = importlib.util.spec_from_file_location("tds_server", os.path.join(HERE, "tds", "server.py"))
tds_mod = importlib.util.module_from_spec(_spec)
sys.modules["tds_server"] = tds_mod
_spec.loader.exec_module(tds_mod)
TDS_AUDIENCE = "https://database.windows.net"

PG_AUDIENCE = "https://ossrdbms-aad.database.windows.net"
PG_SCOPE = PG_AUDIENCE + "/.default"
PAM_DIR = "/etc/pam.d"
PAM_PREFIX = "tokenpool-rig-"
RUN_PREFIX = "tokenpool-rig-"
TOKEN_GROUP = "azure_ad_user"      # PG group role of all token users (as in Azure)
PASSWORD_USER = "legacy_app"
DATABASES = ("orders", "inventory")
WRONGHOST_NAME = "wrong-host.rig.test"
START_TIMEOUT = 30
MYSQL_PASSWORD_USER = "legacy_app"   # mysql_native_password, like PG's SCRAM role
MYSQL_SUPERUSER = "root"             # unix_socket authentication, Unix socket only
MARIADBD = os.environ.get("TOKENPOOL_MARIADBD", "/usr/sbin/mariadbd")
MARIADB_INSTALL_DB = os.environ.get("TOKENPOOL_MARIADB_INSTALL_DB", "/usr/bin/mariadb-install-db")
MARIADB_CLI = os.environ.get("TOKENPOOL_MARIADB_CLI", "/usr/bin/mariadb")


class RigError(RuntimeError):
    pass


_handed_out = set()


def free_port(host="127.0.0.1"):
    """A TCP port that was free a moment ago (bind to 0, read, close) and
    that this process has not handed out before: two ports asked for in a
    row (a listener and the HTTP address) must differ even though neither
    is bound yet."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no fresh free port after 100 tries")


def pg_bindir():
    env = os.environ.get("TOKENPOOL_PG_BIN")
    if env:
        return env
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if not found:
        raise RigError("PostgreSQL server binaries not found (apt-get install postgresql)")
    return os.path.dirname(found[-1])


def _run(cmd, what, input=None, env=None, timeout=60):
    """Run a command; on failure raise RigError with its output."""
    p = subprocess.run(cmd, input=input, capture_output=True, text=True, env=env, timeout=timeout)
    if p.returncode != 0:
        raise RigError(f"{what} failed (exit {p.returncode}): {' '.join(cmd)}\n{p.stdout}{p.stderr}")
    return p.stdout


def _as_postgres(cmd):
    return ["runuser", "-u", "postgres", "--"] + cmd


def _proc_start_time(pid):
    """Start time of a process (clock ticks since boot), to tell a pid reused."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid, start_time):
    return pid and _proc_start_time(pid) == start_time


def _clean_env():
    """Environment for the servers: no locale or PG* surprises from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "LC_"))}
    env["LANG"] = "C.UTF-8"
    env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
    return env


# ---------------------------------------------------------------- cleanup
# Shared by Rig.stop(), the guardian and the stale-rig sweep: everything
# needed is in DIR/state.json, written as pieces come up.

def _load_state(run_dir):
    try:
        with open(os.path.join(run_dir, "state.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _stop_pg_datadir(data_dir, mode="fast"):
    pidfile = os.path.join(data_dir, "postmaster.pid")
    if not os.path.exists(pidfile):
        return
    subprocess.run(_as_postgres([os.path.join(pg_bindir(), "pg_ctl"), "-D", data_dir,
                                 "stop", "-m", mode, "-w", "-t", "15", "-s"]),
                   capture_output=True, env=_clean_env())
    # If pg_ctl could not stop it, kill the postmaster by the pid it wrote,
    # after making sure that pid still is that postmaster.
    try:
        with open(pidfile) as f:
            pid = int(f.readline())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if data_dir.encode() in f.read():
                os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass


def _pid_gone(pid):
    """True once pid has exited. A zombie counts (it only waits to be
    reaped), but only once its other threads are gone too: a killed
    multi-threaded server's main thread turns zombie while the others may
    still hold its sockets open."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                return False
        return len(os.listdir(f"/proc/{pid}/task")) <= 1
    except (OSError, IndexError):
        return True


def _mysql_server_pid(pid_file, config_file):
    """The pid of a rig's MariaDB server, or None: the pid in its pid file,
    if that process still runs with the rig's config file (a pid file left
    by a killed server may name a pid reused since)."""
    if not pid_file or not config_file:
        return None
    try:
        with open(pid_file) as f:
            pid = int(f.readline())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if ("--defaults-file=" + config_file).encode() in f.read().split(b"\0"):
                return pid
    except (OSError, ValueError):
        pass
    return None


def _signal_mysql(state, mode):
    """Ask (fast, smart) or force (immediate: as good as a crash) a rig's
    MariaDB to stop. Returns the pid signalled, or None."""
    pid = _mysql_server_pid(state.get("mysql_pid_file"), state.get("mysql_config_file"))
    if pid:
        try:
            os.kill(pid, signal.SIGKILL if mode == "immediate" else signal.SIGTERM)
        except OSError:
            pass
    return pid


def _wait_pid_gone(pid, timeout=START_TIMEOUT, reap=None):
    """Wait for pid to exit; SIGKILL it if it takes longer than timeout.
    reap: called while waiting (Popen.poll of our own child)."""
    deadline = time.monotonic() + timeout
    killed = False
    while not _pid_gone(pid):
        if reap:
            reap()
        if time.monotonic() > deadline:
            if killed:
                raise RigError(f"process {pid} did not exit")
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
            killed, deadline = True, time.monotonic() + 5
        time.sleep(0.02)
    if reap:
        reap()


def _cleanup(run_dir, state, remove_dir, pg_mode="fast"):
    # MariaDB shuts down while PostgreSQL does.
    mysql_pid = _signal_mysql(state, pg_mode)
    if state.get("pg_data_dir"):
        _stop_pg_datadir(state["pg_data_dir"], pg_mode)
    if mysql_pid:
        try:
            _wait_pid_gone(mysql_pid)
        except RigError:
            pass
    for key in ("tds_pid", "tds_gateway_pid"):
        tds_pid = state.get(key)
        if tds_pid and _alive(tds_pid, state.get(key + "_start_time")):
            try:
                os.kill(tds_pid, signal.SIGTERM)
            except OSError:
                pass
    pid = state.get("idp_pid")
    if pid and _alive(pid, state.get("idp_start_time")):
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    # A rig.json left behind would describe a rig that is gone.
    try:
        os.unlink(os.path.join(run_dir, "rig.json"))
    except OSError:
        pass
    for svc_file in (state.get("pam_service_file"), state.get("mysql_pam_service_file")):
        if svc_file and os.path.basename(svc_file).startswith(PAM_PREFIX):
            try:
                os.unlink(svc_file)
            except FileNotFoundError:
                pass
    if remove_dir and os.path.isdir(run_dir) and os.path.exists(os.path.join(run_dir, "state.json")):
        shutil.rmtree(run_dir, ignore_errors=True)


def _guardian(run_dir):
    """Wait for our parent's pipe to close. "done" first means the rig
    stopped cleanly; a bare EOF means it died: clean up for it."""
    data = sys.stdin.buffer.read()
    if b"done" in data:
        return
    state = _load_state(run_dir)
    _cleanup(run_dir, state, remove_dir=state.get("remove_dir", False), pg_mode="immediate")


def sweep_stale_rigs():
    """Clean up after rigs whose owner process is gone and whose guardian
    did not get to it (e.g. the machine was restarted): PAM service files
    and their run directories."""
    for svc_file in glob.glob(os.path.join(PAM_DIR, PAM_PREFIX + "*")):
        try:
            with open(svc_file) as f:
                header = f.readline()
        except OSError:
            continue
        # "# tokenpool test rig: owner=PID start=TICKS dir=DIR"
        fields = dict(kv.split("=", 1) for kv in header.split() if "=" in kv)
        try:
            pid, start = int(fields.get("owner", "0")), int(fields.get("start", "0"))
        except ValueError:
            continue
        if _alive(pid, start):
            continue
        run_dir = fields.get("dir", "")
        state = _load_state(run_dir) if run_dir else {}
        if not state:
            state = {"pam_service_file": svc_file}
        if svc_file != state.get("mysql_pam_service_file"):
            state["pam_service_file"] = svc_file
        _cleanup(run_dir, state, remove_dir=state.get("remove_dir", False), pg_mode="immediate")


# ---------------------------------------------------------------- certificates

_OPENSSL_CNF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[localhost_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
[wronghost_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:{wronghost}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
"""


_APP_CERTS = {
    # file name: (openssl -newkey argument, subject CN)
    "app-etl.pem": ("rsa:2048", "etl app credential"),
    "app-unregistered.pem": ("rsa:2048", "unregistered app credential"),
    "app-ec.pem": ("ec:{ecparam}", "ec app credential"),
}


def make_app_certs(tls_dir):
    """Self-signed app credentials, each one PEM file holding the
    certificate and then its private key (what `certificate_file` and
    AZURE_CLIENT_CERTIFICATE_PATH name)."""
    ecparam = os.path.join(tls_dir, "prime256v1.param")
    _run(["openssl", "ecparam", "-name", "prime256v1", "-out", ecparam], "openssl ecparam")

    def one(name, newkey, cn):
        key, crt = os.path.join(tls_dir, name + ".key"), os.path.join(tls_dir, name + ".crt")
        _run(["openssl", "req", "-x509", "-new", "-newkey", newkey.format(ecparam=ecparam), "-nodes",
              "-sha256", "-days", "30", "-subj", f"/O=tokenpool test rig/CN={cn}",
              "-keyout", key, "-out", crt], f"openssl app cert {name}")
        with open(os.path.join(tls_dir, name), "w") as out:
            for part in (crt, key):
                with open(part) as f:
                    out.write(f.read())
            os.unlink(part)

    with ThreadPoolExecutor(3) as ex:
        for fut in [ex.submit(one, n, k, cn) for n, (k, cn) in _APP_CERTS.items()]:
            fut.result()
    os.unlink(ecparam)


def make_certs(tls_dir):
    """CA + localhost cert, an unrelated CA, and a cert for the wrong host.
    RSA 2048 like Azure's; keys are made in parallel to keep start-up short."""
    cnf = os.path.join(tls_dir, "openssl.cnf")
    with open(cnf, "w") as f:
        f.write(_OPENSSL_CNF.format(wronghost=WRONGHOST_NAME))
    p = lambda name: os.path.join(tls_dir, name)  # noqa: E731

    def ca(name, cn):
        _run(["openssl", "req", "-x509", "-new", "-newkey", "rsa:2048", "-nodes", "-sha256",
              "-days", "30", "-config", cnf, "-extensions", "ca_ext", "-subj", f"/O=tokenpool test rig/CN={cn}",
              "-keyout", p(name + ".key"), "-out", p(name + ".crt")], f"openssl CA {name}")

    def leaf(name, cn, ext, ca_name):
        _run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-config", cnf,
              "-subj", f"/O=tokenpool test rig/CN={cn}", "-keyout", p(name + ".key"),
              "-out", p(name + ".csr")], f"openssl key {name}")
        _run(["openssl", "x509", "-req", "-in", p(name + ".csr"), "-CA", p(ca_name + ".crt"),
              "-CAkey", p(ca_name + ".key"), "-set_serial", "0x" + secrets.token_hex(16),
              "-days", "30", "-sha256", "-extfile", cnf, "-extensions", ext,
              "-out", p(name + ".crt")], f"openssl sign {name}")
        os.unlink(p(name + ".csr"))

    with ThreadPoolExecutor(4) as ex:
        futs = [ex.submit(ca, "ca", "tokenpool rig CA"), ex.submit(ca, "other-ca", "unrelated CA"),
                ex.submit(make_app_certs, tls_dir)]
        futs[0].result()
        futs += [ex.submit(leaf, "server", "localhost", "localhost_ext", "ca"),
                 ex.submit(leaf, "wronghost", WRONGHOST_NAME, "wronghost_ext", "ca")]
        for fut in futs:
            fut.result()
    for name in os.listdir(tls_dir):
        os.chmod(p(name), 0o600 if name.endswith((".key", ".pem")) else 0o644)


# ---------------------------------------------------------------- the rig

class Rig:
    """A running rig. Attributes (also the keys of rig.json):

    dir, owner_pid
    ca_file, ca_key_file, server_cert_file, server_key_file,
    other_ca_file, other_ca_key_file, wronghost_cert_file, wronghost_key_file, wronghost_name
    idp_url, idp_port, idp_https_url, idp_https_port, idp_pid, idp_log_file,
    imds_endpoint, app_service_endpoint, authority, header_secret, key_file, tenant_id,
    identities (dict: system, user_assigned, apps)
    pg_host, pg_hostaddr, pg_port, pg_socket_dir, pg_data_dir, pg_log_file,
    pg_superuser, pg_database, pg_databases, pg_token_group, pg_token_users,
    pg_password_user, pg_password, pg_audience, pg_scope,
    pam_service, pam_service_file, pam_module, pam_log_file
    mysql_host, mysql_hostaddr, mysql_port, mysql_pid, mysql_socket, mysql_data_dir,
    mysql_config_file, mysql_log_file, mysql_superuser, mysql_database, mysql_databases,
    mysql_token_users, mysql_password_user, mysql_password, mysql_audience, mysql_scope,
    mysql_pam_service, mysql_pam_service_file
    tds_host, tds_port, tds_admin_url, tds_pid, tds_log_file, tds_gateway_port,
    tds_gateway_admin_url, tds_gateway_pid, tds_audience, tds_scope, tds_databases,
    tds_sql_user, tds_sql_password
    app_certificate_file, app_certificate_unregistered_file, app_certificate_ec_file,
    k8s_issuer, k8s_subject, az_stub
    """

    FIELDS = (
        "dir", "owner_pid",
        "ca_file", "ca_key_file", "server_cert_file", "server_key_file",
        "other_ca_file", "other_ca_key_file", "wronghost_cert_file", "wronghost_key_file",
        "wronghost_name",
        "idp_url", "idp_port", "idp_https_url", "idp_https_port", "idp_pid", "idp_log_file",
        "imds_endpoint", "app_service_endpoint", "authority", "header_secret", "key_file",
        "tenant_id", "identities",
        "pg_host", "pg_hostaddr", "pg_port", "pg_socket_dir", "pg_data_dir", "pg_log_file",
        "pg_superuser", "pg_database", "pg_databases", "pg_token_group", "pg_token_users",
        "pg_password_user", "pg_password", "pg_audience", "pg_scope",
        "pam_service", "pam_service_file", "pam_module", "pam_log_file",
        "mysql_host", "mysql_hostaddr", "mysql_port", "mysql_pid", "mysql_socket", "mysql_data_dir",
        "mysql_config_file", "mysql_log_file", "mysql_superuser", "mysql_database", "mysql_databases",
        "mysql_token_users", "mysql_password_user", "mysql_password", "mysql_audience", "mysql_scope",
        "mysql_pam_service", "mysql_pam_service_file",
        "tds_host", "tds_port", "tds_admin_url", "tds_pid", "tds_log_file", "tds_gateway_port",
        "tds_gateway_admin_url", "tds_gateway_pid", "tds_audience", "tds_scope", "tds_databases",
        "tds_sql_user", "tds_sql_password",
        "app_certificate_file", "app_certificate_unregistered_file", "app_certificate_ec_file",
        "k8s_issuer", "k8s_subject", "az_stub",
    )

    def __init__(self, dir=None, keep=None):
        """dir: run directory (created; must be empty or absent). Default: a
        new one under /tmp, removed at stop unless keep=True."""
        self._explicit_dir = dir is not None
        self._keep = keep if keep is not None else self._explicit_dir
        self._requested_dir = dir
        self._owner = True
        self._started = False
        self._stopped = False
        self._lock = threading.Lock()
        self._idp_proc = None
        self._guardian = None
        self._state = {}
        self._key = None
        self.pg_certificate = "localhost"   # which certificate PostgreSQL presents
        self.mysql_certificate = "localhost"  # which certificate MariaDB presents
        self._mysql_proc = None
        for f in self.FIELDS:
            setattr(self, f, None)

    # -- public lifecycle

    def start(self):
        if os.geteuid() != 0:
            raise RigError("the rig needs root (runuser to postgres, /etc/pam.d)")
        sweep_stale_rigs()
        t0 = time.monotonic()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = round(time.monotonic() - t0, 2)
        return self

    def stop(self):
        """Stop everything; idempotent, safe from atexit and after a failed start."""
        with self._lock:
            if self._stopped or not self._owner:
                return
            self._stopped = True
        if self.dir:
            _cleanup(self.dir, self._state, remove_dir=False)
        if self._mysql_proc is not None and self._mysql_proc.poll() is None:
            # Only if start-up failed before it wrote its pid file.
            self._mysql_proc.kill()
            self._mysql_proc.wait(5)
        if self._idp_proc is not None:
            try:
                self._idp_proc.wait(5)
            except subprocess.TimeoutExpired:
                self._idp_proc.kill()
        if self._guardian is not None:
            try:
                self._guardian.stdin.write(b"done\n")
                self._guardian.stdin.close()
                self._guardian.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if self.dir and not self._keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @classmethod
    def attach(cls, rig_json):
        """A handle on a rig another process started (rig.py up). It can do
        everything but stop the rig."""
        with open(rig_json) as f:
            info = json.load(f)
        rig = cls()
        rig._owner = False
        for k in cls.FIELDS:
            setattr(rig, k, info.get(k))
        return rig

    def info(self):
        return {k: getattr(self, k) for k in self.FIELDS}

    # -- start-up

    def _start(self):
        self._make_dir()
        self.owner_pid = os.getpid()
        self._save_state(remove_dir=not self._keep)
        self._start_guardian()
        tls = self._sub("tls", 0o755)
        idp_dir = self._sub("idp", 0o755)
        pam_dir = self._sub("pam", 0o755)
        pg_dir = self._sub("pg", 0o755, owner="postgres")
        self.pg_socket_dir = pg_dir
        self.pg_data_dir = os.path.join(pg_dir, "data")
        self.pg_log_file = os.path.join(pg_dir, "postgres.log")
        self._save_state(pg_data_dir=self.pg_data_dir)
        self._mysql_paths(self._sub("mysql", 0o755))

        # The slow, independent steps run side by side.
        with ThreadPoolExecutor(4) as ex:
            f_certs = ex.submit(make_certs, tls)
            f_pam = ex.submit(self._build_pam_module, pam_dir)
            f_initdb = ex.submit(self._initdb)
            f_mysql = ex.submit(self._mysql_install_db)
            self._make_idp_key(idp_dir)
            f_certs.result()
            self._start_idp(idp_dir, tls)
            f_pam.result()
            f_initdb.result()
            f_mysql.result()
        self.ca_file = os.path.join(tls, "ca.crt")
        self.ca_key_file = os.path.join(tls, "ca.key")
        self.server_cert_file = os.path.join(tls, "server.crt")
        self.server_key_file = os.path.join(tls, "server.key")
        self.other_ca_file = os.path.join(tls, "other-ca.crt")
        self.other_ca_key_file = os.path.join(tls, "other-ca.key")
        self.wronghost_cert_file = os.path.join(tls, "wronghost.crt")
        self.wronghost_key_file = os.path.join(tls, "wronghost.key")
        self.wronghost_name = WRONGHOST_NAME

        self._install_pam_service(pam_dir)
        # MariaDB comes up while PostgreSQL does.
        self._configure_mysql(tls)
        self._spawn_mysql()
        self._configure_pg(tls)
        self._start_pg_first_time()
        self._wait_idp()
        self._setup_pg_roles()
        self._check_postgres_can_read()
        self._wait_mysql_first_time()
        self._setup_mysql_users()
        self._start_tds()
        self._write_rig_json()
        self._started = True

    def _make_dir(self):
        if self._explicit_dir:
            d = os.path.abspath(self._requested_dir)
            if os.path.isdir(d) and os.listdir(d):
                # A previous rig's directory (its owner gone) may be reused.
                state = _load_state(d)
                if not state or _alive(state.get("owner_pid"), state.get("owner_start")):
                    raise RigError(f"{d} is not empty and not a stale rig directory")
                _cleanup(d, state, remove_dir=False, pg_mode="immediate")
                for name in os.listdir(d):
                    path = os.path.join(d, name)
                    shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) \
                        else os.unlink(path)
            os.makedirs(d, exist_ok=True)
        else:
            d = tempfile.mkdtemp(prefix=RUN_PREFIX, dir=os.environ.get("TOKENPOOL_RIG_TMP", "/tmp"))
        if any(c.isspace() for c in d):
            raise RigError(f"run directory {d!r} contains whitespace (PAM arguments cannot)")
        os.chmod(d, 0o755)
        self.dir = d
        # PostgreSQL (as user postgres) loads the PAM module and reads the key
        # from here: every directory up the path needs o+x.
        path = d
        while path != "/":
            path = os.path.dirname(path)
            if not os.stat(path).st_mode & 0o001:
                raise RigError(f"{path} is not o+x: the postgres user cannot reach {d}; "
                               f"pick another --dir (e.g. under /tmp)")

    def _sub(self, name, mode, owner=None):
        path = os.path.join(self.dir, name)
        os.mkdir(path, mode)
        os.chmod(path, mode)
        if owner:
            pw = pwd.getpwnam(owner)
            os.chown(path, pw.pw_uid, pw.pw_gid)
        return path

    def _save_state(self, **kv):
        self._state.update(kv)
        self._state.setdefault("owner_pid", os.getpid())
        self._state.setdefault("owner_start", _proc_start_time(os.getpid()))
        tmp = os.path.join(self.dir, "state.json.tmp")
        with open(tmp, "w") as f:
            json.dump(self._state, f)
        os.replace(tmp, os.path.join(self.dir, "state.json"))

    def _start_guardian(self):
        log = open(os.path.join(self.dir, "guardian.log"), "ab")
        self._guardian = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "_guardian", self.dir],
            stdin=subprocess.PIPE, stdout=log, stderr=log, start_new_session=True)
        log.close()
        atexit.register(self.stop)

    def _make_idp_key(self, idp_dir):
        self.key_file = os.path.join(idp_dir, "idp.key")
        fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        # Readable by PostgreSQL's backends, which run the PAM module.
        os.chown(self.key_file, 0, grp.getgrnam("postgres").gr_gid)
        self._key = idp_mod.read_key(self.key_file)

    def _idp_start_config(self, idp_dir, tls):
        """The IdP's start-up config: the default identities, with the etl
        app's certificate registered. Returns the file's path."""
        self.app_certificate_file = os.path.join(tls, "app-etl.pem")
        self.app_certificate_unregistered_file = os.path.join(tls, "app-unregistered.pem")
        self.app_certificate_ec_file = os.path.join(tls, "app-ec.pem")
        self.k8s_issuer = idp_mod.K8S_ISSUER
        self.k8s_subject = idp_mod.K8S_SUBJECT
        self.az_stub = os.path.join(HERE, "az")
        with open(self.app_certificate_file) as f:
            pem = f.read()
        cert_pem = pem[pem.index("-----BEGIN CERTIFICATE-----"):]
        cert_pem = cert_pem[:cert_pem.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")] + "\n"
        ids = idp_mod.default_identities()
        for app in ids["apps"]:
            if app["name"] == "etl":
                app["certificates"] = [cert_pem]
        path = os.path.join(idp_dir, "start-config.json")
        with open(path, "w") as f:
            json.dump({"identities": ids}, f)
        return path

    def _start_idp(self, idp_dir, tls):
        ready = os.path.join(idp_dir, "ready.json")
        start_config = self._idp_start_config(idp_dir, tls)
        self.idp_log_file = os.path.join(idp_dir, "idp.log")
        self.header_secret = secrets.token_urlsafe(24)
        log = open(self.idp_log_file, "ab")
        self._idp_proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "idp.py"), "--port", "0", "--https-port", "0",
             "--tls-cert", os.path.join(tls, "server.crt"), "--tls-key", os.path.join(tls, "server.key"),
             "--key-file", self.key_file, f"--header-secret={self.header_secret}",  # it may start with "-"
             "--config", start_config, "--ready-file", ready, "--exit-with-parent"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        log.close()
        self.idp_pid = self._idp_proc.pid
        self._idp_ready_file = ready
        self._save_state(idp_pid=self.idp_pid, idp_start_time=_proc_start_time(self.idp_pid))

    def _wait_idp(self):
        deadline = time.monotonic() + START_TIMEOUT
        while not os.path.exists(self._idp_ready_file):
            if self._idp_proc.poll() is not None or time.monotonic() > deadline:
                raise RigError("identity provider did not start:\n" + _tail(self.idp_log_file))
            time.sleep(0.02)
        with open(self._idp_ready_file) as f:
            ready = json.load(f)
        self.idp_port = ready["port"]
        self.idp_url = ready["url"]
        self.idp_https_port = ready.get("https_port")
        self.idp_https_url = ready.get("https_url")
        self.imds_endpoint = self.idp_url
        self.app_service_endpoint = self.idp_url + idp_mod.APP_SERVICE_PATH
        self.authority = self.idp_url
        cfg = self.idp_config()
        self.tenant_id = cfg["tenant_id"]
        self.identities = cfg["identities"]

    def _build_pam_module(self, pam_dir):
        self.pam_module = os.path.join(pam_dir, "pam_jwt.so")
        _run(["cc", "-shared", "-fPIC", "-O2", "-Wall", "-o", self.pam_module,
              os.path.join(HERE, "pam_jwt.c"), "-lpam", "-lcrypto"], "building pam_jwt.so")
        os.chmod(self.pam_module, 0o755)
        self.pam_log_file = os.path.join(pam_dir, "pam.log")
        # Written by PostgreSQL backends (user postgres); created here so the
        # owner is known rather than whoever logs in first.
        open(self.pam_log_file, "a").close()
        pw = pwd.getpwnam("postgres")
        os.chown(self.pam_log_file, pw.pw_uid, pw.pw_gid)
        os.chmod(self.pam_log_file, 0o644)

    def _install_pam_service(self, pam_dir):
        self.pam_service = PAM_PREFIX + secrets.token_hex(4)
        self.pam_service_file = os.path.join(PAM_DIR, self.pam_service)
        # MariaDB gets a service of its own (same checks), so the PAM log
        # tells which server a decision was for.
        self.mysql_pam_service = self.pam_service + "-mysql"
        self.mysql_pam_service_file = os.path.join(PAM_DIR, self.mysql_pam_service)
        self._save_state(pam_service_file=self.pam_service_file,
                         mysql_pam_service_file=self.mysql_pam_service_file)
        for path in (self.pam_service_file, self.mysql_pam_service_file):
            with open(path, "w") as f:
                f.write(f"# tokenpool test rig: owner={os.getpid()} start={_proc_start_time(os.getpid())} "
                        f"dir={self.dir}\n"
                        "# Removed when the rig stops.\n"
                        f"auth    required {self.pam_module} key={self.key_file} aud={PG_AUDIENCE} "
                        f"log={self.pam_log_file}\n"
                        "account required pam_permit.so\n")
            os.chmod(path, 0o644)

    # -- PostgreSQL

    def _pg_ctl(self, *args, check=True):
        cmd = _as_postgres([os.path.join(pg_bindir(), "pg_ctl"), "-D", self.pg_data_dir, *args])
        p = subprocess.run(cmd, capture_output=True, text=True, env=_clean_env())
        if check and p.returncode != 0:
            raise RigError(f"pg_ctl {' '.join(args)} failed (exit {p.returncode}):\n{p.stdout}{p.stderr}\n"
                           + _tail(self.pg_log_file))
        return p

    def _initdb(self):
        _run(_as_postgres([os.path.join(pg_bindir(), "initdb"), "-D", self.pg_data_dir, "-U", "postgres",
                           "-E", "UTF8", "--locale=C", "--auth-local=trust", "--auth-host=reject",
                           "--no-sync", "--no-instructions"]), "initdb", env=_clean_env(), timeout=120)

    def _configure_pg(self, tls):
        pw = pwd.getpwnam("postgres")
        # PostgreSQL insists its key be private to it: copy the pair into its dir.
        for src, dst, mode in (("server.crt", "server.crt", 0o644), ("server.key", "server.key", 0o600),
                               ("wronghost.crt", "wronghost.crt", 0o644),
                               ("wronghost.key", "wronghost.key", 0o600)):
            path = os.path.join(self.pg_socket_dir, dst)
            shutil.copyfile(os.path.join(tls, src), path)
            os.chown(path, pw.pw_uid, pw.pw_gid)
            os.chmod(path, mode)
        self.pg_host = "localhost"
        self.pg_hostaddr = "127.0.0.1"
        self.pg_superuser = "postgres"
        self.pg_database = DATABASES[0]
        self.pg_databases = list(DATABASES)
        self.pg_token_group = TOKEN_GROUP
        self.pg_password_user = PASSWORD_USER
        self.pg_password = "legacy-" + secrets.token_urlsafe(18)
        self.pg_audience = PG_AUDIENCE
        self.pg_scope = PG_SCOPE
        conf = os.path.join(self.pg_data_dir, "postgresql.conf")
        with open(conf, "a") as f:
            f.write(f"""
# ---- tokenpool test rig
listen_addresses = '127.0.0.1'
unix_socket_directories = '{self.pg_socket_dir}'
include_if_exists = 'rig_port.conf'
ssl = on
ssl_cert_file = '{self.pg_socket_dir}/server.crt'
ssl_key_file = '{self.pg_socket_dir}/server.key'
ssl_min_protocol_version = 'TLSv1.2'
password_encryption = 'scram-sha-256'
log_connections = on
log_disconnections = on
log_line_prefix = '%m [%p] %q%u@%d '
max_connections = 200
shared_buffers = 32MB
# Disposable data: trade durability for speed.
fsync = off
synchronous_commit = off
full_page_writes = off
""")
        hba = os.path.join(self.pg_data_dir, "pg_hba.conf")
        with open(hba, "w") as f:
            f.write(f"""# tokenpool test rig: token users through PAM over TLS only.
# TYPE  DATABASE USER              ADDRESS       METHOD
local   all      postgres                        trust
hostssl all      +{TOKEN_GROUP}    127.0.0.1/32  pam pamservice={self.pam_service}
hostssl all      {PASSWORD_USER}   127.0.0.1/32  scram-sha-256
host    all      all               0.0.0.0/0     reject
host    all      all               ::/0          reject
""")

    def _start_pg_first_time(self):
        # A port picked now may be taken by the time postgres binds: retry.
        for attempt in range(5):
            self.pg_port = free_port()
            with open(os.path.join(self.pg_data_dir, "rig_port.conf"), "w") as f:
                f.write(f"port = {self.pg_port}\n")
            p = self._pg_ctl("-l", self.pg_log_file, "-w", "-t", str(START_TIMEOUT), "-s", "start",
                             check=False)
            if p.returncode == 0:
                return
            if "Address already in use" not in _tail(self.pg_log_file) or attempt == 4:
                raise RigError(f"postgres did not start:\n{p.stdout}{p.stderr}\n" + _tail(self.pg_log_file))

    def _setup_pg_roles(self):
        users = []
        ids = self.identities
        for ident in ([ids["system"]] if ids.get("system") else []) + ids["user_assigned"] + ids["apps"]:
            if ident["db_user"] not in users:
                users.append(ident["db_user"])
        self.pg_token_users = users
        sql = [f"CREATE ROLE {TOKEN_GROUP} NOLOGIN;"]
        sql += [f'CREATE ROLE "{u}" LOGIN IN ROLE {TOKEN_GROUP};' for u in users]
        sql.append(f"CREATE ROLE {PASSWORD_USER} LOGIN PASSWORD '{self.pg_password}';")
        for db in DATABASES:
            sql.append(f"CREATE DATABASE {db};")
        for db in DATABASES:
            # PostgreSQL 15 no longer lets everyone create in schema public.
            sql.append(f"\\connect {db}")
            sql.append(f"GRANT CREATE ON SCHEMA public TO {TOKEN_GROUP}, {PASSWORD_USER};")
        self.psql_admin("\n".join(sql) + "\n")

    def _check_postgres_can_read(self):
        """Fail now, with a reason, rather than later as a vague login error."""
        for path in (self.pam_module, self.key_file):
            p = subprocess.run(_as_postgres(["test", "-r", path]), capture_output=True)
            if p.returncode != 0:
                raise RigError(f"user postgres cannot read {path}")
        p = subprocess.run(_as_postgres(["test", "-w", self.pam_log_file]), capture_output=True)
        if p.returncode != 0:
            raise RigError(f"user postgres cannot write {self.pam_log_file}")

    # -- the TDS servers (Azure SQL stand-ins, tests/rig/tds)

    def _start_tds(self):
        """Two instances of tests/rig/tds/server.py: the database, and a
        gateway that answers every login with a routing redirect to it (as
        Azure SQL's gateway does under the Redirect policy)."""
        tds_dir = self._sub("tds", 0o755)
        self.tds_sql_user = "legacy_app"
        self.tds_sql_password = "tds-" + secrets.token_hex(12)
        pw_file = os.path.join(tds_dir, "sql-password")
        fd = os.open(pw_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.tds_sql_password)
        self.tds_databases = ["orders", "inventory", "master"]
        common = dict(cert=self.server_cert_file, key=self.server_key_file,
                      jwt_key_file=self.key_file, workdir=tds_dir,
                      databases=tuple(self.tds_databases))
        primary = tds_mod.TdsServerProcess.start(name="tds-primary", sql_user=self.tds_sql_user,
                                                 sql_password_file=pw_file, **common)
        gateway = tds_mod.TdsServerProcess.start(name="tds-gateway",
                                                 redirect_to=f"localhost:{primary.port}", **common)
        self._tds_procs = [primary, gateway]
        self.tds_host = "localhost"
        self.tds_port, self.tds_admin_url, self.tds_pid = primary.port, primary.admin_url, primary.pid
        self.tds_log_file = primary.log_file
        self.tds_gateway_port, self.tds_gateway_admin_url = gateway.port, gateway.admin_url
        self.tds_gateway_pid = gateway.pid
        self.tds_audience = TDS_AUDIENCE
        self.tds_scope = TDS_AUDIENCE + "/.default"
        self._save_state(tds_pid=primary.pid, tds_pid_start_time=_proc_start_time(primary.pid),
                         tds_gateway_pid=gateway.pid,
                         tds_gateway_pid_start_time=_proc_start_time(gateway.pid))

    def tds(self):
        """Control client of the TDS database (stats, sessions, kill, reset, config)."""
        return tds_mod.TdsControl(self.tds_admin_url)

    def tds_gateway(self):
        """Control client of the redirecting gateway."""
        return tds_mod.TdsControl(self.tds_gateway_admin_url)

    def _write_rig_json(self):
        tmp = os.path.join(self.dir, "rig.json.tmp")
        with open(tmp, "w") as f:
            json.dump(self.info(), f, indent=2)
        os.chmod(tmp, 0o644)
        os.replace(tmp, os.path.join(self.dir, "rig.json"))

    # -- PostgreSQL control for tests

    def psql_admin(self, sql, dbname="postgres"):
        """Run SQL (a script; psql meta-commands allowed) as the superuser over
        the Unix socket; returns psql's unaligned, tuples-only output."""
        return _run([os.path.join(pg_bindir(), "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                     "-h", self.pg_socket_dir, "-p", str(self.pg_port), "-U", "postgres",
                     "-d", dbname, "-f", "-"], "psql", input=sql, env=_clean_env())

    def add_pg_token_role(self, name):
        """Create a login role that can sign in with tokens (db_user == name)."""
        self.psql_admin(f'CREATE ROLE "{name}" LOGIN IN ROLE {TOKEN_GROUP};\n')
        if name not in self.pg_token_users:
            self.pg_token_users.append(name)

    def stop_postgres(self, mode="fast"):
        """mode: smart | fast | immediate (immediate is as good as a crash)."""
        self._pg_ctl("stop", "-m", mode, "-w", "-t", str(START_TIMEOUT), "-s")

    def start_postgres(self):
        self._pg_ctl("-l", self.pg_log_file, "-w", "-t", str(START_TIMEOUT), "-s", "start")

    def restart_postgres(self, mode="fast"):
        self.stop_postgres(mode)
        self.start_postgres()

    def postgres_running(self):
        return self._pg_ctl("status", check=False).returncode == 0

    def postgres_pid(self):
        with open(os.path.join(self.pg_data_dir, "postmaster.pid")) as f:
            return int(f.readline())

    def use_pg_certificate(self, which="localhost"):
        """Make PostgreSQL present the `localhost` certificate (default) or the
        one for `wronghost_name` (for host-name verification tests)."""
        if which not in ("localhost", "wronghost"):
            raise ValueError("which must be 'localhost' or 'wronghost'")
        base = "server" if which == "localhost" else "wronghost"
        crt = os.path.join(self.pg_socket_dir, base + ".crt")
        self.psql_admin(f"ALTER SYSTEM SET ssl_cert_file = '{crt}';\n"
                        f"ALTER SYSTEM SET ssl_key_file = '{os.path.join(self.pg_socket_dir, base + '.key')}';\n"
                        "SELECT pg_reload_conf();\n")
        # The reload is asynchronous; a new session shows it once it is done.
        deadline = time.monotonic() + 10
        while self.psql_admin("SHOW ssl_cert_file;\n").strip() != crt:
            if time.monotonic() > deadline:
                raise RigError("postgres did not reload its certificate")
            time.sleep(0.05)
        self.pg_certificate = which

    def pg_dsn(self, user, password, dbname=None, sslmode="verify-full", sslrootcert=None, **extra):
        """A libpq keyword string for the rig's PostgreSQL over TCP."""
        params = {"host": self.pg_host, "hostaddr": self.pg_hostaddr, "port": self.pg_port,
                  "dbname": dbname or self.pg_database, "user": user, "password": password,
                  "sslmode": sslmode, "connect_timeout": 10}
        if sslmode in ("verify-ca", "verify-full"):
            params["sslrootcert"] = sslrootcert or self.ca_file
        params.update(extra)
        return " ".join(f"{k}={_libpq_quote(v)}" for k, v in params.items())

    def pg_connect(self, user, password, **kw):
        import psycopg2  # only tests need it
        return psycopg2.connect(self.pg_dsn(user, password, **kw))

    def pam_log(self):
        """The PAM module's decisions, oldest first, as dicts
        (ts, service, user, result, reason, appid, len, pid)."""
        out = []
        with open(self.pam_log_file) as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                entry = {"ts": parts[0]}
                entry.update(kv.split("=", 1) for kv in parts[2:] if "=" in kv)
                out.append(entry)
        return out

    def pg_log(self):
        with open(self.pg_log_file, errors="replace") as f:
            return f.read()

    # -- MariaDB (the stand-in for Azure Database for MySQL)

    def _mysql_file(self, name):
        return os.path.join(os.path.dirname(self.mysql_config_file), name)

    def _mysql_paths(self, mysql_dir):
        self.mysql_config_file = os.path.join(mysql_dir, "my.cnf")
        self.mysql_data_dir = os.path.join(mysql_dir, "data")
        self.mysql_socket = os.path.join(mysql_dir, "mysqld.sock")
        self.mysql_log_file = os.path.join(mysql_dir, "mariadb.log")
        if len(self.mysql_socket.encode()) > 107:
            raise RigError(f"{self.mysql_socket} is too long for a Unix socket; pick a shorter --dir")
        self._save_state(mysql_config_file=self.mysql_config_file,
                         mysql_pid_file=self._mysql_file("mariadbd.pid"))

    def _mysql_install_db(self):
        os.mkdir(self.mysql_data_dir, 0o700)
        # --no-defaults: the system tables do not depend on the server's
        # config (TLS files and the PAM plugin come later); the InnoDB sizes
        # must match my.cnf, or the server resizes its log at the first start.
        _run([MARIADB_INSTALL_DB, "--no-defaults", f"--datadir={self.mysql_data_dir}", "--user=root",
              "--skip-test-db", "--auth-root-authentication-method=socket", "--skip-name-resolve",
              *(f"--{k.replace('_', '-')}={v}" for k, v in _MYSQL_INNODB)],
             "mariadb-install-db", env=_clean_env(), timeout=120)

    def _configure_mysql(self, tls):
        # The certificate MariaDB presents is a copy: use_mysql_certificate()
        # swaps it and has the server re-read it (FLUSH SSL).
        for src, dst, mode in (("server.crt", "server.crt", 0o644), ("server.key", "server.key", 0o600)):
            path = self._mysql_file(dst)
            shutil.copyfile(os.path.join(tls, src), path)
            os.chmod(path, mode)
        self.mysql_host = "localhost"
        self.mysql_hostaddr = "127.0.0.1"
        self.mysql_superuser = MYSQL_SUPERUSER
        self.mysql_database = DATABASES[0]
        self.mysql_databases = list(DATABASES)
        self.mysql_password_user = MYSQL_PASSWORD_USER
        self.mysql_password = "legacy-" + secrets.token_urlsafe(18)
        self.mysql_audience = PG_AUDIENCE
        self.mysql_scope = PG_SCOPE
        self.mysql_port = free_port()
        self._write_mysql_config()

    def _write_mysql_config(self):
        innodb = "".join(f"{k} = {v}\n" for k, v in _MYSQL_INNODB)
        text = f"""# tokenpool test rig: MariaDB standing in for Azure Database for MySQL.
# Started as `mariadbd --defaults-file=THIS`; tools use --no-defaults.
[mariadbd]
# root: the PAM helper auth_pam_tool sits in a directory only its owner may
# enter, and that owner differs between installs (mysql after the package's
# postinst, root otherwise).
user = root
datadir = {self.mysql_data_dir}
socket = {self.mysql_socket}
pid-file = {self._mysql_file("mariadbd.pid")}
log-error = {self.mysql_log_file}
port = {self.mysql_port}
bind-address = 127.0.0.1
skip-name-resolve
character-set-server = utf8mb4
max_connections = 300
# As Azure: TLS on every TCP connection (the Unix socket counts as secure).
ssl-cert = {self._mysql_file("server.crt")}
ssl-key = {self._mysql_file("server.key")}
tls_version = TLSv1.2,TLSv1.3
require_secure_transport = ON
# As Azure's Entra users: token users are `IDENTIFIED VIA pam`, and the
# server asks their clients for mysql_clear_password.
plugin_load_add = auth_pam
pam_use_cleartext_plugin = ON
# Disposable data: trade durability for speed.
skip-log-bin
performance_schema = OFF
{innodb}"""
        tmp = self.mysql_config_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.mysql_config_file)

    def _spawn_mysql(self):
        try:
            os.unlink(self.mysql_socket)  # left by a killed server
        except FileNotFoundError:
            pass
        try:
            self._mysql_log_offset = os.path.getsize(self.mysql_log_file)
        except OSError:
            self._mysql_log_offset = 0
        log = open(self.mysql_log_file, "ab")
        # Its own session: Ctrl-C in a test run does not reach it; stop() does.
        self._mysql_proc = subprocess.Popen(
            [MARIADBD, f"--defaults-file={self.mysql_config_file}"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=_clean_env(), start_new_session=True)
        log.close()

    def _mysql_log_since_spawn(self):
        try:
            with open(self.mysql_log_file, "rb") as f:
                f.seek(self._mysql_log_offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def _wait_mysql(self):
        """Wait until the server just spawned answers on its socket."""
        import pymysql
        proc = self._mysql_proc
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise _MysqlExited(f"mariadbd exited with {proc.returncode}:\n"
                                   + self._mysql_log_since_spawn()[-4000:])
            if os.path.exists(self.mysql_socket):
                try:
                    self.mysql_admin("SELECT 1")
                    break
                except pymysql.err.MySQLError:
                    pass
            if time.monotonic() > deadline:
                raise RigError("mariadbd did not start:\n" + self._mysql_log_since_spawn()[-4000:])
            time.sleep(0.02)
        self.mysql_pid = proc.pid
        if self._owner and self._started:
            self._write_rig_json()

    def _wait_mysql_first_time(self):
        # A port picked at configure time may be taken by the time mariadbd
        # binds: retry with another.
        for attempt in range(5):
            try:
                return self._wait_mysql()
            except _MysqlExited as e:
                log = self._mysql_log_since_spawn()
                if attempt == 4 or ("Address already in use" not in log and "Bind on TCP/IP" not in log):
                    raise RigError(str(e)) from None
            self.mysql_port = free_port()
            self._write_mysql_config()
            self._spawn_mysql()

    def _mysql_token_user_sql(self, name):
        _check_mysql_name(name)
        return [f"CREATE USER '{name}'@'%' IDENTIFIED VIA pam USING '{self.mysql_pam_service}';"] + \
               [f"GRANT ALL PRIVILEGES ON `{db}`.* TO '{name}'@'%';" for db in DATABASES]

    def _setup_mysql_users(self):
        self.mysql_token_users = list(self.pg_token_users)
        sql = [f"CREATE DATABASE `{db}`;" for db in DATABASES]
        for user in self.mysql_token_users:
            sql += self._mysql_token_user_sql(user)
        sql.append(f"CREATE USER '{MYSQL_PASSWORD_USER}'@'%' IDENTIFIED VIA mysql_native_password "
                   f"USING PASSWORD('{self.mysql_password}');")
        sql += [f"GRANT ALL PRIVILEGES ON `{db}`.* TO '{MYSQL_PASSWORD_USER}'@'%';" for db in DATABASES]
        self.mysql_admin("\n".join(sql))

    # -- MariaDB control for tests

    def mysql_admin(self, sql, db=None):
        """Run SQL (one or more statements) as root over the Unix socket;
        returns the rows (list of tuples) of the last statement that had a
        result set, [] if none did."""
        import pymysql
        conn = pymysql.connect(unix_socket=self.mysql_socket, user=MYSQL_SUPERUSER, database=db,
                               autocommit=True, connect_timeout=10,
                               client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS)
        try:
            rows = []
            with conn.cursor() as cur:
                cur.execute(sql)
                while True:
                    if cur.description:
                        rows = list(cur.fetchall())
                    if not cur.nextset():
                        break
            return rows
        finally:
            conn.close()

    def add_mysql_token_user(self, name):
        """Create a MariaDB user that signs in with tokens (db_user == name)."""
        self.mysql_admin("\n".join(self._mysql_token_user_sql(name)))
        if name not in self.mysql_token_users:
            self.mysql_token_users.append(name)

    def mysql_server_pid(self):
        """The running server's pid (None if it is not running)."""
        return _mysql_server_pid(self._mysql_file("mariadbd.pid"), self.mysql_config_file)

    def mysql_running(self):
        return self.mysql_server_pid() is not None

    def stop_mysql(self, mode="fast"):
        """mode: fast (SIGTERM: clean shutdown) | immediate (SIGKILL: as good as a crash)."""
        if mode not in ("fast", "immediate"):
            raise ValueError("mode must be 'fast' or 'immediate'")
        pid = _signal_mysql({"mysql_pid_file": self._mysql_file("mariadbd.pid"),
                             "mysql_config_file": self.mysql_config_file}, mode)
        if not pid:
            raise RigError("MariaDB is not running")
        proc = self._mysql_proc
        _wait_pid_gone(pid, reap=proc.poll if proc is not None and proc.pid == pid else None)

    def start_mysql(self):
        if self.mysql_running():
            raise RigError("MariaDB is already running")
        self._spawn_mysql()
        try:
            self._wait_mysql()
        except _MysqlExited as e:
            raise RigError(str(e)) from None

    def restart_mysql(self, mode="fast"):
        self.stop_mysql(mode)
        self.start_mysql()

    def use_mysql_certificate(self, which="localhost"):
        """Make MariaDB present the `localhost` certificate (default) or the
        one for `wronghost_name` (for host-name verification tests). New
        connections see it at once (FLUSH SSL); no restart."""
        if which not in ("localhost", "wronghost"):
            raise ValueError("which must be 'localhost' or 'wronghost'")
        base = "server" if which == "localhost" else "wronghost"
        tls = os.path.dirname(self.ca_file)
        for ext, mode in ((".crt", 0o644), (".key", 0o600)):
            dst = self._mysql_file("server" + ext)
            shutil.copyfile(os.path.join(tls, base + ext), dst + ".tmp")
            os.chmod(dst + ".tmp", mode)
            os.replace(dst + ".tmp", dst)
        self.mysql_admin("FLUSH SSL")
        self.mysql_certificate = which

    def mysql_connect(self, user, password, database=None, tls="verify-full", ca_file=None,
                      host=None, port=None, **kw):
        """A pymysql connection to the rig's MariaDB over TCP. password: a
        token for token users (pymysql answers the server's switch to
        mysql_clear_password with it). tls: verify-full (chain + host name,
        the default) | verify-ca | require (no verification) | disable.
        database: default mysql_database; "" for none."""
        import ssl

        import pymysql
        if tls == "disable":
            kw["ssl_disabled"] = True
        elif tls in ("verify-full", "verify-ca"):
            ctx = ssl.create_default_context(cafile=ca_file or self.ca_file)
            ctx.check_hostname = tls == "verify-full"
            kw["ssl"] = ctx
        elif tls == "require":
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            kw["ssl"] = ctx
        else:
            raise ValueError(f"tls must be verify-full, verify-ca, require or disable, not {tls!r}")
        if database is None:
            database = self.mysql_database
        kw.setdefault("connect_timeout", 10)
        return pymysql.connect(host=host or self.mysql_host, port=port or self.mysql_port, user=user,
                               password=password, database=database or None, **kw)

    def mysql_cli(self, user, password, sql, database=None, tls="verify-full", ca_file=None,
                  extra=(), timeout=30):
        """Run the `mariadb` client over TCP (password in MYSQL_PWD, never in
        argv). tls: verify-full | require | disable. Returns the
        CompletedProcess (text; --batch --skip-column-names output).
        MariaDB's client answers mysql_clear_password without being told
        (its --enable-cleartext-plugin is obsolete and prints a WARNING
        line on stdout; pass it in `extra` to see that it is accepted)."""
        cmd = [MARIADB_CLI, "--no-defaults", "--protocol=TCP", "-h", self.mysql_host,
               "-P", str(self.mysql_port), "-u", user, "--batch", "--skip-column-names",
               "--connect-timeout=10"]
        if tls == "verify-full":
            cmd += [f"--ssl-ca={ca_file or self.ca_file}", "--ssl-verify-server-cert"]
        elif tls == "require":
            cmd += ["--ssl"]
        elif tls == "disable":
            cmd += ["--skip-ssl"]
        else:
            raise ValueError(f"tls must be verify-full, require or disable, not {tls!r}")
        cmd += list(extra) + ["-e", sql]
        if database is None:
            database = self.mysql_database
        if database:
            cmd.append(database)
        env = dict(_clean_env(), MYSQL_PWD=password)
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)

    def mysql_log(self):
        with open(self.mysql_log_file, errors="replace") as f:
            return f.read()

    # -- identity provider, for tests

    def idp_request(self, method, path, body=None, headers=None, timeout=10, https=False):
        """Returns (status, headers, parsed JSON or text)."""
        url = (self.idp_https_url if https else self.idp_url) + path
        data = None
        hdrs = dict(headers or {})
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            data = body.encode()
        elif body is not None:
            data = body
        req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
        ctx = None
        if https:
            import ssl
            ctx = ssl.create_default_context(cafile=self.ca_file)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
                status, rh, raw = r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            status, rh, raw = e.code, dict(e.headers), e.read()
        try:
            return status, rh, json.loads(raw)
        except ValueError:
            return status, rh, raw.decode(errors="replace")

    def _idp_ok(self, method, path, body=None):
        status, _, data = self.idp_request(method, path, body)
        if status != 200:
            raise RigError(f"{method} {path}: {status} {data}")
        return data

    def idp_config(self, **patch):
        """Read (no arguments) or change the IdP config: lifetime, time_offset,
        tenant_id, groups, resources, identities."""
        if not patch:
            return self._idp_ok("GET", "/control/config")
        return self._idp_ok("POST", "/control/config", patch)

    def idp_fault(self, kind, count=1, retry_after=None):
        """Queue a fault for the next `count` token requests (-1: until
        cleared). kind: "500", "429", any status 400-599, "hang", "reset",
        or "none" to clear the queue and release hung requests."""
        spec = {"kind": str(kind), "count": count}
        if retry_after is not None:
            spec["retry_after"] = retry_after
        return self._idp_ok("POST", "/control/fault", spec)

    def idp_stats(self):
        return self._idp_ok("GET", "/control/stats")

    def idp_reset(self):
        """Start-up config (defaults plus the registered app certificate), no
        faults, zero counters, no revocations, hung requests released."""
        return self._idp_ok("POST", "/control/reset", {})

    def imds_token_response(self, resource=PG_AUDIENCE, **selector):
        """The IMDS JSON answer; selector: client_id=, object_id= or msi_res_id=."""
        q = urllib.parse.urlencode({"api-version": "2018-02-01", "resource": resource, **selector})
        status, _, data = self.idp_request("GET", f"{idp_mod.IMDS_PATH}?{q}", headers={"Metadata": "true"})
        if status != 200:
            raise RigError(f"IMDS answered {status}: {data}")
        return data

    def token(self, identity=None, resource=PG_AUDIENCE):
        """An access token from IMDS. identity: None (system-assigned), a
        user-assigned identity's name, or its client id."""
        selector = {}
        if identity is not None:
            match = [i for i in self.identities["user_assigned"] if identity in (i["name"], i["client_id"])]
            selector["client_id"] = match[0]["client_id"] if match else identity
        return self.imds_token_response(resource, **selector)["access_token"]

    def identity(self, name="system"):
        """The identity dict (client_id, object_id, resource_id, db_user) by
        name: "system", a user-assigned name, or an app name."""
        ids = self.identities
        if name == "system":
            return ids["system"]
        for ident in ids["user_assigned"] + ids["apps"]:
            if ident.get("name") == name:
                return ident
        raise KeyError(name)

    def mint_token(self, db_user, aud=PG_AUDIENCE, lifetime=3600, key=None, **claims):
        """Sign a token locally with the rig's key (or `key`), for cases the
        IdP will not produce. Extra claims override the defaults."""
        now = int(time.time())
        body = {"aud": aud, "iss": f"https://sts.windows.net/{self.tenant_id}/", "iat": now,
                "nbf": now, "exp": now + lifetime, "db_user": db_user,
                "appid": "00000000-0000-0000-0000-000000000000",
                "oid": "00000000-0000-0000-0000-000000000000", "tid": self.tenant_id}
        body.update(claims)
        return idp_mod.encode_jwt(body, key if key is not None else idp_mod.read_key(self.key_file))

    def k8s_token(self, subject=None, audience=None, lifetime=3600, issuer=None):
        """A service account token from the rig's "Kubernetes" issuer, as AKS
        projects into AZURE_FEDERATED_TOKEN_FILE: {"token", "jti", "exp"}.
        Defaults: the subject and audience app `aks` federates with."""
        spec = {"lifetime": lifetime}
        for k, v in (("subject", subject), ("audience", audience), ("issuer", issuer)):
            if v is not None:
                spec[k] = v
        return self._idp_ok("POST", "/control/k8s_token", spec)

    def k8s_revoke(self, jti):
        """The Entra endpoint refuses that service account token from now on."""
        return self._idp_ok("POST", "/control/k8s_revoke", {"jti": jti})

    def decode_token(self, token):
        """Claims of a token, after checking its signature with the rig key."""
        return idp_mod.decode_jwt(token, idp_mod.read_key(self.key_file))


class _MysqlExited(RigError):
    """mariadbd exited before it answered (start-up failed)."""


# InnoDB settings shared by mariadb-install-db and my.cnf (they must agree).
_MYSQL_INNODB = (
    ("innodb_buffer_pool_size", "32M"),
    ("innodb_log_file_size", "16M"),
    ("innodb_doublewrite", "0"),
    ("innodb_flush_log_at_trx_commit", "0"),
)


def _check_mysql_name(name):
    if not name or any(c in name for c in "'`\\\"\0") or len(name) > 80:
        raise ValueError(f"unusable MariaDB user name {name!r}")


def _libpq_quote(v):
    s = str(v)
    if s and not any(c in s for c in " '\\"):
        return s
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _tail(path, n=40):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return f"({path} not readable)"


# ---------------------------------------------------------------- CLI

def main(argv=None):
    ap = argparse.ArgumentParser(description="tokenpool test rig (stand-in for Azure)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start the rig and stay in the foreground")
    up.add_argument("--dir", help="run directory (default: new one under /tmp)")
    up.add_argument("--rm", action="store_true", help="remove the run directory at stop")
    g = sub.add_parser("_guardian")
    g.add_argument("dir")
    args = ap.parse_args(argv)

    if args.cmd == "_guardian":
        _guardian(args.dir)
        return 0

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    rig = Rig(dir=args.dir, keep=False if args.rm else None)
    try:
        rig.start()
        print(f"rig up in {rig.start_seconds}s: {os.path.join(rig.dir, 'rig.json')}\n"
              f"  idp      {rig.idp_url}  (https {rig.idp_https_url})\n"
              f"  postgres host=localhost port={rig.pg_port} sslrootcert={rig.ca_file}\n"
              f"  mariadb  host=localhost port={rig.mysql_port} socket={rig.mysql_socket}\n"
              f"  token    curl -H Metadata:true '{rig.idp_url}{idp_mod.IMDS_PATH}"
              f"?api-version=2018-02-01&resource={PG_AUDIENCE}'", flush=True)
        while not stop.wait(1):
            pass
    finally:
        rig.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
