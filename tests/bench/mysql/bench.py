#!/usr/bin/env python3
"""tokenpool vs direct MariaDB (the rig's Azure MySQL stand-in), measured in one run.

Run through run.sh (it raises the open-files limit, builds tokenpool and
execs this). Everything runs on loopback against the test rig (tests/rig):

  rig         IdP (24 h tokens) + MariaDB 10.11 (TLS required; token users
              via PAM and mysql_clear_password; legacy_app with
              mysql_native_password). The bench adds `ssl-ca` (the rig CA) to
              its MariaDB and restarts it once: sysbench 1.0.20 always
              presents a client certificate (see README). sysbench tables are
              prepared once, as the token user over a direct TLS connection.
  tokenpool   transaction pooling, pool size POOL, max_clients 12000, client
              credential = `tokenpool hash` output (or the plain password:
              BENCH_CLIENT_CREDENTIAL=password), client TLS off, upstream =
              an IMDS token over verify-full TLS.
  direct      the same client programs straight to MariaDB as the token user
              with a fresh token over TLS: what an application without
              tokenpool has to do (TLS + mysql_clear_password + the server's
              token check (PAM) + a new server thread per connection). The
              ratios tp/direct use this target.
  direct_pw   the same as legacy_app (mysql_native_password over TLS):
              the classic password login, for comparison.

Benchmarks (targets interleaved and repeated REPS times, the median kept):
  ro8        sysbench oltp_read_only --threads 8, persistent connections
  ro32       the same with --threads 32 (tokenpool: 32 clients on POOL servers)
  rw8        sysbench oltp_read_write --threads 8
  ro8_reconn oltp_read_only_reconnect.lua --threads 8: the same read-only
             transaction, but each on a new connection (connect, run,
             disconnect)
  churn      mysqlslap --detach=1 --concurrency SLAP_C --query "SELECT 1":
             every query on a new connection; connections per second
All sysbench runs use --db-ps-mode=disable (text protocol; see README).
Memory: VmRSS of a fresh tokenpool at baseline and holding 1,000 and 10,000
logged-in idle clients (mywire.py).

Environment: BENCH_SECONDS (15), BENCH_REPS (3), BENCH_POOL_SIZE (20),
BENCH_TABLES (4), BENCH_TABLE_SIZE (10000), BENCH_SLAP_CONCURRENCY (10),
BENCH_PS_MODE (disable), BENCH_CLIENT_CREDENTIAL (hash | password),
BENCH_TARGETS (tokenpool,direct,direct_pw), BENCH_IDLE ("1000,10000"),
BENCH_IDLE_CONCURRENCY (64), BENCH_ONLY (comma list of ro8,ro32,rw8,
ro8_reconn,churn,rss), BENCH_OUT (JSON file), BENCH_DIR / BENCH_KEEP=1,
BENCH_CPUS_PROXY / BENCH_CPUS_CLIENT (CPU lists for pinning tokenpool / the
client programs), BENCH_NICE (-5: tokenpool, the clients and MariaDB; 0 =
leave alone), BENCH_QUIET_MAX (10) / BENCH_QUIET_CORES (0.3): before each
measured run, wait up to that many seconds for the machine to be that idle,
TOKENPOOL_BIN.
Exit status: 0 when every measurement completed, 1 when something failed
(the reason and tokenpool's log tail are printed), 130 when interrupted.
"""

import asyncio
import ctypes
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "rig"))
sys.path.insert(0, HERE)

import mywire  # noqa: E402
from rig import Rig, free_port  # noqa: E402

SYSBENCH = shutil.which("sysbench") or "/usr/bin/sysbench"
MYSQLSLAP = shutil.which("mariadb-slap") or shutil.which("mysqlslap") or "/usr/bin/mariadb-slap"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
RECONNECT_LUA = os.path.join(HERE, "oltp_read_only_reconnect.lua")
ALL_TARGETS = ("tokenpool", "direct", "direct_pw")
CLIENT_USER = "app"
CLK_TCK = os.sysconf("SC_CLK_TCK")
DIR_PREFIX = "tokenpool-mybench-"


def env_int(name, default):
    v = os.environ.get(name, "")
    return int(v) if v.strip() else default


def env_list(name, default):
    return [x.strip() for x in os.environ.get(name, default).split(",") if x.strip()]


SECONDS = env_int("BENCH_SECONDS", 15)
REPS = env_int("BENCH_REPS", 3)
POOL_SIZE = env_int("BENCH_POOL_SIZE", 20)
TABLES = env_int("BENCH_TABLES", 4)
TABLE_SIZE = env_int("BENCH_TABLE_SIZE", 10000)
SLAP_C = env_int("BENCH_SLAP_CONCURRENCY", 10)
PS_MODE = os.environ.get("BENCH_PS_MODE", "disable").strip() or "disable"
CREDENTIAL = os.environ.get("BENCH_CLIENT_CREDENTIAL", "hash").strip() or "hash"
TARGETS = tuple(env_list("BENCH_TARGETS", ",".join(ALL_TARGETS)))
IDLE_CONCURRENCY = env_int("BENCH_IDLE_CONCURRENCY", 64)
IDLE_STEPS = [int(x) for x in env_list("BENCH_IDLE", "1000,10000")]
ONLY = set(env_list("BENCH_ONLY", ""))
CPUS_PROXY = os.environ.get("BENCH_CPUS_PROXY", "")
CPUS_CLIENT = os.environ.get("BENCH_CPUS_CLIENT", "")
QUIET_MAX = env_int("BENCH_QUIET_MAX", 10)
NICE = env_int("BENCH_NICE", -5)
QUIET_CORES = float(os.environ.get("BENCH_QUIET_CORES", "0.3"))

