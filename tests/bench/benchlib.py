"""What the benchmarks in tests/bench/ share (test code, not product code).

pg/bench.py, mysql/bench.py and tds/bench.py measure different clients
against different servers, but run the same way: a run directory that the
next run sweeps away if this one was killed outright, children that die
with bench.py and run at the bench's priority, CPU accounting from /proc,
a wait for a quiet machine before each measured run, targets interleaved
with a rotating order and the median kept, tokenpool's VmRSS while it
holds idle clients, the table, and a main() that stops everything on an
error, Ctrl-C or SIGTERM and exits 0, 1 or 130. That part lives here once;
each bench.py keeps its targets, scenarios, clients and notes.

Importing this module puts tests/rig on sys.path (every bench uses the
rig). Environment read here, the same for every bench: BENCH_NICE (-5),
BENCH_QUIET_CORES (0.3), BENCH_DIR, BENCH_KEEP, BENCH_OUT, TOKENPOOL_BIN.
"""

import asyncio
import ctypes
import json
import os
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
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "rig"))

import idle_clients  # noqa: E402
from rig import Rig, free_port  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
LOG_TAG = "bench"               # the tds bench logs as "tdsbench"


# ---------------------------------------------------------------- settings

def env_int(name, default):
    """An integer knob; unset or blank means the default."""
    v = os.environ.get(name, "")
    return int(v) if v.strip() else default


def env_float(name, default):
    """A float knob; unset or blank means the default."""
    v = os.environ.get(name, "")
    return float(v) if v.strip() else default


def env_list(name, default):
    """A comma-list knob (default: a comma-list too); blanks dropped."""
    return [x.strip() for x in os.environ.get(name, default).split(",") if x.strip()]


NICE = env_int("BENCH_NICE", -5)                  # for everything measured
QUIET_CORES = env_float("BENCH_QUIET_CORES", 0.3)


class BenchError(RuntimeError):
    """A measurement cannot go on; main() reports it and exits 1."""


class Interrupted(BaseException):
    """SIGINT, SIGTERM or SIGHUP: a BaseException, so that no
    `except Exception` on the way out swallows it."""


def log(msg):
    print(f"[{LOG_TAG} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def tail(path, n=60):
    """The last n lines of a log, or why there are none."""
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError as e:
        return f"({path}: {e})"


# ---------------------------------------------------------------- children

def cpu_set(spec):
    """A CPU list like "0,2-3" as a set of CPU numbers."""
    out = set()
    for part in spec.split(","):
        if "-" in part:
            a, b = part.split("-")
            out.update(range(int(a), int(b) + 1))
        elif part.strip():
            out.add(int(part))
    return out


def child_setup(cpus="", uid=None, gid=None):
    """preexec_fn: open-files limit to the hard limit, optional CPU pinning,
    the bench's priority, optional user switch, then SIGTERM when this
    (parent) process dies, so nothing outlives a killed run -- after the
    user switch, because changing credentials clears it."""
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


def path_env():
    """A daemon's whole environment: PATH only, so nothing of the caller's
    (proxy or libpq settings) changes what is measured."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def clean_env(prefixes, **extra):
    """A client program's environment: the caller's, without variables
    starting with `prefixes` (libpq reads PG*, libmariadb MYSQL_PWD,
    MYSQL_HOST, ...), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(extra)
    return env


def write_private(path, text, owner=None):
    """Write a file only its owner can read (configs hold passwords,
    verifiers and tokens); owner = (uid, gid) hands it over."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    if owner is not None:
        os.chown(path, *owner)


def spawn(cmd, cwd, output=None, env=None, cpus="", uid=None, gid=None):
    """Start a server process (proxy, relay) in its own session, so a Ctrl-C
    at the terminal reaches only bench.py, which then stops it in order.
    stdout and stderr are appended to `output`, or dropped without one."""
    out = open(output, "ab") if output else subprocess.DEVNULL
    try:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                cwd=cwd, env=env, preexec_fn=child_setup(cpus, uid, gid),
                                start_new_session=True)
    finally:
        if output:
            out.close()


def wait_port(port, proc, what, logfile, timeout=15):
    """Until proc listens on 127.0.0.1:port; BenchError with its log tail
    when it exits first or takes longer than timeout seconds."""
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


def stop_process(p, timeout=10):
    """SIGTERM (every server here shuts down on it), then SIGKILL after
    timeout seconds; nothing to do for None or a process already gone."""
    if p is None or p.poll() is not None:
        return
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def kill_process(p):
    """A client run cut short (error or Ctrl-C): its result is lost anyway."""
    if p is not None and p.poll() is None:
        p.kill()
        p.wait()


def exit_reason(name, rc):
    """'name exited with status rc', with the signal when it was one (a
    crash shows as SIGSEGV/SIGABRT)."""
    return f"{name} exited with status {rc}" + (f" (signal {-rc})" if rc < 0 else "")


# ---------------------------------------------------------------- /proc

def proc_stat(pid):
    """The fields of /proc/PID/stat after the command name (which may hold
    spaces and parentheses), or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def proc_ticks(pid, children=False):
    """utime+stime of a process (all its threads), optionally with its reaped
    children (MariaDB's PAM helper, PostgreSQL's exited backends); 0 when
    it is gone."""
    f = proc_stat(pid)
    if f is None:
        return 0
    t = int(f[11]) + int(f[12])
    if children:
        t += int(f[13]) + int(f[14])
    return t


def proc_start(pid):
    """Start time of a process (ticks since boot): with the pid it names
    one process, even after the pid is reused."""
    try:
        return int(proc_stat(pid)[19])
    except (TypeError, ValueError, IndexError):
        return None


def vm_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


def renice_threads(pid):
    """All threads of pid to NICE: setpriority on a pid is per thread on
    Linux, and new threads inherit the value of the thread creating them."""
    if not NICE:
        return
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        tids = [pid]
    for tid in tids:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, NICE)
        except OSError:
            pass


