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

import os
import pwd
import re
import resource
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import benchlib  # noqa: E402  (also puts tests/rig on sys.path)
import pgwire  # noqa: E402
from benchlib import (CLK_TCK, NICE, BenchError, clean_env, env_int, env_list, fmt_num,  # noqa: E402
                      log, machine_ticks, proc_stat, proc_ticks, ratio)
from rig import free_port  # noqa: E402

PG_BIN = "/usr/lib/postgresql/15/bin"
PGBENCH = os.path.join(PG_BIN, "pgbench")
PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
TARGETS = ("tokenpool", "pgbouncer", "direct")
PROXIES = ("tokenpool", "pgbouncer")
CLIENT_USER = "app"              # proxies' client, 4096-iteration verifier
CLIENT_USER_I1 = "app_i1"        # proxies' client, 1-iteration verifier
DIRECT_USER_I1 = "legacy_i1"     # PostgreSQL role with a 1-iteration verifier
PGBOUNCER_MAX_PASSWORD = 2047    # PgBouncer 1.18: MAX_PASSWORD 2048 incl. NUL

SECONDS = env_int("BENCH_SECONDS", 15)
REPS = env_int("BENCH_REPS", 3)
THREADS = env_int("BENCH_THREADS", 2)
POOL_SIZE = env_int("BENCH_POOL_SIZE", 20)
SCALE = env_int("BENCH_SCALE", 10)
IDLE_CONCURRENCY = env_int("BENCH_IDLE_CONCURRENCY", 64)   # logins in flight
IDLE_STEPS = [int(x) for x in env_list("BENCH_IDLE", "1000,10000")]
ONLY = set(env_list("BENCH_ONLY", ""))
CPUS_PROXY = os.environ.get("BENCH_CPUS_PROXY", "")
CPUS_CLIENT = os.environ.get("BENCH_CPUS_CLIENT", "")
QUIET_MAX = env_int("BENCH_QUIET_MAX", 10)          # seconds to wait for a quiet machine

SCENARIOS = [
    # key, label, pgbench args, proxy client user, direct user
    ("c20", "-S -c 20 persistent", ["-c", "20"], CLIENT_USER, None),
    ("c100", "-S -c 100 persistent", ["-c", "100"], CLIENT_USER, None),
    ("churn", "-S -C -c 10 churn, SCRAM i=4096", ["-C", "-c", "10"], CLIENT_USER, None),
    ("churn1", "-S -C -c 10 churn, SCRAM i=1", ["-C", "-c", "10"], CLIENT_USER_I1, DIRECT_USER_I1),
]


# ---------------------------------------------------------------- PostgreSQL's processes

def pg_children(postmaster):
    """PIDs whose parent is the postmaster: its backends and helpers."""
    out = []
    for name in os.listdir("/proc"):
        f = proc_stat(name) if name.isdigit() else None
        if f is not None and int(f[1]) == postmaster:
            out.append(int(name))
    return out


def pg_ticks(postmaster):
    """CPU of PostgreSQL: the postmaster with its reaped children, plus the
    backends alive now."""
    return proc_ticks(postmaster, children=True) + sum(proc_ticks(p) for p in pg_children(postmaster))


# ---------------------------------------------------------------- the bench

