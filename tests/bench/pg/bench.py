#!/usr/bin/env python3
"""tokenpool vs PgBouncer vs direct PostgreSQL, measured in one run.

Run through run.sh (it raises the open-files limit, builds tokenpool and
execs this). Everything runs on loopback against the test rig (tests/rig):

  rig         IdP (24 h tokens) + PostgreSQL 15 (token users over TLS via
              PAM, SCRAM password roles); pgbench -i -s SCALE once, as the
              token user over a direct verified-TLS connection.
  tokenpool   transaction pooling, pool size POOL, max_clients 12000, client
              credential = SCRAM verifier, client TLS off, upstream token over
              verify-full TLS.
  pgbouncer   Debian's PgBouncer as OS user postgres, same pool size/mode,
              auth_type scram-sha-256 with the same verifier in its
              auth_file, server_tls_sslmode verify-full with the rig CA, the
              upstream password = a rig IMDS token in the [databases] line.
  direct      pgbench straight to PostgreSQL as the SCRAM password role over
              verify-full TLS: no pool, TLS + SCRAM + a new backend per
              connection.

Benchmarks (pgbench -n -S -j THREADS -T SECONDS, targets interleaved and
repeated REPS times, the median kept):
  c20     -c 20 persistent
  c100    -c 100 persistent
  churn   -C -c 10 (a new connection + SCRAM login per transaction), with
          the usual 4096-iteration verifier
  churn1  the same with a 1-iteration verifier: libpq's PBKDF2 is then
          nearly free, so the client stops being the bottleneck
Memory: VmRSS of a fresh proxy at baseline and holding 1,000 and 10,000
logged-in idle clients (pgwire.py).

Environment: BENCH_SECONDS (15), BENCH_REPS (3), BENCH_THREADS (2),
BENCH_POOL_SIZE (20), BENCH_SCALE (10), BENCH_IDLE ("1000,10000"),
BENCH_IDLE_CONCURRENCY (64 logins in flight while opening idle clients),
BENCH_OUT (JSON file), BENCH_DIR (run dir; default a new /tmp dir, removed
afterwards unless BENCH_KEEP=1), BENCH_ONLY (comma list of c20,c100,churn,
churn1,rss), BENCH_CPUS_PROXY / BENCH_CPUS_CLIENT (CPU lists for taskset-
style pinning of the proxies / pgbench, e.g. "1" and "0"), BENCH_NICE (-5:
the priority of everything measured -- proxies, pgbench, PostgreSQL -- so
other work on a shared machine disturbs less; 0 = leave alone),
BENCH_QUIET_MAX (10) / BENCH_QUIET_CORES (0.3): before each measured run,
wait up to that many seconds for the machine to be that idle,
TOKENPOOL_BIN.
Exit status: 0 when every measurement completed, 1 when something failed
(the reason and the proxy's log tail are printed), 130 when interrupted.
"""

import asyncio
import ctypes
import json
import os
import pwd
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

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "rig"))
sys.path.insert(0, HERE)

import pgwire  # noqa: E402
from rig import Rig, free_port  # noqa: E402

PG_BIN = "/usr/lib/postgresql/15/bin"
PGBENCH = os.path.join(PG_BIN, "pgbench")
PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
TARGETS = ("tokenpool", "pgbouncer", "direct")
PROXIES = ("tokenpool", "pgbouncer")
CLIENT_USER = "app"              # proxies' client, 4096-iteration verifier
CLIENT_USER_I1 = "app_i1"        # proxies' client, 1-iteration verifier
DIRECT_USER_I1 = "legacy_i1"     # PostgreSQL role with a 1-iteration verifier
PGBOUNCER_MAX_PASSWORD = 2047    # PgBouncer 1.18: MAX_PASSWORD 2048 incl. NUL
CLK_TCK = os.sysconf("SC_CLK_TCK")
DIR_PREFIX = "tokenpool-bench-"


def env_int(name, default):
    v = os.environ.get(name, "")
    return int(v) if v.strip() else default