def machine_split():
    """/proc/stat's first line, in ticks: irq+softirq (loopback TCP is mostly
    softirq work; without CONFIG_IRQ_TIME_ACCOUNTING those ticks are also
    charged to the process that was running, usually one of ours), steal
    (the hypervisor gave this vCPU to someone else), busy and total."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return {"irq": v[5] + v[6], "steal": v[7],
            "busy": sum(v[:8]) - v[3] - v[4], "total": sum(v[:8])}


def machine_ticks():
    """(busy, total) ticks of the whole machine: busy = user + nice + system
    + irq + softirq + steal."""
    v = machine_split()
    return v["busy"], v["total"]


def wait_quiet(max_wait, cores=QUIET_CORES):
    """Before a measured run: wait (up to max_wait s) until the machine uses
    at most `cores` -- our own processes are idle between runs, so what is
    busy then is someone else's. Returns (cores busy in the last second,
    seconds waited)."""
    t0 = time.monotonic()
    while True:
        b0, _ = machine_ticks()
        time.sleep(1)
        b1, _ = machine_ticks()
        busy = (b1 - b0) / CLK_TCK
        waited = time.monotonic() - t0 - 1
        if busy <= cores or waited >= max_wait:
            return busy, waited


# ---------------------------------------------------------------- run directory

def sweep_stale_dirs(prefix):
    """Remove run directories of earlier runs that were killed outright
    (SIGKILL: no cleanup ran; their processes died with them). The owner
    file names the bench.py that made one; if that process is gone, so is
    any use of the directory."""
    tmp = tempfile.gettempdir()
    for name in os.listdir(tmp):
        d = os.path.join(tmp, name)
        if not name.startswith(prefix) or not os.path.isdir(d):
            continue
        try:
            with open(os.path.join(d, "owner")) as f:
                pid, start = (int(x) for x in f.read().split())
        except (OSError, ValueError):
            continue
        if proc_start(pid) != start:
            shutil.rmtree(d, ignore_errors=True)


def make_run_dir(prefix):
    """(directory, keep): BENCH_DIR (must be empty, kept) or a new /tmp
    directory, removed at the end unless BENCH_KEEP=1. Its owner file lets
    a later run tell whether it is abandoned."""
    explicit = os.environ.get("BENCH_DIR")
    keep = bool(explicit) or os.environ.get("BENCH_KEEP") == "1"
    if explicit:
        os.makedirs(explicit, exist_ok=True)
        if os.listdir(explicit):
            raise BenchError(f"BENCH_DIR {explicit} is not empty")
        d = os.path.abspath(explicit)
    else:
        sweep_stale_dirs(prefix)
        d = tempfile.mkdtemp(prefix=prefix)
    os.chmod(d, 0o755)
    with open(os.path.join(d, "owner"), "w") as f:
        f.write(f"{os.getpid()} {proc_start(os.getpid())}\n")
    return d, keep


def tokenpool_bin():
    return os.environ.get("TOKENPOOL_BIN") or os.path.join(REPO, "build", "tokenpool")


# ---------------------------------------------------------------- repetitions

def interleaved(targets, reps, run_one):
    """run_one(target, rep) for every target, reps times, the order rotating
    each repetition so that no target always goes first. Returns
    {target: [what run_one returned, in rep order]}."""
    per_target = {t: [] for t in targets}
    for rep in range(reps):
        k = rep % len(targets)
        for t in targets[k:] + targets[:k]:
            per_target[t].append(run_one(t, rep))
    return per_target


def ok_runs(runs):
    return [r for r in runs if "error" not in r]


def median_of(runs, get):
    """Median of get(run) over the runs where it is not None (else None)."""
    vals = [v for v in map(get, runs) if v is not None]
    return statistics.median(vals) if vals else None


def median_field(runs, field):
    return median_of(runs, lambda r: r.get(field))


def median_cores(runs, fields):
    """{field: median cores}: each run's CPU seconds in cpu[field] over its
    wall time."""
    return {k: median_of(runs, lambda r, k=k: r["cpu"][k] / r["cpu"]["wall_s"]
                         if r["cpu"].get(k) is not None else None)
            for k in fields}


# ---------------------------------------------------------------- idle clients

async def idle_rss(pid, connect, probe, steps, concurrency, who=""):
    """VmRSS of process pid before and while it holds idle clients.

    connect() opens one logged-in client, probe(client) runs a query on it.
    First one client logs in and runs a query, so the proxy holds its token
    and a server connection before the baseline; then the clients are
    opened up to each count in steps (cumulative). After each step a sample
    of the idle clients runs a query: idle, they must still be served."""
    c = await connect()
    await probe(c)
    c.close()
    await asyncio.sleep(1)
    out = {"baseline_kb": vm_rss_kb(pid), "steps": []}
    conns = []
    try:
        for n in steps:
            need = n - len(conns)
            _, secs, errors = await idle_clients.open_many(need, connect, concurrency, into=conns)
            if errors:
                raise BenchError(f"{len(errors)} of {need} logins failed (first: {errors[0]})")
            for c in conns[:: max(1, len(conns) // 10)]:
                await probe(c)
            await asyncio.sleep(1)
            rss = vm_rss_kb(pid)
            step = {"clients": len(conns), "rss_kb": rss, "login_s": round(secs, 2),
                    "bytes_per_client": (rss - out["baseline_kb"]) * 1024 / len(conns)}
            out["steps"].append(step)
            log(f"   {who}{len(conns)} idle clients, VmRSS {rss} kB "
                f"({step['bytes_per_client']:.0f} B/client, logins took {secs:.1f}s)")
    finally:
        for c in conns:
            c.close()
        await asyncio.sleep(0.5)
    out["after_close_kb"] = vm_rss_kb(pid)
    return out


# ---------------------------------------------------------------- report

def fmt_num(v, digits=None):
    """A value for the table: '-' for none, else 0-2 decimals by size."""
    if v is None:
        return "-"
    if digits is None:
        digits = 0 if abs(v) >= 100 else (1 if abs(v) >= 10 else 2)
    return f"{v:,.{digits}f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def print_table(header, rows, drop_empty=False, out=sys.stdout):
    """header: the metric column, the value columns and the ratio columns (a
    '/' in the name: two decimals). Each row has those and a note last,
    printed unpadded under an empty heading. drop_empty leaves out the
    columns no row has a value in (targets that did not run)."""
    keep = [0] + [i for i in range(1, len(header))
                  if not drop_empty or any(r[i] is not None for r in rows)]
    cells = [[header[i] for i in keep] + [""]]
    for r in rows:
        cells.append([r[0]] + [fmt_num(r[i], 2 if "/" in header[i] else None) for i in keep[1:]]
                     + [r[-1]])
    w = [max(len(c[i]) for c in cells) for i in range(len(keep))]
    for n, c in enumerate(cells):
        print("  ".join([c[0].ljust(w[0])] + [c[i].rjust(w[i]) for i in range(1, len(keep))]
                        + [c[-1]]).rstrip(), file=out)
        if n == 0:
            print("  ".join("-" * x for x in w), file=out)


def print_cpu(summary, heading, labels, targets, fields, out=sys.stdout):
    """Where the CPU went: per scenario, for each target the median cores of
    each of `fields` (proxy / server / client / other), so a run someone
    else disturbed stands out. labels: (summary key, label as printed)."""
    if not summary:
        return
    print("\n" + heading, file=out)
    for key, label in labels:
        if key not in summary:
            continue
        parts = []
        for t in targets:
            c = summary[key]["targets"][t]["cores"]
            parts.append(f"{t} " + "/".join(fmt_num(c[f], 2) for f in fields))
        print(f"  {label} " + "   ".join(parts), file=out)


def noise_notes(runs):
    """A note when other processes took a noticeable share of the CPU."""
    other = [r["cpu"]["other_s"] / r["cpu"]["wall_s"] for r in runs if r["cpu"]["wall_s"]]
    if other and max(other) > 0.2:
        return [f"other processes on this machine used up to {max(other):.2f} cores during "
                f"some runs: expect noise (see runs[].cpu in the JSON)."]
    return []


def goal_note(r, goal=None, higher_better=True, against=""):
    """The table's note on a ratio r (tokenpool / the reference): whether
    it meets goal (a minimum), else which way is better."""
    if r is None:
        return ""
    if goal is not None:
        return f"goal >= {goal}x{against}: {'met' if r >= goal else 'MISSED'}"
    return "" if higher_better else "lower is better"


def print_notes(notes):
    for n in notes:
        print(f"\nnote: {n}")


# ---------------------------------------------------------------- the bench

class BaseBench:
    """State and steps every bench has: the run directory, the processes it
    started (stopped in cleanup, checked after every run), their logs, the
    results that become the JSON, failures and notes.

    A subclass sets dir_prefix, root_why and table_keys, may override
    preflight() (checks before anything starts), and provides run()
    (set-up and measurements), table_rows() and print_report(rows, config)
    (the table and what explains it), cleanup() (ends with finish()) and
    start_tokenpool(tag) (builds its pool, calls launch_tokenpool()).
    start(name, tag) restarts a server that died; the default knows
    tokenpool."""

    dir_prefix = "tokenpool-bench-"
    root_why = "the rig needs it"
    table_keys = ()          # JSON names of the table's columns, note last

    def __init__(self):
        self.rig = None
        self.procs = {}          # name -> Popen of the servers we started
        self.logs = {}           # name -> its log (tail printed on an error)
        self.ports = {}          # name -> the port clients use
        self.http_port = None    # tokenpool's HTTP (metrics, /v1/pools)
        self.failures = []
        self.notes = []
        self.results = {"config": {}, "runs": [], "summary": {}, "rss": {}, "notes": self.notes}
        self.tp_bin = tokenpool_bin()
        self.dir, self.keep = make_run_dir(self.dir_prefix)

    @staticmethod
    def preflight():
        """Refuse (BenchError) before anything starts; nothing by default."""

    def start_rig(self):
        """The rig (IdP, databases, certificates) inside the run directory,
        with 24-hour tokens so that none expires during a run; token_user =
        the database user of its IMDS identity."""
        log(f"run dir {self.dir}; starting the rig")
        self.rig = Rig(dir=os.path.join(self.dir, "rig"), keep=True)
        self.rig.start()
        self.rig.idp_config(lifetime=24 * 3600)
        self.token_user = self.rig.identity("system")["db_user"]

    def fail(self, msg):
        """A failed measurement: reported, and the exit status becomes 1,
        but the other measurements go on."""
        self.failures.append(msg)
        log("FAILURE: " + msg)

    def launch_tokenpool(self, pool, port, tag="", cpus="", **extra):
        """tokenpool with one pool listening on port: warn-level log (no line
        per login, like the other targets), HTTP on a free port, the rig's
        IMDS as identity, `extra` top-level sections. Config and log in
        <run dir>/tokenpool/tokenpool<tag>.*; returns once it listens."""
        d = os.path.join(self.dir, "tokenpool")
        os.makedirs(d, exist_ok=True)
        self.http_port = free_port()
        cfg = {"log": {"level": "warn", "format": "text"},
               "http": {"listen": f"127.0.0.1:{self.http_port}"}, **extra,
               "identity": {"source": "imds", "imds_endpoint": self.rig.imds_endpoint},
               "pools": [pool]}
        conf = os.path.join(d, f"tokenpool{tag}.json")
        write_private(conf, json.dumps(cfg, indent=2))
        logf = os.path.join(d, f"tokenpool{tag}.log")
        p = spawn([self.tp_bin, "run", "-c", conf], d, output=logf, env=path_env(), cpus=cpus)
        self.procs["tokenpool"], self.logs["tokenpool"], self.ports["tokenpool"] = p, logf, port
        wait_port(port, p, "tokenpool", logf)

    def start(self, name, tag=""):
        """(Re)start one of our servers by name."""
        if name != "tokenpool":
            raise BenchError(f"do not know how to start {name}")
        self.start_tokenpool(tag=tag)

    def stop(self, name):
        stop_process(self.procs.pop(name, None))

    def stop_all(self):
        for name in list(self.procs):
            self.stop(name)

    def check_alive(self, name):
        """After a run: if `name` died, record why (its log tail) and start a
        new one, so one crash costs one measurement, not the rest."""
        p = self.procs.get(name)
        if p is None or p.poll() is None:
            return True
        self.fail(f"{exit_reason(name, p.returncode)}; log tail ({self.logs[name]}):\n"
                  f"{tail(self.logs[name])}")
        self.procs.pop(name)
        log(f"restarting {name}")
        self.start(name, tag=f"-{int(time.time())}")
        return False

    def measure_rss(self, name, connect, probe, steps, concurrency, who=""):
        """results["rss"][name] from a fresh `name` (so the benchmarks'
        allocations do not count) holding idle clients: see idle_rss.
        connect(port) opens one client to it."""
        idle_clients.raise_nofile()
        self.stop(name)
        self.start(name, tag="-rss")
        pid, port = self.procs[name].pid, self.ports[name]
        log(f"rss: {name} pid {pid}, opening idle clients {steps}")
        try:
            self.results["rss"][name] = asyncio.run(
                idle_rss(pid, lambda: connect(port), probe, steps, concurrency,
                         f"{who}: " if who else ""))
        except Exception as e:  # noqa: BLE001
            self.fail(f"rss phase{' for ' + who if who else ''}: {type(e).__name__}: {e}\n"
                      f"{tail(self.logs[name])}")
        self.check_alive(name)

    def report(self):
        """The table (also results["table"] in the JSON), when anything was
        measured."""
        rows = self.table_rows()
        self.results["table"] = [dict(zip(self.table_keys, r)) for r in rows]
        if rows:
            self.print_report(rows, self.results["config"])

    def finish(self, log_dirs, keep=False):
        """The end of every cleanup, after our processes stopped: the logs'
        tails (quiet levels: warnings and errors) into the JSON, the rig
        stopped, the run directory removed unless it is to be kept."""
        self.results["logs"] = {}
        for sub in log_dirs:
            p = os.path.join(self.dir, sub)
            if os.path.isdir(p):
                for name in sorted(os.listdir(p)):
                    if name.endswith(".log"):
                        self.results["logs"][name] = tail(os.path.join(p, name), 40)
        if self.rig is not None:
            self.rig.stop()
        if self.keep or keep:
            log(f"kept {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def _set_signals(handler):
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, handler)


def main(bench_class):
    """Run a bench: checks, bench_class(), its run(); on an error, Ctrl-C,
    SIGTERM or SIGHUP stop everything it started (cleanup() runs with those
    signals ignored, so a second Ctrl-C cannot cut it short); then its
    report(), the failures and BENCH_OUT. Returns the exit status: 0 when
    every measurement completed, 1 when one failed, 130 when interrupted."""
    t_start = time.monotonic()
    bench = None
    interrupted = []

    def on_signal(signum, _frame):
        if not interrupted:
            interrupted.append(signum)
            raise Interrupted(signal.Signals(signum).name)

    _set_signals(on_signal)
    rc = 0
    try:
        if os.geteuid() != 0:
            raise BenchError(f"run as root ({bench_class.root_why})")
        if not os.access(tokenpool_bin(), os.X_OK):
            raise BenchError("tokenpool binary not found: build it or set TOKENPOOL_BIN")
        bench_class.preflight()
        bench = bench_class()
        bench.run()
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
        _set_signals(signal.SIG_IGN)
        if bench is not None:
            try:
                bench.cleanup()
            except Exception as e:  # noqa: BLE001
                log(f"cleanup: {type(e).__name__}: {e}")
        _set_signals(signal.SIG_DFL)
    if bench is None:
        return rc or 1
    res = bench.results
    res["elapsed_s"] = round(time.monotonic() - t_start, 1)
    res["failures"] = bench.failures
    if rc == 0 and bench.failures:
        rc = 1
    bench.report()
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
