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
  haproxy     a peer: HAProxy (Debian's) in TCP mode between the client and
              MariaDB -- the client's own TLS and token login pass through
              it untouched. No pooling, no protocol: the cost of an extra hop
              and nothing else, i.e. the floor for any proxy on this machine.
              Taken when /usr/sbin/haproxy exists (BENCH_TARGETS to choose).

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
BENCH_TARGETS (tokenpool,direct,direct_pw,haproxy), BENCH_IDLE ("1000,10000"),
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
import os
import re
import resource
import shutil
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import benchlib  # noqa: E402  (also puts tests/rig on sys.path)
import mywire  # noqa: E402
from benchlib import (CLK_TCK, NICE, BenchError, env_int, env_list, fmt_num, log,  # noqa: E402
                      machine_split, proc_ticks, ratio)
from rig import free_port  # noqa: E402

SYSBENCH = shutil.which("sysbench") or "/usr/bin/sysbench"
MYSQLSLAP = shutil.which("mariadb-slap") or shutil.which("mysqlslap") or "/usr/bin/mariadb-slap"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
RECONNECT_LUA = os.path.join(HERE, "oltp_read_only_reconnect.lua")
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
ALL_TARGETS = ("tokenpool", "direct", "direct_pw", "haproxy")
DEFAULT_TARGETS = ALL_TARGETS if os.access(HAPROXY, os.X_OK) else ALL_TARGETS[:3]
CLIENT_USER = "app"

SECONDS = env_int("BENCH_SECONDS", 15)
REPS = env_int("BENCH_REPS", 3)
POOL_SIZE = env_int("BENCH_POOL_SIZE", 20)
TABLES = env_int("BENCH_TABLES", 4)
TABLE_SIZE = env_int("BENCH_TABLE_SIZE", 10000)
SLAP_C = env_int("BENCH_SLAP_CONCURRENCY", 10)
PS_MODE = os.environ.get("BENCH_PS_MODE", "disable").strip() or "disable"
CREDENTIAL = os.environ.get("BENCH_CLIENT_CREDENTIAL", "hash").strip() or "hash"
TARGETS = tuple(env_list("BENCH_TARGETS", ",".join(DEFAULT_TARGETS)))
IDLE_CONCURRENCY = env_int("BENCH_IDLE_CONCURRENCY", 64)
IDLE_STEPS = [int(x) for x in env_list("BENCH_IDLE", "1000,10000")]
ONLY = set(env_list("BENCH_ONLY", ""))
CPUS_PROXY = os.environ.get("BENCH_CPUS_PROXY", "")
CPUS_CLIENT = os.environ.get("BENCH_CPUS_CLIENT", "")
QUIET_MAX = env_int("BENCH_QUIET_MAX", 10)

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
# The table: the metric, values per target, ratios, a note.
COLUMNS = ("metric", "tokenpool", "direct", "direct_pw", "haproxy", "tp/direct", "tp/direct_pw",
           "haproxy/direct", "note")


def clean_env(**extra):
    """The client programs' environment: none of the caller's MYSQL_*
    settings (libmariadb reads MYSQL_PWD, MYSQL_HOST, ...), plus `extra`."""
    return benchlib.clean_env(("MYSQL", "MARIADB", "LIBMYSQL"), **extra)


# ---------------------------------------------------------------- the bench

class Bench(benchlib.BaseBench):
    dir_prefix = "tokenpool-mybench-"
    table_keys = tuple(c.replace("/", "_over_") for c in COLUMNS)

    def __init__(self):
        super().__init__()
        self.client = None       # the sysbench/mysqlslap run in flight
        self.slap_queries = {}   # target -> mysqlslap --number-of-queries for ~SECONDS
        self.client_password = "bench-" + os.urandom(9).hex()
        p = subprocess.run([self.tp_bin, "hash"], input=self.client_password, capture_output=True,
                           text=True, timeout=30)
        if p.returncode != 0:
            raise BenchError(f"tokenpool hash failed ({p.returncode}): {p.stderr.strip()}")
        self.client_hashes = [h for h in p.stdout.split() if h]
        if not self.client_hashes:
            raise BenchError("tokenpool hash printed nothing")

    @staticmethod
    def preflight():
        for f in (SYSBENCH, MYSQLSLAP, OPENSSL):
            if not os.access(f, os.X_OK):
                raise BenchError(f"{f} missing (apt-get install -y sysbench mariadb-client openssl)")
        bad = [t for t in TARGETS if t not in ALL_TARGETS]
        if bad or "tokenpool" not in TARGETS or "direct" not in TARGETS:
            raise BenchError("BENCH_TARGETS must name tokenpool and direct (and may name direct_pw "
                             f"and haproxy): {bad}")
        if "haproxy" in TARGETS and not os.access(HAPROXY, os.X_OK):
            raise BenchError(f"{HAPROXY} missing (apt-get install -y haproxy, or leave haproxy out of "
                             "BENCH_TARGETS)")
        bad = ONLY - set(SCENARIO_KEYS) - {"rss"}
        if bad:
            raise BenchError(f"BENCH_ONLY: unknown {sorted(bad)} (known: {', '.join(SCENARIO_KEYS)}, rss)")
        if CREDENTIAL not in ("hash", "password"):
            raise BenchError("BENCH_CLIENT_CREDENTIAL must be hash or password")

    def run(self):
        self.results["config"].update(
            seconds=SECONDS, reps=REPS, pool_size=POOL_SIZE, tables=TABLES, table_size=TABLE_SIZE,
            slap_concurrency=SLAP_C, ps_mode=PS_MODE, client_credential=CREDENTIAL,
            targets=list(TARGETS), pool_mode="transaction", idle_steps=IDLE_STEPS,
            cpus_proxy=CPUS_PROXY or None, cpus_client=CPUS_CLIENT or None, nice=NICE,
            nproc=os.cpu_count(),
            tokenpool=tool_version([self.tp_bin, "--version"]),
            sysbench=tool_version([SYSBENCH, "--version"]),
            mysqlslap=tool_version([MYSQLSLAP, "--version"]),
            mariadbd=tool_version(["/usr/sbin/mariadbd", "--version"]),
            haproxy=tool_version([HAPROXY, "-v"]) if "haproxy" in TARGETS else None)
        self.start_rig()
        self.sysbench_prepare()
        # MariaDB (every thread) at the priority of tokenpool and the clients.
        benchlib.renice_threads(self.rig.mysql_server_pid())
        self.start_tokenpool()
        if "haproxy" in TARGETS:
            self.start_haproxy()
        self.smoke()
        self.benchmarks()
        self.rss_phase()

    # -- set-up

    def start_rig(self):
        super().start_rig()
        self.db = self.rig.mysql_database
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
        port = free_port()
        client = {"user": CLIENT_USER}
        if CREDENTIAL == "password":
            client["password"] = self.client_password
        else:
            client["password_hash"] = self.client_hashes
        self.launch_tokenpool({
            "name": self.db, "protocol": "mysql", "listen": f"127.0.0.1:{port}",
            "server": {"host": self.rig.mysql_host, "port": self.rig.mysql_port, "database": self.db,
                       "user": self.token_user, "auth": "token", "scope": self.rig.mysql_scope,
                       "tls": {"mode": "verify-full", "ca_file": self.rig.ca_file,
                               "server_name": self.rig.mysql_host}},
            "clients": [client],
            "client_tls": {"mode": "disable"},
            "pool": {"mode": "transaction", "size": POOL_SIZE, "max_clients": 12000},
        }, port, tag=tag, cpus=CPUS_PROXY)

    def start_haproxy(self):
        """HAProxy in TCP mode in front of MariaDB: the peer that does
        nothing but relay bytes (its defaults: a thread per CPU, splice)."""
        d = os.path.join(self.dir, "haproxy")
        os.makedirs(d, exist_ok=True)
        port = free_port()
        conf = os.path.join(d, "haproxy.cfg")
        with open(conf, "w") as f:
            f.write("global\n    maxconn 4000\n"
                    "defaults\n    mode tcp\n    timeout connect 5s\n"
                    "    timeout client 1h\n    timeout server 1h\n"
                    f"listen mysql\n    bind 127.0.0.1:{port}\n"
                    f"    server db {self.rig.mysql_hostaddr}:{self.rig.mysql_port}\n")
        logf = os.path.join(d, "haproxy.log")
        p = benchlib.spawn([HAPROXY, "-db", "-f", conf], d, output=logf, cpus=CPUS_PROXY)
        self.procs["haproxy"], self.ports["haproxy"] = p, port
        benchlib.wait_port(port, p, "haproxy", logf)

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
        return {"tokenpool": CLIENT_USER, "direct": self.token_user, "haproxy": self.token_user,
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
        pw = {"tokenpool": self.client_password, "direct": self.token, "haproxy": self.token,
              "direct_pw": self.rig.mysql_password}[target]
        if target in ("direct", "haproxy"):
            return clean_env(MYSQL_PWD=pw, LIBMYSQL_PLUGINS="mysql_clear_password")
        return clean_env(MYSQL_PWD=pw)

    def sysbench_conn(self, target):
        args = [f"--mysql-user={self.target_user(target)}", f"--mysql-db={self.db}"]
        if target == "tokenpool":
            return args + ["--mysql-host=127.0.0.1", f"--mysql-port={self.ports['tokenpool']}"]
        # TLS with the rig CA as cacert.pem; sysbench cannot ask libmariadb
        # to verify the server's name (mysqlslap below does).
        host, port = self.endpoint(target)
        return args + [f"--mysql-host={host}", f"--mysql-port={port}", "--mysql-ssl=on"]

    def endpoint(self, target):
        """Where a direct-style target connects: MariaDB, or the haproxy
        relay in front of it (same TLS, same login)."""
        if target == "haproxy":
            return "127.0.0.1", self.ports["haproxy"]
        return self.rig.mysql_hostaddr, self.rig.mysql_port

    def slap_conn(self, target):
        args = ["--no-defaults", "--protocol=tcp", "-u", self.target_user(target)]
        if target == "tokenpool":
            return args + ["-h", "127.0.0.1", "-P", str(self.ports["tokenpool"]), "--skip-ssl"]
        # The relay listens on 127.0.0.1 too, so the name ("localhost")
        # verifies through it as well.
        return args + ["-h", self.rig.mysql_host, "-P", str(self.endpoint(target)[1]),
                       f"--ssl-ca={self.rig.ca_file}", "--ssl-verify-server-cert"]

    def smoke(self):
        """Each target logs in and reaches MariaDB as the expected user, and
        sees the sysbench tables."""
        want = {"tokenpool": self.token_user, "direct": self.token_user, "haproxy": self.token_user,
                "direct_pw": self.rig.mysql_password_user}
        for t in TARGETS:
            if t == "tokenpool":
                async def q():
                    c = await self.connect(self.ports["tokenpool"])
                    try:
                        return await c.query("SELECT CURRENT_USER(), COUNT(*) FROM sbtest1")
                    finally:
                        c.close()
                rows = asyncio.run(q())
                user, n = rows[0][0], int(rows[0][1])
            else:
                c = self.rig.mysql_connect(self.target_user(t), self.client_env(t)["MYSQL_PWD"],
                                           port=self.endpoint(t)[1])
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
        log(f"smoke test ok: tokenpool and direct{' and haproxy' if 'haproxy' in TARGETS else ''} "
            f"reach MariaDB as {self.token_user}"
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
        load, waited = benchlib.wait_quiet(QUIET_MAX) if quiet else (None, 0.0)
        mysqld = self.rig.mysql_server_pid()
        proxy = self.procs.get(target)
        counted = target == "tokenpool"
        conns0 = self.tp_metric("tokenpool_client_connections_total") if counted else self.server_connections()
        before = {
            "proxy": proc_ticks(proxy.pid) if proxy else 0,
            "mysql": proc_ticks(mysqld, children=True),
            "client": resource.getrusage(resource.RUSAGE_CHILDREN),
            "machine": machine_split(),
        }
        t0 = time.monotonic()
        self.client = subprocess.Popen(cmd, cwd=self.client_dir, env=self.client_env(target),
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                       preexec_fn=benchlib.child_setup(cpus=CPUS_CLIENT))
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
        conns1 = self.tp_metric("tokenpool_client_connections_total") if counted else self.server_connections()
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
        if target == "tokenpool":
            self.check_alive(target)
        elif proxy is not None and proxy.poll() is not None:
            self.fail(f"haproxy exited with status {proxy.returncode}")
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
        for key, label, kind, script, threads in todo:
            per_target = benchlib.interleaved(
                TARGETS, REPS, lambda t, rep: self.measure(key, t, rep, kind, script, threads))
            self.results["summary"][key] = {
                "label": label, "kind": kind,
                "targets": {t: summarize(runs) for t, runs in per_target.items()}}

    def measure(self, key, t, rep, kind, script, threads):
        log(f"{key} rep {rep + 1}/{REPS}: {t}")
        r = self.run_client(t, kind, script, threads, SECONDS, slap_queries=self.slap_queries.get(t))
        r.update(scenario=key, rep=rep + 1)
        self.results["runs"].append(r)
        if kind == "slap" and r.get("rate"):
            # Keep the next run near SECONDS even when the calibration ran
            # on a busier (or idler) machine.
            self.slap_queries[t] = max(SLAP_C * 20, int(r["rate"] * SECONDS))
        c = r["cpu"]
        log(f"   rate={fmt_num(r['rate'])}/s lat_avg={fmt_num(r['lat_avg_ms'])} ms "
            f"p95={fmt_num(r['lat_p95_ms'])} ms conns={r['connections']} "
            f"proxy_cpu={fmt_num(c['proxy_s'])}s mysql_cpu={c['mysql_s']:.1f}s "
            f"client_cpu={c['client_s']:.1f}s other={c['other_s']:.1f}s "
            f"steal={c['steal_s']:.1f}s")
        return r

    # -- memory

    def connect(self, port):
        """One logged-in mywire client of tokenpool."""
        return mywire.connect("127.0.0.1", port, CLIENT_USER, self.client_password, self.db)

    def rss_phase(self):
        if ONLY and "rss" not in ONLY:
            return
        self.measure_rss("tokenpool", self.connect, lambda c: c.query("SELECT 1"), IDLE_STEPS,
                         IDLE_CONCURRENCY)

    # -- teardown

    def cleanup(self):
        benchlib.kill_process(self.client)
        self.stop_all()
        self.finish(["tokenpool"])

    # -- report

    def table_rows(self):
        """Rows of COLUMNS: values per target, then the ratios, then a note."""
        results = self.results
        rows = []
        S = results["summary"]
        for key, label, kind, *_ in SCENARIOS:
            if key not in S:
                continue
            t = S[key]["targets"]
            v = {k: t.get(k, {}) for k in ALL_TARGETS}

            def row(metric, field, higher_better, goal=None, direct=True):
                a = v["tokenpool"].get(field)
                h = v["haproxy"].get(field)
                d = v["direct"].get(field) if direct else None
                p = v["direct_pw"].get(field) if direct else None
                r1 = ratio(a, d)
                rows.append((f"{label}: {metric}", a, d, p, h, r1, ratio(a, p), ratio(h, d),
                             benchlib.goal_note(r1, goal, higher_better, " direct")))

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
            none = (None,) * 6
            rows.append(("RSS baseline kB", tp.get("baseline_kb")) + none + ("",))
            for s in tp.get("steps", []):
                rows.append((f"RSS with {s['clients']:,} idle clients kB", s["rss_kb"]) + none + ("",))
            for s in tp.get("steps", []):
                rows.append((f"RSS per idle client @{s['clients']:,} bytes", s["bytes_per_client"]) + none + ("",))
        return rows

    def print_report(self, rows, c):
        res = self.results
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
        print("direct_pw: the same over TLS as legacy_app with mysql_native_password (no token).")
        if "haproxy" in TARGETS:
            print(f"haproxy: {c.get('haproxy', '?')} in TCP mode (its defaults) between the client and "
                  f"MariaDB, login and TLS as direct: the cost of an extra hop alone.")
        print()
        benchlib.print_table(COLUMNS[:-1], rows, drop_empty=True)
        S = res["summary"]
        width = max((len(label) for key, label, *_ in SCENARIOS if key in S), default=0)
        benchlib.print_cpu(S, f"CPU used during the runs, in cores of {os.cpu_count()} "
                           "(proxy / mariadb / client program / everything else):",
                           [(key, f"{label:{width}s}") for key, label, *_ in SCENARIOS], TARGETS,
                           ("proxy_s", "mysql_s", "client_s", "other_s"))
        notes = list(self.notes) + benchlib.noise_notes(res["runs"])
        steal = [r["cpu"]["steal_s"] / r["cpu"]["wall_s"] for r in res["runs"] if r["cpu"]["wall_s"]]
        if steal and max(steal) > 0.1:
            notes.append(f"the hypervisor took up to {max(steal):.2f} cores from this VM (steal) "
                         f"during some runs: expect noise.")
        benchlib.print_notes(notes)


def summarize(runs):
    """One target's runs of a scenario: medians over the runs that worked."""
    ok = benchlib.ok_runs(runs)
    out = {f: benchlib.median_field(ok, f)
           for f in ("rate", "qps", "lat_avg_ms", "lat_p95_ms", "proxy_us_per_event")}
    out["rate_all"] = [r.get("rate") for r in runs]
    out["cores"] = benchlib.median_cores(ok, ("proxy_s", "mysql_s", "client_s", "irq_s", "other_s",
                                              "steal_s"))
    return out


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

def tool_version(cmd):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        line = (p.stdout or p.stderr).strip().splitlines()[0]
        return re.sub(r"^/\S*/", "", re.sub(r"\s+", " ", line))
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


if __name__ == "__main__":
    sys.exit(benchlib.main(Bench))