class Bench(benchlib.BaseBench):
    dir_prefix = "tokenpool-bench-"
    root_why = "the rig and PgBouncer's user switch need it"
    table_keys = ("metric", "tokenpool", "pgbouncer", "direct", "tp_over_pgbouncer", "tp_over_direct",
                  "note")

    def __init__(self):
        super().__init__()
        self.pgbench = None      # the pgbench run in flight
        self.client_password = "bench-" + os.urandom(9).hex()
        self.verifier = pgwire.scram_verifier(self.client_password, 4096)
        self.verifier_i1 = pgwire.scram_verifier(self.client_password, 1)
        self.direct_password_i1 = "legacy1-" + os.urandom(9).hex()

    def run(self):
        self.results["config"].update(
            seconds=SECONDS, reps=REPS, threads=THREADS, pool_size=POOL_SIZE, scale=SCALE,
            pool_mode="transaction", idle_steps=IDLE_STEPS, cpus_proxy=CPUS_PROXY or None,
            cpus_client=CPUS_CLIENT or None, nice=NICE, nproc=os.cpu_count(),
            tokenpool=subprocess.run([self.tp_bin, "--version"], capture_output=True,
                                     text=True).stdout.strip(),
            pgbouncer=subprocess.run([PGBOUNCER, "--version"], capture_output=True,
                                     text=True).stdout.splitlines()[0],
            pgbench=subprocess.run([PGBENCH, "--version"], capture_output=True, text=True).stdout.strip())
        self.start_rig()
        self.pgbench_init()
        self.renice_postgres()
        self.pgb_token = self.pgbouncer_token()
        self.start_tokenpool()
        self.start_pgbouncer()
        self.smoke()
        self.benchmarks()
        self.rss_phase()

    # -- set-up

    def start_rig(self):
        super().start_rig()
        self.default_groups = self.rig.idp_config()["groups"]
        self.db = self.rig.pg_database
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
        for pid in [pm] + pg_children(pm):
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
        port = free_port()
        self.launch_tokenpool({
            "name": self.db, "protocol": "postgres", "listen": f"127.0.0.1:{port}",
            "server": {"host": self.rig.pg_host, "port": self.rig.pg_port, "database": self.db,
                       "user": self.token_user, "auth": "token",
                       "tls": {"mode": "verify-full", "ca_file": self.rig.ca_file}},
            "clients": [{"user": CLIENT_USER, "password_hash": self.verifier},
                        {"user": CLIENT_USER_I1, "password_hash": self.verifier_i1}],
            "client_tls": {"mode": "disable"},
            "pool": {"mode": "transaction", "size": POOL_SIZE, "max_clients": 12000},
        }, port, tag=tag, cpus=CPUS_PROXY)

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
            benchlib.write_private(path, text, owner=(pw.pw_uid, pw.pw_gid))
        # Its output is dropped: it logs to logfile itself.
        p = benchlib.spawn([PGBOUNCER, ini], d, env=benchlib.path_env(), cpus=CPUS_PROXY,
                           uid=pw.pw_uid, gid=pw.pw_gid)
        self.procs["pgbouncer"], self.logs["pgbouncer"], self.ports["pgbouncer"] = p, logf, port
        benchlib.wait_port(port, p, "pgbouncer", logf)

    def start(self, name, tag=""):
        (self.start_tokenpool if name == "tokenpool" else self.start_pgbouncer)(tag=tag)

    # -- connection strings

    def pg_env(self, password):
        return clean_env(("PG",), PGPASSWORD=password, PGCONNECT_TIMEOUT="30")

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
        load, waited = benchlib.wait_quiet(QUIET_MAX) if quiet else (None, 0.0)
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
                                        preexec_fn=benchlib.child_setup(cpus=CPUS_CLIENT))
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
            per_target = benchlib.interleaved(
                TARGETS, REPS, lambda t, rep: self.measure(key, t, rep, args, pu, du))
            self.results["summary"][key] = {
                "label": label, "targets": {t: summarize(runs) for t, runs in per_target.items()}}

    def measure(self, key, t, rep, args, pu, du):
        log(f"{key} rep {rep + 1}/{REPS}: {t} pgbench {' '.join(args)} -T {SECONDS}")
        r = self.run_pgbench(t, args, pu, du, SECONDS)
        r.update(scenario=key, rep=rep + 1)
        self.results["runs"].append(r)
        log(f"   tps={r['tps']} lat={r['latency_ms']} ms conn={r['conn_ms']} ms "
            f"proxy_cpu={fmt_num(r['cpu']['proxy_s'])}s pg_cpu={r['cpu']['postgres_s']:.1f}s "
            f"pgbench_cpu={r['cpu']['pgbench_s']:.1f}s other={r['cpu']['other_s']:.1f}s")
        return r

    # -- memory

    def rss_phase(self):
        if ONLY and "rss" not in ONLY:
            return
        for name in PROXIES:
            self.measure_rss(
                name, lambda port: pgwire.connect("127.0.0.1", port, CLIENT_USER, self.client_password,
                                                  self.db),
                lambda c: c.simple_query("SELECT 1"), IDLE_STEPS, IDLE_CONCURRENCY, who=name)

    # -- teardown

    def cleanup(self):
        benchlib.kill_process(self.pgbench)
        self.stop_all()
        self.finish(PROXIES)

    # -- report

    def table_rows(self):
        """(metric, tp, pgb, direct, tp/pgb, tp/direct, target-or-note) rows."""
        results = self.results
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
                rows.append((f"{label}: {metric}", a, b, d, r1, ratio(a, d) if direct else None,
                             benchlib.goal_note(r1, goal, higher_better)))

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

    def print_report(self, rows, c):
        res = self.results
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
        benchlib.print_table(("metric", "tokenpool", "pgbouncer", "direct", "tp/pgbouncer", "tp/direct"),
                             rows)
        benchlib.print_cpu(res["summary"], f"CPU used during the runs, in cores of {os.cpu_count()} "
                           "(proxy / postgres / pgbench / other processes):",
                           [(key, f"{label:34s}") for key, label, *_ in SCENARIOS], TARGETS,
                           ("proxy_s", "postgres_s", "pgbench_s", "other_s"))
        notes = list(self.notes)
        if "churn" in res["summary"]:
            t = res["summary"]["churn"]["targets"]
            cores = [t[x]["cores"]["pgbench_s"] for x in PROXIES if t[x]["cores"]["pgbench_s"]]
            if cores:
                notes.append(f"churn (i=4096): pgbench itself used {min(cores):.2f}-{max(cores):.2f} of "
                             f"{os.cpu_count()} cores (libpq's client-side PBKDF2 per login), so that "
                             f"row measures the client; churn i=1 takes that cost away.")
        benchlib.print_notes(notes + benchlib.noise_notes(res["runs"]))


def summarize(runs):
    """One target's runs of a scenario: medians over the runs that worked."""
    ok = benchlib.ok_runs(runs)
    return {"tps": benchlib.median_field(ok, "tps"), "latency_ms": benchlib.median_field(ok, "latency_ms"),
            "conn_ms": benchlib.median_field(ok, "conn_ms"),
            "proxy_us_per_xact": benchlib.median_field(ok, "proxy_us_per_xact"),
            "tps_all": [r["tps"] for r in runs],
            "cores": benchlib.median_cores(ok, ("proxy_s", "postgres_s", "pgbench_s", "other_s"))}


# ---------------------------------------------------------------- report

if __name__ == "__main__":
    sys.exit(benchlib.main(Bench))