SECONDS = env_int("BENCH_SECONDS", 15)
REPS = env_int("BENCH_REPS", 3)
THREADS = env_int("BENCH_THREADS", 2)
POOL_SIZE = env_int("BENCH_POOL_SIZE", 20)
SCALE = env_int("BENCH_SCALE", 10)
IDLE_CONCURRENCY = env_int("BENCH_IDLE_CONCURRENCY", 64)   # logins in flight
IDLE_STEPS = [int(x) for x in os.environ.get("BENCH_IDLE", "1000,10000").split(",") if x.strip()]
ONLY = set(x.strip() for x in os.environ.get("BENCH_ONLY", "").split(",") if x.strip())
CPUS_PROXY = os.environ.get("BENCH_CPUS_PROXY", "")
CPUS_CLIENT = os.environ.get("BENCH_CPUS_CLIENT", "")
QUIET_MAX = env_int("BENCH_QUIET_MAX", 10)          # seconds to wait for a quiet machine
NICE = env_int("BENCH_NICE", -5)                     # for everything measured
QUIET_CORES = float(os.environ.get("BENCH_QUIET_CORES", "0.3"))

SCENARIOS = [
    # key, label, pgbench args, proxy client user, direct user
    ("c20", "-S -c 20 persistent", ["-c", "20"], CLIENT_USER, None),
    ("c100", "-S -c 100 persistent", ["-c", "100"], CLIENT_USER, None),
    ("churn", "-S -C -c 10 churn, SCRAM i=4096", ["-C", "-c", "10"], CLIENT_USER, None),
    ("churn1", "-S -C -c 10 churn, SCRAM i=1", ["-C", "-c", "10"], CLIENT_USER_I1, DIRECT_USER_I1),
]


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


def child_setup(uid=None, gid=None, cpus=""):
    """preexec_fn: open-files limit to the hard limit, optional CPU pinning,
    optional user switch, then SIGTERM when this (parent) process dies --
    after the user switch, because changing credentials clears it."""
    def f():
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        if cpus:
            os.sched_setaffinity(0, cpu_set(cpus))
        if NICE:
            os.setpriority(os.PRIO_PROCESS, 0, NICE)
        if gid is not None:
            os.setgroups([])
            os.setgid(gid)
        if uid is not None:
            os.setuid(uid)
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
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    t = int(fields[11]) + int(fields[12])          # utime + stime
    if children:
        t += int(fields[13]) + int(fields[14])     # cutime + cstime
    return t


def pg_ticks(postmaster):
    """CPU of PostgreSQL: the postmaster with its reaped children, plus the
    backends alive now."""
    total = proc_ticks(postmaster, children=True)
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster:
            total += int(fields[11]) + int(fields[12])
    return total


def machine_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v[:8]) - idle, sum(v[:8])


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
    """Remove run directories of earlier runs that were killed outright
    (SIGKILL: no cleanup ran; their processes died with them)."""
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


# ---------------------------------------------------------------- the bench