# key, label, kind, script or None, threads; goal = minimum tokenpool/direct.
SCENARIOS = [
    ("ro8", "oltp_read_only 8 thr persistent", "sysbench", "oltp_read_only", 8),
    ("ro32", "oltp_read_only 32 thr persistent", "sysbench", "oltp_read_only", 32),
    ("rw8", "oltp_read_write 8 thr persistent", "sysbench", "oltp_read_write", 8),
    ("ro8_reconn", "oltp_read_only 8 thr, reconnect/txn", "sysbench", RECONNECT_LUA, 8),
    ("churn", f"mysqlslap churn -c {SLAP_C} (connect+SELECT 1)", "slap", None, SLAP_C),
]
SCENARIO_KEYS = [s[0] for s in SCENARIOS]
GOALS = {"ro8": 0.8, "ro32": 0.8, "churn": 5.0}


class BenchError(RuntimeError):
    pass


class Interrupted(BaseException):
    pass


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cpu_set(spec):
    out = set()
    for part in spec.split(","):
        if "-" in part:
            a, b = part.split("-")
            out.update(range(int(a), int(b) + 1))
        elif part.strip():
            out.add(int(part))
    return out


def child_setup(cpus=""):
    """preexec_fn: open-files limit to the hard limit, optional CPU pinning,
    the bench's priority, and SIGTERM when this (parent) process dies."""
    def f():
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        if cpus:
            os.sched_setaffinity(0, cpu_set(cpus))
        if NICE:
            os.setpriority(os.PRIO_PROCESS, 0, NICE)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    return f


def wait_port(port, proc, what, logfile, timeout=15):
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with {proc.returncode} before listening:\n{tail(logfile)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise BenchError(f"{what} did not listen on {port} within {timeout}s:\n{tail(logfile)}")
        time.sleep(0.05)


def tail(path, n=60):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError as e:
        return f"({path}: {e})"


# ---------------------------------------------------------------- CPU accounting

def proc_ticks(pid, children=False):
    """utime+stime of a process (all its threads), optionally with its reaped
    children (MariaDB's PAM helper auth_pam_tool runs once per token login)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    t = int(fields[11]) + int(fields[12])
    if children:
        t += int(fields[13]) + int(fields[14])
    return t


def machine_ticks():
    """(busy, total) ticks of the whole machine: busy = user + nice + system
    + irq + softirq + steal."""
    v = machine_split()
    return v["busy"], v["total"]


def machine_split():
    """/proc/stat's first line, in ticks: irq+softirq (loopback TCP is mostly
    softirq work; without CONFIG_IRQ_TIME_ACCOUNTING those ticks are also
    charged to the process that was running, usually one of ours), steal
    (the hypervisor gave this vCPU to someone else), busy and total."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return {"irq": v[5] + v[6], "steal": v[7],
            "busy": sum(v[:8]) - v[3] - v[4], "total": sum(v[:8])}


def wait_quiet():
    """Before a measured run: wait (up to QUIET_MAX s) until the machine is
    nearly idle -- our own processes are idle between runs, so what is busy
    then is someone else's. Returns (cores busy in the last second, seconds
    waited)."""
    t0 = time.monotonic()
    while True:
        b0, _ = machine_ticks()
        time.sleep(1)
        b1, _ = machine_ticks()
        busy = (b1 - b0) / CLK_TCK
        waited = time.monotonic() - t0 - 1
        if busy <= QUIET_CORES or waited >= QUIET_MAX:
            return busy, waited


def proc_start(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def sweep_stale_dirs():
    """Remove run directories of earlier runs that were killed outright."""
    tmp = tempfile.gettempdir()
    for name in os.listdir(tmp):
        d = os.path.join(tmp, name)
        if not name.startswith(DIR_PREFIX) or not os.path.isdir(d):
            continue
        try:
            with open(os.path.join(d, "owner")) as f:
                pid, start = (int(x) for x in f.read().split())
        except (OSError, ValueError):
            continue
        if proc_start(pid) != start:
            shutil.rmtree(d, ignore_errors=True)


def vm_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


def clean_env(**extra):
    """The client programs' environment: none of the caller's MYSQL_*
    settings (libmariadb reads MYSQL_PWD, MYSQL_HOST, ...), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MYSQL", "MARIADB", "LIBMYSQL"))}
    env.update(extra)
    return env


# ---------------------------------------------------------------- the bench

class Bench:
    def __init__(self):
        self.proc = None         # tokenpool
        self.log_path = None
        self.port = None
        self.http_port = None
        self.rig = None
        self.client = None       # the sysbench/mysqlslap run in flight
        self.failures = []
        self.notes = []
        self.results = {"config": {}, "runs": [], "summary": {}, "rss": {}, "notes": self.notes}
        self.tp_bin = os.environ.get("TOKENPOOL_BIN") or os.path.join(REPO, "build", "tokenpool")
        self.slap_queries = {}   # target -> mysqlslap --number-of-queries for ~SECONDS
        explicit = os.environ.get("BENCH_DIR")
        self.keep = bool(explicit) or os.environ.get("BENCH_KEEP") == "1"
        if explicit:
            os.makedirs(explicit, exist_ok=True)
            if os.listdir(explicit):
                raise BenchError(f"BENCH_DIR {explicit} is not empty")
            self.dir = os.path.abspath(explicit)
        else:
            sweep_stale_dirs()
            self.dir = tempfile.mkdtemp(prefix=DIR_PREFIX)
        os.chmod(self.dir, 0o755)
        with open(os.path.join(self.dir, "owner"), "w") as f:
            f.write(f"{os.getpid()} {proc_start(os.getpid())}\n")
        self.client_password = "bench-" + os.urandom(9).hex()
        p = subprocess.run([self.tp_bin, "hash"], input=self.client_password, capture_output=True,
                           text=True, timeout=30)
        if p.returncode != 0:
            raise BenchError(f"tokenpool hash failed ({p.returncode}): {p.stderr.strip()}")
        self.client_hashes = [h for h in p.stdout.split() if h]
        if not self.client_hashes:
            raise BenchError("tokenpool hash printed nothing")

    # -- set-up

    def start_rig(self):
        log(f"run dir {self.dir}; starting the rig")
        self.rig = Rig(dir=os.path.join(self.dir, "rig"), keep=True)
        self.rig.start()
        self.rig.idp_config(lifetime=24 * 3600)
        self.db = self.rig.mysql_database
        self.token_user = self.rig.identity("system")["db_user"]
        self.token = self.rig.token()          # 24 h: good for every direct run
        self.results["config"]["token_bytes"] = len(self.token)
        self.client_dir = os.path.join(self.dir, "client")
        os.makedirs(self.client_dir)
        self.make_client_tls()
        self.mysql_accept_client_certs()

    def make_client_tls(self):
        """sysbench 1.0.20's --mysql-ssl=on calls mysql_ssl_set() with the
        fixed names client-key.pem, client-cert.pem and cacert.pem in its
        working directory (there are no options for them) and fails when one
        is missing. So its working directory gets the rig CA and a client
        certificate issued by it."""
        d = self.client_dir
        shutil.copyfile(self.rig.ca_file, os.path.join(d, "cacert.pem"))
        key, csr, crt = (os.path.join(d, n) for n in ("client-key.pem", "client.csr", "client-cert.pem"))
        for cmd in ([OPENSSL, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
                     "-subj", "/CN=tokenpool-bench-client"],
                    [OPENSSL, "x509", "-req", "-in", csr, "-CA", self.rig.ca_file, "-CAkey",
                     self.rig.ca_key_file, "-set_serial", str(int.from_bytes(os.urandom(8), "big")),
                     "-days", "2", "-out", crt]):
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            if p.returncode != 0:
                raise BenchError(f"{' '.join(cmd[:2])} failed: {p.stderr.strip()}")

    def mysql_accept_client_certs(self):
        """MariaDB asks every TLS client for a certificate; one it cannot
        verify ends the connection ('Lost connection ... at sending
        authentication information', errno 104). The rig's server has no
        ssl-ca, so sysbench's certificate (above) could never pass: give
        this rig's MariaDB the rig CA and restart it. Clients that present
        no certificate (tokenpool, mysqlslap, pymysql) are not affected."""
        path = self.rig.mysql_config_file
        with open(path) as f:
            text = f.read()
        if "\nssl-ca" not in text:
            text = text.replace("\nssl-key", f"\nssl-ca = {self.rig.ca_file}\nssl-key", 1)
            with open(path, "w") as f:
                f.write(text)
            self.rig.restart_mysql()
        got = self.rig.mysql_admin("SELECT @@ssl_ca")
        if not got or got[0][0] != self.rig.ca_file:
            raise BenchError(f"MariaDB did not take ssl_ca (got {got})")

    def renice_mysql(self):
        """MariaDB at the same priority as tokenpool and the clients: every
        thread (setpriority works per thread on Linux; new connection
        threads inherit the value of the thread that creates them)."""
        if not NICE:
            return
        pid = self.rig.mysql_server_pid()
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                os.setpriority(os.PRIO_PROCESS, int(tid), NICE)
            except OSError:
                pass

    def sysbench_prepare(self):
        log(f"sysbench prepare --tables={TABLES} --table-size={TABLE_SIZE} as token user "
            f"{self.token_user} (direct, TLS)")
        cmd = [SYSBENCH, "oltp_read_write", "--db-driver=mysql"] + self.sysbench_conn("direct") \
            + [f"--tables={TABLES}", f"--table-size={TABLE_SIZE}", "prepare"]
        p = subprocess.run(cmd, cwd=self.client_dir, env=self.client_env("direct"),
                           capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            raise BenchError(f"sysbench prepare failed ({p.returncode}):\n{p.stdout[-2000:]}{p.stderr[-2000:]}")

    def start_tokenpool(self, tag=""):
        d = os.path.join(self.dir, "tokenpool")
        os.makedirs(d, exist_ok=True)
        port, http_port = free_port(), free_port()
        client = {"user": CLIENT_USER}
        if CREDENTIAL == "password":
            client["password"] = self.client_password
        else:
            client["password_hash"] = self.client_hashes
        cfg = {
            "log": {"level": "warn", "format": "text"},
            "http": {"listen": f"127.0.0.1:{http_port}"},
            "identity": {"source": "imds", "imds_endpoint": self.rig.imds_endpoint},
            "pools": [{
                "name": self.db, "protocol": "mysql", "listen": f"127.0.0.1:{port}",
                "server": {"host": self.rig.mysql_host, "port": self.rig.mysql_port, "database": self.db,
                           "user": self.token_user, "auth": "token", "scope": self.rig.mysql_scope,
                           "tls": {"mode": "verify-full", "ca_file": self.rig.ca_file,
                                   "server_name": self.rig.mysql_host}},
                "clients": [client],
                "client_tls": {"mode": "disable"},
                "pool": {"mode": "transaction", "size": POOL_SIZE, "max_clients": 12000},
            }],
        }
        conf = os.path.join(d, f"tokenpool{tag}.json")
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(cfg, f, indent=2)
        logf = os.path.join(d, f"tokenpool{tag}.log")
        with open(logf, "ab") as out:
            p = subprocess.Popen([self.tp_bin, "run", "-c", conf], stdin=subprocess.DEVNULL,
                                 stdout=out, stderr=subprocess.STDOUT, cwd=d,
                                 env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                                 preexec_fn=child_setup(cpus=CPUS_PROXY), start_new_session=True)
        self.proc, self.log_path, self.port, self.http_port = p, logf, port, http_port
        wait_port(port, p, "tokenpool", logf)

    def stop_tokenpool(self):
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def check_alive(self):
        p = self.proc
        if p is not None and p.poll() is not None:
            msg = (f"tokenpool exited with status {p.returncode} (signal {-p.returncode})"
                   if p.returncode < 0 else f"tokenpool exited with status {p.returncode}")
            self.fail(f"{msg}; log tail ({self.log_path}):\n{tail(self.log_path)}")
            self.proc = None
            log("restarting tokenpool")
            self.start_tokenpool(tag=f"-{int(time.time())}")
            return False
        return True

    def fail(self, msg):
        self.failures.append(msg)
        log("FAILURE: " + msg)

    def tp_metric(self, name):
        """Sum of one counter from tokenpool's /metrics (None if unreachable)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return None
        total = None
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total = (total or 0) + float(line.rsplit(" ", 1)[1])
        return total

    def server_connections(self):
        """MariaDB's `Connections` counter (each TCP connection attempt)."""
        return int(self.rig.mysql_admin("SHOW GLOBAL STATUS LIKE 'Connections'")[0][1])

    # -- how each target is reached

    def target_user(self, target):
        return {"tokenpool": CLIENT_USER, "direct": self.token_user,
                "direct_pw": self.rig.mysql_password_user}[target]

    def client_env(self, target):
        """The password goes in MYSQL_PWD (libmariadb takes it when the
        program passes none), never in argv. libmariadb answers MariaDB's
        switch to mysql_clear_password without being told (Oracle's
        libmysqlclient would need LIBMYSQL_ENABLE_CLEARTEXT_PLUGIN=1), but
        it loads that plugin (a .so) at the first switch, and threads that
        get their first switch at the same moment race: one fails with 1045
        "Plugin mysql_clear_password could not be loaded: it is already
        loaded" (seen with sysbench --threads 32). LIBMYSQL_PLUGINS loads it
        once, in mysql_library_init(), before any thread connects."""
        pw = {"tokenpool": self.client_password, "direct": self.token,
              "direct_pw": self.rig.mysql_password}[target]
        if target == "direct":
            return clean_env(MYSQL_PWD=pw, LIBMYSQL_PLUGINS="mysql_clear_password")
        return clean_env(MYSQL_PWD=pw)

    def sysbench_conn(self, target):
        args = [f"--mysql-user={self.target_user(target)}", f"--mysql-db={self.db}"]
        if target == "tokenpool":
            return args + ["--mysql-host=127.0.0.1", f"--mysql-port={self.port}"]
        # TLS with the rig CA as cacert.pem; sysbench cannot ask libmariadb
        # to verify the server's name (mysqlslap below does).
        return args + [f"--mysql-host={self.rig.mysql_hostaddr}", f"--mysql-port={self.rig.mysql_port}",
                       "--mysql-ssl=on"]

    def slap_conn(self, target):
        args = ["--no-defaults", "--protocol=tcp", "-u", self.target_user(target)]
        if target == "tokenpool":
            return args + ["-h", "127.0.0.1", "-P", str(self.port), "--skip-ssl"]
        return args + ["-h", self.rig.mysql_host, "-P", str(self.rig.mysql_port),
                       f"--ssl-ca={self.rig.ca_file}", "--ssl-verify-server-cert"]

    def smoke(self):
        """Each target logs in and reaches MariaDB as the expected user, and
        sees the sysbench tables."""
        want = {"tokenpool": self.token_user, "direct": self.token_user,
                "direct_pw": self.rig.mysql_password_user}
        for t in TARGETS:
            if t == "tokenpool":
                async def q():
                    c = await mywire.connect("127.0.0.1", self.port, CLIENT_USER, self.client_password, self.db)
                    try:
                        return await c.query("SELECT CURRENT_USER(), COUNT(*) FROM sbtest1")
                    finally:
                        c.close()
                rows = asyncio.run(q())
                user, n = rows[0][0], int(rows[0][1])
            else:
                c = self.rig.mysql_connect(self.target_user(t), self.client_env(t)["MYSQL_PWD"])
                try:
                    with c.cursor() as cur:
                        cur.execute("SELECT CURRENT_USER(), COUNT(*) FROM sbtest1")
                        user, n = cur.fetchone()
                finally:
                    c.close()
            user = user.split("@")[0]
            if user != want[t] or n != TABLE_SIZE:
                raise BenchError(f"{t}: logged in as {user}, sbtest1 has {n} rows "
                                 f"(want {want[t]}, {TABLE_SIZE})")
        log(f"smoke test ok: tokenpool and direct reach MariaDB as {self.token_user}"
            + (f", direct_pw as {self.rig.mysql_password_user}" if "direct_pw" in TARGETS else ""))

    # -- one measured run

    def run_client(self, target, kind, script, threads, seconds, quiet=True, slap_queries=None):
        if kind == "sysbench":
            cmd = [SYSBENCH, script, "--db-driver=mysql"] + self.sysbench_conn(target) + [
                f"--tables={TABLES}", f"--table-size={TABLE_SIZE}", f"--threads={threads}",
                f"--time={seconds}", "--events=0", f"--db-ps-mode={PS_MODE}", "--percentile=95",
                "run"]
            timeout = seconds + 120
        else:
            cmd = [MYSQLSLAP] + self.slap_conn(target) + [
                f"--create-schema={self.db}", "--no-drop", "--query=SELECT 1",
                f"--concurrency={threads}", "--iterations=1", f"--number-of-queries={slap_queries}",
                "--detach=1"]
            timeout = max(120, seconds * 20)
        load, waited = wait_quiet() if quiet else (None, 0.0)
        mysqld = self.rig.mysql_server_pid()
        proxy = self.proc if target == "tokenpool" else None
        conns0 = self.tp_metric("tokenpool_client_connections_total") if proxy else self.server_connections()
        before = {
            "proxy": proc_ticks(proxy.pid) if proxy else 0,
            "mysql": proc_ticks(mysqld, children=True),
            "client": resource.getrusage(resource.RUSAGE_CHILDREN),
            "machine": machine_split(),
        }
        t0 = time.monotonic()
        self.client = subprocess.Popen(cmd, cwd=self.client_dir, env=self.client_env(target),
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                       preexec_fn=child_setup(cpus=CPUS_CLIENT))
        try:
            out, err = self.client.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.client.kill()
            out, err = self.client.communicate()
            err += f"\n({os.path.basename(cmd[0])} timed out after {timeout}s)"
        rc = self.client.returncode
        self.client = None
        wall = time.monotonic() - t0
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        m1, m0 = machine_split(), before["machine"]
        cpu = {
            "proxy_s": (proc_ticks(proxy.pid) - before["proxy"]) / CLK_TCK if proxy else None,
            "mysql_s": (proc_ticks(mysqld, children=True) - before["mysql"]) / CLK_TCK,
            "client_s": (ru.ru_utime + ru.ru_stime - before["client"].ru_utime - before["client"].ru_stime),
            "irq_s": (m1["irq"] - m0["irq"]) / CLK_TCK,
            "steal_s": (m1["steal"] - m0["steal"]) / CLK_TCK,
            "machine_busy_s": (m1["busy"] - m0["busy"]) / CLK_TCK,
            "machine_total_s": (m1["total"] - m0["total"]) / CLK_TCK,
            "wall_s": wall,
        }
        ours = sum(v for k, v in cpu.items() if k in ("proxy_s", "mysql_s", "client_s") and v)
        cpu["other_s"] = max(0.0, cpu["machine_busy_s"] - ours)
        conns1 = self.tp_metric("tokenpool_client_connections_total") if proxy else self.server_connections()
        res = {"target": target, "cmd": " ".join(os.path.basename(c) for c in cmd[:2]) + " "
               + " ".join(cmd[2:]), "rc": rc, "cpu": cpu,
               "load_before_cores": load and round(load, 2), "quiet_wait_s": round(waited, 1),
               "connections": int(conns1 - conns0) if conns0 is not None and conns1 is not None else None}
        if kind == "sysbench":
            parse_sysbench(out, res)
            bad = res["rate"] is None or "FATAL" in out + err
        else:
            parse_slap(out, res, slap_queries, threads)
            bad = res["rate"] is None
        if res["events"] and proxy is not None:
            res["proxy_us_per_event"] = cpu["proxy_s"] * 1e6 / res["events"]
        if rc != 0 or bad:
            res["error"] = (out[-1500:] + err[-1500:]).strip()
            self.fail(f"{os.path.basename(cmd[0])} against {target} ({os.path.basename(str(script or ''))} "
                      f"threads={threads}) exited {rc}:\n{res['error']}")
        if proxy is not None:
            self.check_alive()
        return res

    # -- the scenarios

    def calibrate_slap(self):
        """mysqlslap runs a number of queries, not a duration: find each
        target's rate with a short run and size the measured runs to last
        about SECONDS."""
        for t in TARGETS:
            n = SLAP_C * 30
            r = self.run_client(t, "slap", None, SLAP_C, 2, quiet=False, slap_queries=n)
            rate = r.get("rate") or 0
            self.slap_queries[t] = max(SLAP_C * 20, int(rate * SECONDS))
            log(f"   calibration: {t} {rate:,.0f} connections/s -> --number-of-queries="
                f"{self.slap_queries[t]}")

    def benchmarks(self):
        todo = [s for s in SCENARIOS if not ONLY or s[0] in ONLY]
        if not todo:
            return
        log("warm-up: 3 s of oltp_read_only per target (tokenpool opens its server connections)")
        for t in TARGETS:
            self.run_client(t, "sysbench", "oltp_read_only", 8, 3, quiet=False)
        if any(s[2] == "slap" for s in todo):
            self.calibrate_slap()
        n = len(TARGETS)
        for key, label, kind, script, threads in todo:
            per_target = {t: [] for t in TARGETS}
            for rep in range(REPS):
                order = TARGETS[rep % n:] + TARGETS[:rep % n]   # rotate who goes first
                for t in order:
                    log(f"{key} rep {rep + 1}/{REPS}: {t}")
                    r = self.run_client(t, kind, script, threads, SECONDS,
                                        slap_queries=self.slap_queries.get(t))
                    r.update(scenario=key, rep=rep + 1)
                    self.results["runs"].append(r)
                    per_target[t].append(r)
                    if kind == "slap" and r.get("rate"):
                        # Keep the next run near SECONDS even when the
                        # calibration ran on a busier (or idler) machine.
                        self.slap_queries[t] = max(SLAP_C * 20, int(r["rate"] * SECONDS))
                    c = r["cpu"]
                    log(f"   rate={fmt_num(r['rate'])}/s lat_avg={fmt_num(r['lat_avg_ms'])} ms "
                        f"p95={fmt_num(r['lat_p95_ms'])} ms conns={r['connections']} "
                        f"proxy_cpu={fmt_num(c['proxy_s'])}s mysql_cpu={c['mysql_s']:.1f}s "
                        f"client_cpu={c['client_s']:.1f}s other={c['other_s']:.1f}s "
                        f"steal={c['steal_s']:.1f}s")
            summ = {}
            for t, runs in per_target.items():
                ok = [r for r in runs if "error" not in r]

                def med(field):
                    vals = [r[field] for r in ok if r.get(field) is not None]
                    return statistics.median(vals) if vals else None

                def med_cpu(field):
                    vals = [r["cpu"][field] / r["cpu"]["wall_s"] for r in ok
                            if r["cpu"].get(field) is not None]
                    return statistics.median(vals) if vals else None

                summ[t] = {f: med(f) for f in ("rate", "qps", "lat_avg_ms", "lat_p95_ms",
                                               "proxy_us_per_event")}
                summ[t]["rate_all"] = [r.get("rate") for r in runs]
                summ[t]["cores"] = {k: med_cpu(k) for k in ("proxy_s", "mysql_s", "client_s", "irq_s",
                                                            "other_s", "steal_s")}
            self.results["summary"][key] = {"label": label, "kind": kind, "targets": summ}

    # -- memory

    def rss_phase(self):
        if ONLY and "rss" not in ONLY:
            return
        mywire.raise_nofile()
        # A fresh process, so the benchmarks' allocations do not count.
        self.stop_tokenpool()
        self.start_tokenpool(tag="-rss")
        pid = self.proc.pid
        log(f"rss: tokenpool pid {pid}, opening idle clients {IDLE_STEPS}")
        try:
            self.results["rss"]["tokenpool"] = asyncio.run(self._rss(pid, self.port))
        except Exception as e:  # noqa: BLE001
            self.fail(f"rss phase: {type(e).__name__}: {e}\n{tail(self.log_path)}")
        self.check_alive()

    async def _rss(self, pid, port):
        # Warm-up: one login and a query, so tokenpool has its token and a
        # server connection before the baseline is taken.
        c = await mywire.connect("127.0.0.1", port, CLIENT_USER, self.client_password, self.db)
        await c.query("SELECT 1")
        c.close()
        await asyncio.sleep(1)
        out = {"baseline_kb": vm_rss_kb(pid), "steps": []}
        conns = []
        try:
            for n in IDLE_STEPS:
                need = n - len(conns)
                _, secs, errors = await mywire.open_many(need, "127.0.0.1", port, CLIENT_USER,
                                                         self.client_password, self.db,
                                                         concurrency=IDLE_CONCURRENCY, into=conns)
                if errors:
                    raise BenchError(f"{len(errors)} of {need} logins failed (first: {errors[0]})")
                # Idle, but still served: a query on a sample of them proves
                # tokenpool has not wedged.
                for probe in conns[:: max(1, len(conns) // 10)]:
                    await probe.query("SELECT 1")
                await asyncio.sleep(1)
                rss = vm_rss_kb(pid)
                step = {"clients": len(conns), "rss_kb": rss, "login_s": round(secs, 2),
                        "bytes_per_client": (rss - out["baseline_kb"]) * 1024 / len(conns)}
                out["steps"].append(step)
                log(f"   {len(conns)} idle clients, VmRSS {rss} kB "
                    f"({step['bytes_per_client']:.0f} B/client, logins took {secs:.1f}s)")
        finally:
            for c in conns:
                c.close()
            await asyncio.sleep(0.5)
        out["after_close_kb"] = vm_rss_kb(pid)
        return out

    # -- teardown

    def cleanup(self):
        if self.client is not None and self.client.poll() is None:
            self.client.kill()
            self.client.wait()
        self.stop_tokenpool()
        # tokenpool's logs (level warn) go into the JSON before the run
        # directory is removed.
        self.results["logs"] = {}
        p = os.path.join(self.dir, "tokenpool")
        if os.path.isdir(p):
            for name in sorted(os.listdir(p)):
                if name.endswith(".log"):
                    self.results["logs"][name] = tail(os.path.join(p, name), 40)
        if self.rig is not None:
            self.rig.stop()
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            log(f"kept {self.dir}")


# ---------------------------------------------------------------- output parsing

def _num(pattern, text, group=1, cast=float):
    m = re.search(pattern, text, re.M)
    return cast(m.group(group)) if m else None


def parse_sysbench(out, res):
    res["events"] = _num(r"^\s+transactions:\s+(\d+)", out, cast=int)
    res["rate"] = _num(r"^\s+transactions:\s+\d+\s+\(([\d.]+) per sec", out)
    res["qps"] = _num(r"^\s+queries:\s+\d+\s+\(([\d.]+) per sec", out)
    res["lat_avg_ms"] = _num(r"^\s+avg:\s+([\d.]+)", out)
    res["lat_p95_ms"] = _num(r"^\s+95th percentile:\s+([\d.]+)", out)
    res["ignored_errors"] = _num(r"^\s+ignored errors:\s+(\d+)", out, cast=int)
    res["reconnects"] = _num(r"^\s+reconnects:\s+(\d+)", out, cast=int)


def parse_slap(out, res, queries, concurrency):
    secs = _num(r"Average number of seconds to run all queries: ([\d.]+) seconds", out)
    res["slap_queries"] = queries
    res["slap_seconds"] = secs
    res["events"] = queries if secs else None
    res["rate"] = queries / secs if secs else None
    res["qps"] = None
    # Each of the `concurrency` clients does connect + query + disconnect
    # in a loop: the mean time of one such cycle.
    res["lat_avg_ms"] = concurrency * secs * 1000 / queries if secs else None
    res["lat_p95_ms"] = None


# ---------------------------------------------------------------- report

def fmt_num(v, digits=None):
    if v is None:
        return "-"
    if digits is None:
        digits = 0 if abs(v) >= 100 else (1 if abs(v) >= 10 else 2)
    return f"{v:,.{digits}f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def build_rows(results):
    """(metric, tp, direct, direct_pw, tp/direct, tp/direct_pw, note) rows."""
    rows = []
    S = results["summary"]
    for key, label, kind, *_ in SCENARIOS:
        if key not in S:
            continue
        t = S[key]["targets"]
        v = {k: t.get(k, {}) for k in ALL_TARGETS}

        def row(metric, field, higher_better, goal=None, direct=True):
            a = v["tokenpool"].get(field)
            d = v["direct"].get(field) if direct else None
            p = v["direct_pw"].get(field) if direct else None
            r1 = ratio(a, d)
            note = ""
            if goal is not None and r1 is not None:
                note = f"goal >= {goal}x direct: {'met' if r1 >= goal else 'MISSED'}"
            elif r1 is not None and not higher_better:
                note = "lower is better"
            rows.append((f"{label}: {metric}", a, d, p, r1, ratio(a, p), note))

        if kind == "slap":
            row("connections/s", "rate", True, GOALS.get(key))
            row("connect+query+close ms", "lat_avg_ms", False)
            row("proxy CPU us/connection", "proxy_us_per_event", False, direct=False)
        else:
            row("TPS", "rate", True, GOALS.get(key))
            row("QPS", "qps", True)
            row("latency avg ms", "lat_avg_ms", False)
            row("latency p95 ms", "lat_p95_ms", False)
            row("proxy CPU us/txn", "proxy_us_per_event", False, direct=False)
    tp = results.get("rss", {}).get("tokenpool")
    if tp:
        rows.append(("RSS baseline kB", tp.get("baseline_kb"), None, None, None, None, ""))
        for s in tp.get("steps", []):
            rows.append((f"RSS with {s['clients']:,} idle clients kB", s["rss_kb"], None, None, None, None, ""))
        for s in tp.get("steps", []):
            rows.append((f"RSS per idle client @{s['clients']:,} bytes", s["bytes_per_client"], None, None,
                         None, None, ""))
    return rows


def print_table(rows, out=sys.stdout):
    hdr = ("metric", "tokenpool", "direct", "direct_pw", "tp/direct", "tp/direct_pw", "")
    cells = [hdr] + [(m, fmt_num(a), fmt_num(d), fmt_num(p),
                      fmt_num(r1, 2) if r1 is not None else "-",
                      fmt_num(r2, 2) if r2 is not None else "-", note)
                     for m, a, d, p, r1, r2, note in rows]
    w = [max(len(c[i]) for c in cells) for i in range(len(hdr))]
    for n, c in enumerate(cells):
        print("  ".join([c[0].ljust(w[0])] + [c[i].rjust(w[i]) for i in range(1, 6)] + [c[6]]).rstrip(),
              file=out)
        if n == 0:
            print("  ".join("-" * x for x in w[:6]), file=out)


def print_cpu(results, out=sys.stdout):
    """Where the CPU went (cores used, median over reps) per scenario/target."""
    S = results["summary"]
    if not S:
        return
    width = max(len(s[1]) for s in SCENARIOS if s[0] in S)
    print(f"\nCPU used during the runs, in cores of {os.cpu_count()} "
          "(tokenpool / mariadb / client program / everything else):", file=out)
    for key, label, *_ in SCENARIOS:
        if key not in S:
            continue
        parts = []
        for t in TARGETS:
            c = S[key]["targets"][t]["cores"]
            parts.append(f"{t} {fmt_num(c['proxy_s'], 2)}/{fmt_num(c['mysql_s'], 2)}/"
                         f"{fmt_num(c['client_s'], 2)}/{fmt_num(c['other_s'], 2)}")
        print(f"  {label:{width}s} " + "   ".join(parts), file=out)


def tool_version(cmd):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        line = (p.stdout or p.stderr).strip().splitlines()[0]
        return re.sub(r"^/\S*/", "", re.sub(r"\s+", " ", line))
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def main():
    t_start = time.monotonic()
    bench = None
    interrupted = []

    def on_signal(signum, _frame):
        if not interrupted:
            interrupted.append(signum)
            raise Interrupted(signal.Signals(signum).name)

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    rc = 0
    try:
        if os.geteuid() != 0:
            raise BenchError("run as root (the rig needs it)")
        if not os.access(os.environ.get("TOKENPOOL_BIN") or os.path.join(REPO, "build", "tokenpool"),
                         os.X_OK):
            raise BenchError("tokenpool binary not found: build it or set TOKENPOOL_BIN")
        for f in (SYSBENCH, MYSQLSLAP, OPENSSL):
            if not os.access(f, os.X_OK):
                raise BenchError(f"{f} missing (apt-get install -y sysbench mariadb-client openssl)")
        bad = [t for t in TARGETS if t not in ALL_TARGETS]
        if bad or "tokenpool" not in TARGETS or "direct" not in TARGETS:
            raise BenchError(f"BENCH_TARGETS must name tokenpool and direct (and may name direct_pw): {bad}")
        bad = ONLY - set(SCENARIO_KEYS) - {"rss"}
        if bad:
            raise BenchError(f"BENCH_ONLY: unknown {sorted(bad)} (known: {', '.join(SCENARIO_KEYS)}, rss)")
        if CREDENTIAL not in ("hash", "password"):
            raise BenchError("BENCH_CLIENT_CREDENTIAL must be hash or password")
        bench = Bench()
        bench.results["config"].update(
            seconds=SECONDS, reps=REPS, pool_size=POOL_SIZE, tables=TABLES, table_size=TABLE_SIZE,
            slap_concurrency=SLAP_C, ps_mode=PS_MODE, client_credential=CREDENTIAL,
            targets=list(TARGETS), pool_mode="transaction", idle_steps=IDLE_STEPS,
            cpus_proxy=CPUS_PROXY or None, cpus_client=CPUS_CLIENT or None, nice=NICE,
            nproc=os.cpu_count(),
            tokenpool=tool_version([bench.tp_bin, "--version"]),
            sysbench=tool_version([SYSBENCH, "--version"]),
            mysqlslap=tool_version([MYSQLSLAP, "--version"]),
            mariadbd=tool_version(["/usr/sbin/mariadbd", "--version"]))
        bench.start_rig()
        bench.sysbench_prepare()
        bench.renice_mysql()
        bench.start_tokenpool()
        bench.smoke()
        bench.benchmarks()
        bench.rss_phase()
    except Interrupted as e:
        log(f"interrupted ({e}); stopping everything")
        rc = 130
    except Exception as e:  # noqa: BLE001
        log(f"error: {type(e).__name__}: {e}")
        traceback.print_exc()
        if bench is not None and bench.log_path:
            log(f"tokenpool log tail ({bench.log_path}):\n{tail(bench.log_path)}")
        rc = 1
    finally:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        if bench is not None:
            try:
                bench.cleanup()
            except Exception as e:  # noqa: BLE001
                log(f"cleanup: {type(e).__name__}: {e}")
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_DFL)
    if bench is None:
        return rc or 1
    res = bench.results
    res["elapsed_s"] = round(time.monotonic() - t_start, 1)
    res["failures"] = bench.failures
    if rc == 0 and bench.failures:
        rc = 1
    rows = build_rows(res)
    res["table"] = [dict(zip(("metric", "tokenpool", "direct", "direct_pw", "tp_over_direct",
                              "tp_over_direct_pw", "note"), r)) for r in rows]
    if rows:
        c = res["config"]
        print(f"\ntokenpool vs direct MariaDB -- {c['tokenpool']}; {c['sysbench']}; {c['mysqlslap']}; "
              f"{c['nproc']} CPUs")
        print(f"sysbench --time {SECONDS} --tables {TABLES} --table-size {TABLE_SIZE} "
              f"--db-ps-mode {PS_MODE}; transaction pooling, pool size {POOL_SIZE}; targets "
              f"interleaved, {REPS} reps each, median shown"
              + (" (median of 2 = mean)" if REPS == 2 else "")
              + (f"; nice {NICE} for tokenpool, clients and MariaDB" if NICE else "")
              + (f"; tokenpool on CPUs {CPUS_PROXY}" if CPUS_PROXY else "")
              + (f"; clients on CPUs {CPUS_CLIENT}" if CPUS_CLIENT else ""))
        print(f"tokenpool: clients over plain TCP, mysql_native_password against a "
              f"{'stored hash' if CREDENTIAL == 'hash' else 'plain password'}; upstream: pooled "
              f"verify-full TLS connections logged in with an Entra-style token.")
        print(f"direct: no pool -- every connection does TLS + mysql_clear_password with a "
              f"{c.get('token_bytes', '?')}-byte token checked by the server (PAM) + a new server "
              f"thread; the tp/direct ratio uses it.")
        print("direct_pw: the same over TLS as legacy_app with mysql_native_password (no token).\n")
        print_table(rows)
        print_cpu(res)
        notes = list(bench.notes)
        other = [r["cpu"]["other_s"] / r["cpu"]["wall_s"] for r in res["runs"] if r["cpu"]["wall_s"]]
        if other and max(other) > 0.2:
            notes.append(f"other processes on this machine used up to {max(other):.2f} cores during "
                         f"some runs: expect noise (see runs[].cpu in the JSON).")
        steal = [r["cpu"]["steal_s"] / r["cpu"]["wall_s"] for r in res["runs"] if r["cpu"]["wall_s"]]
        if steal and max(steal) > 0.1:
            notes.append(f"the hypervisor took up to {max(steal):.2f} cores from this VM (steal) "
                         f"during some runs: expect noise.")
        for n in notes:
            print(f"\nnote: {n}")
    if bench.failures:
        print("\nFAILURES:")
        for f in bench.failures:
            print("  - " + f.replace("\n", "\n    "))
    print(f"\ntotal runtime {res['elapsed_s']}s")
    out = os.environ.get("BENCH_OUT")
    if out:
        with open(out, "w") as f:
            json.dump(res, f, indent=2)
        print(f"results: {out}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