class Bench:
    def __init__(self):
        self.procs = {}          # name -> Popen (proxies)
        self.logs = {}
        self.ports = {}
        self.rig = None
        self.pgbench = None      # the pgbench run in flight
        self.failures = []
        self.notes = []
        self.results = {"config": {}, "runs": [], "summary": {}, "rss": {}, "notes": self.notes}
        self.tp_bin = os.environ.get("TOKENPOOL_BIN") or os.path.join(REPO, "build", "tokenpool")
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
        self.verifier = pgwire.scram_verifier(self.client_password, 4096)
        self.verifier_i1 = pgwire.scram_verifier(self.client_password, 1)
        self.direct_password_i1 = "legacy1-" + os.urandom(9).hex()

    # -- set-up

    def start_rig(self):
        log(f"run dir {self.dir}; starting the rig")
        self.rig = Rig(dir=os.path.join(self.dir, "rig"), keep=True)
        self.rig.start()
        self.rig.idp_config(lifetime=24 * 3600)
        self.default_groups = self.rig.idp_config()["groups"]
        self.db = self.rig.pg_database
        self.token_user = self.rig.identity("system")["db_user"]
        # Connection logging costs the direct target on every connection
        # (the proxies keep theirs open): off, to compare the work itself.
        self.rig.psql_admin(f"""
ALTER SYSTEM SET log_connections = off;
ALTER SYSTEM SET log_disconnections = off;
CREATE ROLE {DIRECT_USER_I1} LOGIN PASSWORD '{pgwire.scram_verifier(self.direct_password_i1, 1)}';
SELECT pg_reload_conf();
""")
        hba = os.path.join(self.rig.pg_data_dir, "pg_hba.conf")
        with open(hba) as f:
            lines = f.readlines()
        i = next(n for n, l in enumerate(lines) if l.startswith("host ") and "reject" in l)
        lines.insert(i, f"hostssl all      {DIRECT_USER_I1}   127.0.0.1/32  scram-sha-256\n")
        with open(hba, "w") as f:
            f.writelines(lines)
        self.rig.psql_admin("SELECT pg_reload_conf();\n")

    def renice_postgres(self):
        """PostgreSQL (postmaster and its processes; new backends inherit it)
        at the same priority as the proxies and pgbench."""
        if not NICE:
            return
        pm = self.rig.postgres_pid()
        pids = [pm]
        for name in os.listdir("/proc"):
            try:
                with open(f"/proc/{name}/stat") as f:
                    if name.isdigit() and int(f.read().rsplit(")", 1)[1].split()[1]) == pm:
                        pids.append(int(name))
            except (OSError, ValueError, IndexError):
                pass
        for pid in pids:
            try:
                os.setpriority(os.PRIO_PROCESS, pid, NICE)
            except OSError:
                pass

    def pgbench_init(self):
        log(f"pgbench -i -s {SCALE} as token user {self.token_user} (direct, verify-full TLS)")
        env = self.pg_env(self.rig.token())
        p = subprocess.run([PGBENCH, "-i", "-q", "-s", str(SCALE), self.direct_dsn(self.token_user)],
                           env=env, capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            raise BenchError(f"pgbench -i failed:\n{p.stdout}{p.stderr}")
        self.rig.psql_admin(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO "
                            f"{self.rig.pg_password_user}, {DIRECT_USER_I1};\n", dbname=self.db)

    def pgbouncer_token(self):
        """A rig IMDS token short enough for PgBouncer 1.18 (see README):
        fewer filler group claims until it fits."""
        full = self.rig.token()
        self.results["config"]["token_bytes_default"] = len(full)
        tok, groups = full, self.default_groups
        while len(tok) > PGBOUNCER_MAX_PASSWORD and groups > 0:
            groups -= 1
            self.rig.idp_config(groups=groups)
            tok = self.rig.token()
        self.rig.idp_config(groups=self.default_groups)
        if len(tok) > PGBOUNCER_MAX_PASSWORD:
            raise BenchError("no rig token fits PgBouncer's 2047-byte password limit")
        if groups != self.default_groups:
            self.notes.append(
                f"PgBouncer 1.18 cannot take the rig's default {len(full)}-byte token: in the "
                f"[databases] line it is cut to {PGBOUNCER_MAX_PASSWORD} bytes (log: 'bug in "
                f"src/objects.c:472 - string truncated', the server then rejects the token), and "
                f"auth_file refuses it ('password too long in auth file'). PgBouncer got a "
                f"{len(tok)}-byte token (IdP groups={groups} instead of {self.default_groups}); "
                f"tokenpool logs in with the default {len(full)}-byte ones.")
        self.results["config"]["token_bytes_pgbouncer"] = len(tok)
        return tok

    def start_tokenpool(self, tag=""):
        d = os.path.join(self.dir, "tokenpool")
        os.makedirs(d, exist_ok=True)
        port = free_port()
        cfg = {
            "log": {"level": "warn", "format": "text"},
            "http": {"listen": f"127.0.0.1:{free_port()}"},
            "identity": {"source": "imds", "imds_endpoint": self.rig.imds_endpoint},
            "pools": [{
                "name": self.db, "protocol": "postgres", "listen": f"127.0.0.1:{port}",
                "server": {"host": self.rig.pg_host, "port": self.rig.pg_port, "database": self.db,
                           "user": self.token_user, "auth": "token",
                           "tls": {"mode": "verify-full", "ca_file": self.rig.ca_file}},
                "clients": [{"user": CLIENT_USER, "password_hash": self.verifier},
                            {"user": CLIENT_USER_I1, "password_hash": self.verifier_i1}],
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
        self.procs["tokenpool"], self.logs["tokenpool"], self.ports["tokenpool"] = p, logf, port
        wait_port(port, p, "tokenpool", logf)

    def start_pgbouncer(self, tag=""):
        d = os.path.join(self.dir, "pgbouncer")
        os.makedirs(d, exist_ok=True)
        pw = pwd.getpwnam("postgres")
        os.chown(d, pw.pw_uid, pw.pw_gid)
        os.chmod(d, 0o700)
        port = free_port()
        ini = os.path.join(d, f"pgbouncer{tag}.ini")
        auth = os.path.join(d, "userlist.txt")
        logf = os.path.join(d, f"pgbouncer{tag}.log")
        files = {
            auth: f'"{CLIENT_USER}" "{self.verifier}"\n"{CLIENT_USER_I1}" "{self.verifier_i1}"\n',
            ini: f"""[databases]
{self.db} = host={self.rig.pg_host} port={self.rig.pg_port} dbname={self.db} user={self.token_user} password={self.pgb_token}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {auth}
pool_mode = transaction
default_pool_size = {POOL_SIZE}
max_client_conn = 12000
server_tls_sslmode = verify-full
server_tls_ca_file = {self.rig.ca_file}
client_tls_sslmode = disable
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
logfile = {logf}
""",
        }
        for path, text in files.items():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.chown(path, pw.pw_uid, pw.pw_gid)
        p = subprocess.Popen([PGBOUNCER, ini], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, cwd=d,
                             env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                             preexec_fn=child_setup(uid=pw.pw_uid, gid=pw.pw_gid, cpus=CPUS_PROXY),
                             start_new_session=True)
        self.procs["pgbouncer"], self.logs["pgbouncer"], self.ports["pgbouncer"] = p, logf, port
        wait_port(port, p, "pgbouncer", logf)

    def stop_proxy(self, name):
        p = self.procs.pop(name, None)
        if p is None or p.poll() is not None:
            return
        # pgbouncer: SIGINT = safe shutdown, SIGTERM = immediate; both exit.
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def check_alive(self, name):
        p = self.procs.get(name)
        if p is not None and p.poll() is not None:
            msg = (f"{name} exited with status {p.returncode} (signal {-p.returncode})"
                   if p.returncode < 0 else f"{name} exited with status {p.returncode}")
            self.fail(f"{msg}; log tail ({self.logs[name]}):\n{tail(self.logs[name])}")
            self.procs.pop(name)
            log(f"restarting {name}")
            (self.start_tokenpool if name == "tokenpool" else self.start_pgbouncer)(tag=f"-{int(time.time())}")
            return False
        return True

    def fail(self, msg):
        self.failures.append(msg)
        log("FAILURE: " + msg)

    # -- connection strings

    def pg_env(self, password):
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PGPASSWORD"] = password
        env["PGCONNECT_TIMEOUT"] = "30"
        return env

    def direct_dsn(self, user):
        r = self.rig
        return (f"host={r.pg_host} hostaddr={r.pg_hostaddr} port={r.pg_port} dbname={self.db} "
                f"user={user} sslmode=verify-full sslrootcert={r.ca_file}")

    def target_conn(self, target, proxy_user, direct_user):
        if target == "direct":
            user = direct_user or self.rig.pg_password_user
            pw = self.direct_password_i1 if user == DIRECT_USER_I1 else self.rig.pg_password
            return self.direct_dsn(user), pw
        return (f"host=127.0.0.1 port={self.ports[target]} dbname={self.db} user={proxy_user} "
                f"sslmode=disable"), self.client_password

    def smoke(self):
        """Each target logs in and reaches PostgreSQL as the expected role."""
        import psycopg2
        want = {"tokenpool": self.token_user, "pgbouncer": self.token_user,
                "direct": self.rig.pg_password_user}
        for t in TARGETS:
            for pu, du in ((CLIENT_USER, None), (CLIENT_USER_I1, DIRECT_USER_I1)):
                dsn, pw = self.target_conn(t, pu, du)
                with psycopg2.connect(dsn, password=pw) as c, c.cursor() as cur:
                    cur.execute("SELECT current_user, count(*) FROM pgbench_branches")
                    user, n = cur.fetchone()
                    c.rollback()
                c.close()
                expect = want[t] if t != "direct" or du is None else DIRECT_USER_I1
                if user != expect or n != SCALE:
                    raise BenchError(f"{t}: logged in as {user}, {n} branches (want {expect}, {SCALE})")
        log("smoke test ok: tokenpool and pgbouncer reach PostgreSQL as "
            f"{self.token_user}, direct as {self.rig.pg_password_user}")

    # -- pgbench

    def run_pgbench(self, target, args, proxy_user, direct_user, seconds, quiet=True):
        dsn, pw = self.target_conn(target, proxy_user, direct_user)
        cmd = [PGBENCH, "-n", "-S", "-j", str(THREADS), "-T", str(seconds), "-P", str(seconds)] \
            + args + [dsn]
        load, waited = wait_quiet() if quiet else (None, 0.0)
        proxy = self.procs.get(target)
        pm = self.rig.postgres_pid()
        before_cpu = {
            "proxy": proc_ticks(proxy.pid) if proxy else 0,
            "pg": pg_ticks(pm),
            "client": resource.getrusage(resource.RUSAGE_CHILDREN),
            "machine": machine_ticks(),
        }
        t0 = time.monotonic()
        self.pgbench = subprocess.Popen(cmd, env=self.pg_env(pw), stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True,
                                        preexec_fn=child_setup(cpus=CPUS_CLIENT))
        try:
            out, err = self.pgbench.communicate(timeout=seconds + 120)
        except subprocess.TimeoutExpired:
            self.pgbench.kill()
            out, err = self.pgbench.communicate()
            err += "\n(pgbench timed out)"
        rc = self.pgbench.returncode
        self.pgbench = None
        wall = time.monotonic() - t0
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy1, total1 = machine_ticks()
        busy0, total0 = before_cpu["machine"]
        cpu = {
            "proxy_s": (proc_ticks(proxy.pid) - before_cpu["proxy"]) / CLK_TCK if proxy else None,
            "postgres_s": (pg_ticks(pm) - before_cpu["pg"]) / CLK_TCK,
            "pgbench_s": (ru.ru_utime + ru.ru_stime - before_cpu["client"].ru_utime
                          - before_cpu["client"].ru_stime),
            "machine_busy_s": (busy1 - busy0) / CLK_TCK,
            "machine_total_s": (total1 - total0) / CLK_TCK,
            "wall_s": wall,
        }
        ours = sum(v for k, v in cpu.items() if k in ("proxy_s", "postgres_s", "pgbench_s") and v)
        cpu["other_s"] = max(0.0, cpu["machine_busy_s"] - ours)
        res = {"target": target, "cmd": " ".join(cmd[1:-1]), "rc": rc, "cpu": cpu,
               "load_before_cores": load and round(load, 2), "quiet_wait_s": round(waited, 1)}
        m = re.search(r"^tps = ([\d.]+)", out, re.M)
        res["tps"] = float(m.group(1)) if m else None
        m = re.search(r"^latency average = ([\d.]+) ms", out, re.M)
        res["latency_ms"] = float(m.group(1)) if m else None
        m = re.search(r"^average connection time = ([\d.]+) ms", out, re.M)
        res["conn_ms"] = float(m.group(1)) if m else None
        m = re.search(r"^number of transactions actually processed: (\d+)", out, re.M)
        res["xacts"] = int(m.group(1)) if m else None
        m = re.search(r"^number of failed transactions: (\d+)", out, re.M)
        res["failed"] = int(m.group(1)) if m else None
        if res["xacts"] and cpu["proxy_s"] is not None:
            res["proxy_us_per_xact"] = cpu["proxy_s"] * 1e6 / res["xacts"]
        if rc != 0 or res["tps"] is None or res["failed"] or "aborted" in out + err:
            res["error"] = (out + err)[-3000:]
            self.fail(f"pgbench against {target} ({' '.join(args)}) exited {rc}:\n{res['error']}")
        if target in PROXIES:
            self.check_alive(target)
        return res

    def benchmarks(self):
        if ONLY and not ONLY & {k for k, *_ in SCENARIOS}:
            return
        # One warm-up per target: the proxies open their server connections.
        for t in TARGETS:
            self.run_pgbench(t, ["-c", "20"], CLIENT_USER, None, 3, quiet=False)
        for key, label, args, pu, du in SCENARIOS:
            if ONLY and key not in ONLY:
                continue
            per_target = {t: [] for t in TARGETS}
            for rep in range(REPS):
                order = TARGETS[rep % 3:] + TARGETS[:rep % 3]   # rotate who goes first
                for t in order:
                    log(f"{key} rep {rep + 1}/{REPS}: {t} pgbench {' '.join(args)} -T {SECONDS}")
                    r = self.run_pgbench(t, args, pu, du, SECONDS)
                    r.update(scenario=key, rep=rep + 1)
                    self.results["runs"].append(r)
                    per_target[t].append(r)
                    log(f"   tps={r['tps']} lat={r['latency_ms']} ms conn={r['conn_ms']} ms "
                        f"proxy_cpu={fmt_num(r['cpu']['proxy_s'])}s pg_cpu={r['cpu']['postgres_s']:.1f}s "
                        f"pgbench_cpu={r['cpu']['pgbench_s']:.1f}s other={r['cpu']['other_s']:.1f}s")
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

                summ[t] = {"tps": med("tps"), "latency_ms": med("latency_ms"), "conn_ms": med("conn_ms"),
                           "proxy_us_per_xact": med("proxy_us_per_xact"),
                           "tps_all": [r["tps"] for r in runs],
                           "cores": {k: med_cpu(k) for k in ("proxy_s", "postgres_s", "pgbench_s", "other_s")}}
            self.results["summary"][key] = {"label": label, "targets": summ}

    # -- memory

    def rss_phase(self):
        if ONLY and "rss" not in ONLY:
            return
        pgwire.raise_nofile()
        for name in PROXIES:
            # A fresh process, so the benchmarks' allocations do not count.
            self.stop_proxy(name)
            (self.start_tokenpool if name == "tokenpool" else self.start_pgbouncer)(tag="-rss")
            pid, port = self.procs[name].pid, self.ports[name]
            log(f"rss: {name} pid {pid}, opening idle clients {IDLE_STEPS}")
            try:
                self.results["rss"][name] = asyncio.run(self._rss(name, pid, port))
            except Exception as e:  # noqa: BLE001
                self.fail(f"rss phase for {name}: {type(e).__name__}: {e}\n{tail(self.logs[name])}")
            self.check_alive(name)

    async def _rss(self, name, pid, port):
        # Warm-up: one login and a query, so the proxy has its token and a
        # server connection before the baseline is taken.
        c = await pgwire.connect("127.0.0.1", port, CLIENT_USER, self.client_password, self.db)
        await c.simple_query("SELECT 1")
        c.close()
        await asyncio.sleep(1)
        out = {"baseline_kb": vm_rss_kb(pid), "steps": []}
        conns = []
        try:
            for n in IDLE_STEPS:
                need = n - len(conns)
                _, secs, errors = await pgwire.open_many(need, "127.0.0.1", port, CLIENT_USER,
                                                         self.client_password, self.db,
                                                         concurrency=IDLE_CONCURRENCY, into=conns)
                if errors:
                    raise BenchError(f"{len(errors)} of {need} logins failed (first: {errors[0]})")
                # The clients are idle but must still be served: one query on
                # a sample of them proves the proxy has not wedged.
                for probe in conns[:: max(1, len(conns) // 10)]:
                    await probe.simple_query("SELECT 1")
                await asyncio.sleep(1)
                rss = vm_rss_kb(pid)
                step = {"clients": len(conns), "rss_kb": rss, "login_s": round(secs, 2),
                        "bytes_per_client": (rss - out["baseline_kb"]) * 1024 / len(conns)}
                out["steps"].append(step)
                log(f"   {name}: {len(conns)} idle clients, VmRSS {rss} kB "
                    f"({step['bytes_per_client']:.0f} B/client, logins took {secs:.1f}s)")
        finally:
            for c in conns:
                c.close()
            await asyncio.sleep(0.5)
        out["after_close_kb"] = vm_rss_kb(pid)
        return out

    # -- teardown

    def cleanup(self):
        if self.pgbench is not None and self.pgbench.poll() is None:
            self.pgbench.kill()
            self.pgbench.wait()
        for name in list(self.procs):
            self.stop_proxy(name)
        # The proxies' logs (quiet levels: warnings and errors only) go into
        # the JSON before the run directory is removed.
        self.results["logs"] = {}
        for sub in PROXIES:
            p = os.path.join(self.dir, sub)
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
    """(metric, tp, pgb, direct, tp/pgb, tp/direct, target-or-note) rows."""
    rows = []
    S = results["summary"]
    goals = {"c20": 1.1, "c100": 1.1, "churn": 1.5, "churn1": 1.5}
    for key, label, *_ in SCENARIOS:
        if key not in S:
            continue
        t = S[key]["targets"]
        v = {k: t.get(k, {}) for k in TARGETS}

        def row(metric, field, higher_better, goal=None, direct=True):
            a, b = v["tokenpool"].get(field), v["pgbouncer"].get(field)
            d = v["direct"].get(field) if direct else None
            r1 = ratio(a, b)
            note = ""
            if goal is not None and r1 is not None:
                note = f"goal >= {goal}x: {'met' if r1 >= goal else 'MISSED'}"
            elif r1 is not None and not higher_better:
                note = "lower is better"
            rows.append((f"{label}: {metric}", a, b, d, r1, ratio(a, d) if direct else None, note))

        row("TPS", "tps", True, goals[key])
        row("latency avg ms", "latency_ms", False)
        if key.startswith("churn"):
            row("connect ms", "conn_ms", False)
        row("proxy CPU us/txn", "proxy_us_per_xact", False, direct=False)
    R = results.get("rss", {})
    if R:
        tp, pb = R.get("tokenpool", {}), R.get("pgbouncer", {})
        rows.append(("RSS baseline kB", tp.get("baseline_kb"), pb.get("baseline_kb"), None,
                     ratio(tp.get("baseline_kb"), pb.get("baseline_kb")), None, "lower is better"))
        steps_tp = {s["clients"]: s for s in tp.get("steps", [])}
        steps_pb = {s["clients"]: s for s in pb.get("steps", [])}
        for n in IDLE_STEPS:
            a, b = steps_tp.get(n, {}), steps_pb.get(n, {})
            rows.append((f"RSS with {n:,} idle clients kB", a.get("rss_kb"), b.get("rss_kb"), None,
                         ratio(a.get("rss_kb"), b.get("rss_kb")), None, "lower is better"))
        for n in IDLE_STEPS:
            a, b = steps_tp.get(n, {}), steps_pb.get(n, {})
            r1 = ratio(a.get("bytes_per_client"), b.get("bytes_per_client"))
            note = f"goal <= 1.0x: {'met' if r1 <= 1.0 else 'MISSED'}" if r1 is not None else ""
            rows.append((f"RSS per idle client @{n:,} bytes", a.get("bytes_per_client"),
                         b.get("bytes_per_client"), None, r1, None, note))
    return rows


def print_table(rows, out=sys.stdout):
    hdr = ("metric", "tokenpool", "pgbouncer", "direct", "tp/pgbouncer", "tp/direct", "")
    cells = [hdr] + [(m, fmt_num(a), fmt_num(b), fmt_num(d),
                      fmt_num(r1, 2) if r1 is not None else "-",
                      fmt_num(r2, 2) if r2 is not None else "-", note)
                     for m, a, b, d, r1, r2, note in rows]
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
    print(f"\nCPU used during the runs, in cores of {os.cpu_count()} "
          "(proxy / postgres / pgbench / other processes):", file=out)
    for key, label, *_ in SCENARIOS:
        if key not in S:
            continue
        parts = []
        for t in TARGETS:
            c = S[key]["targets"][t]["cores"]
            parts.append(f"{t} {fmt_num(c['proxy_s'], 2)}/{fmt_num(c['postgres_s'], 2)}/"
                         f"{fmt_num(c['pgbench_s'], 2)}/{fmt_num(c['other_s'], 2)}")
        print(f"  {label:34s} " + "   ".join(parts), file=out)


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
            raise BenchError("run as root (the rig and PgBouncer's user switch need it)")
        if not os.access(os.environ.get("TOKENPOOL_BIN") or os.path.join(REPO, "build", "tokenpool"),
                         os.X_OK):
            raise BenchError("tokenpool binary not found: build it or set TOKENPOOL_BIN")
        bench = Bench()
        bench.results["config"].update(
            seconds=SECONDS, reps=REPS, threads=THREADS, pool_size=POOL_SIZE, scale=SCALE,
            pool_mode="transaction", idle_steps=IDLE_STEPS, cpus_proxy=CPUS_PROXY or None,
            cpus_client=CPUS_CLIENT or None, nice=NICE, nproc=os.cpu_count(),
            tokenpool=subprocess.run([bench.tp_bin, "--version"], capture_output=True,
                                     text=True).stdout.strip(),
            pgbouncer=subprocess.run([PGBOUNCER, "--version"], capture_output=True,
                                     text=True).stdout.splitlines()[0],
            pgbench=subprocess.run([PGBENCH, "--version"], capture_output=True, text=True).stdout.strip())
        bench.start_rig()
        bench.pgbench_init()
        bench.renice_postgres()
        bench.pgb_token = bench.pgbouncer_token()
        bench.start_tokenpool()
        bench.start_pgbouncer()
        bench.smoke()
        bench.benchmarks()
        bench.rss_phase()
    except Interrupted as e:
        log(f"interrupted ({e}); stopping everything")
        rc = 130
    except Exception as e:  # noqa: BLE001
        log(f"error: {type(e).__name__}: {e}")
        traceback.print_exc()
        if bench is not None:
            for name, path in bench.logs.items():
                log(f"{name} log tail ({path}):\n{tail(path)}")
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
    res["table"] = [dict(zip(("metric", "tokenpool", "pgbouncer", "direct", "tp_over_pgbouncer",
                              "tp_over_direct", "note"), r)) for r in rows]
    if rows:
        c = res["config"]
        print(f"\ntokenpool vs PgBouncer vs direct -- {c['tokenpool']}, {c['pgbouncer']}, "
              f"{c['pgbench']}; {c['nproc']} CPUs")
        print(f"pgbench -n -S -j {THREADS} -T {SECONDS}, transaction pooling, pool size {POOL_SIZE}, "
              f"scale {SCALE}; targets interleaved, {REPS} reps each, median shown"
              + (" (median of 2 = mean)" if REPS == 2 else "")
              + (f"; nice {NICE} for proxies, pgbench and PostgreSQL" if NICE else "")
              + (f"; proxies on CPUs {CPUS_PROXY}" if CPUS_PROXY else "")
              + (f"; pgbench on CPUs {CPUS_CLIENT}" if CPUS_CLIENT else ""))
        print("proxies: clients over plain TCP (sslmode=disable) with SCRAM-SHA-256; "
              "upstream: pooled verified-TLS connections with an Entra-style token.")
        print("direct: no pool -- every connection does TLS (verify-full) + SCRAM + a new backend.\n")
        print_table(rows)
        print_cpu(res)
        notes = list(bench.notes)
        if "churn" in res["summary"]:
            t = res["summary"]["churn"]["targets"]
            cores = [t[x]["cores"]["pgbench_s"] for x in PROXIES if t[x]["cores"]["pgbench_s"]]
            if cores:
                notes.append(f"churn (i=4096): pgbench itself used {min(cores):.2f}-{max(cores):.2f} of "
                             f"{os.cpu_count()} cores (libpq's client-side PBKDF2 per login), so that "
                             f"row measures the client; churn i=1 takes that cost away.")
        other = [r["cpu"]["other_s"] / r["cpu"]["wall_s"] for r in res["runs"] if r["cpu"]["wall_s"]]
        if other and max(other) > 0.2:
            notes.append(f"other processes on this machine used up to {max(other):.2f} cores during "
                         f"some runs: expect noise (see runs[].cpu in the JSON).")
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
