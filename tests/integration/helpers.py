"""Shared helpers for the integration tests (no tests, no fixtures here).

What more than one test file needs, written once; what differs per
protocol is passed in (a callable, a query, an exception type).

  config      CLIENT_USER/CLIENT_PASSWORD, pool_config(), apply_overrides(),
              churn_pool()
  waiting     wait_until()
  process     rss_kb(), has_asan(), open_fds(), assert_no_leak(), server_logins()
  clients     pg_connect(), pg_whoami(), mysql_connect(), mysql_whoami(),
              assert_serving(), rows(), one()
  threads     ClientThreads, LoginLoop (pg_login_loop, mysql_login_loop),
              SessionClients, assert_clients_recovered(), run_threads(),
              run_all_connected(), describe(), Sampler
  rig         imds_stats(), assert_token_not_logged()
  raw input   recv_until_closed(), garbage_round(), growth_over_second_round()
"""

import os
import selectors
import socket
import threading
import time
import traceback

import psycopg2
import pymysql
import pytest

CLIENT_USER = "app"
CLIENT_PASSWORD = "app-password"


# ---------------------------------------------------------------- config

def merge(dst, src):
    """Merge dict src into dst, recursing where both hold a dict."""
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            merge(dst[k], v)
        else:
            dst[k] = v


def apply_overrides(cfg, overrides):
    """Keyword overrides of a one-pool config: log/http/shutdown/identity/
    pools go to the top level, anything else into pools[0]; dicts merge."""
    for key, value in overrides.items():
        target = cfg if key in ("log", "http", "shutdown", "identity", "pools") else cfg["pools"][0]
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = value
    return cfg


def pool_config(rig, free_port, name, protocol, server, overrides, **pool_extra):
    """A config with one pool `name` of `protocol` in front of the rig: IMDS
    token for the system identity's db_user, the static client, free
    loopback ports for http and the pool. server: host, port, database,
    scope, tls (user and auth are added); pool_extra: more pool keys
    (client_tls, ...); overrides as in apply_overrides()."""
    http_port, listen_port = free_port(), free_port()
    pool = {
        "name": name,
        "protocol": protocol,
        "listen": f"127.0.0.1:{listen_port}",
        "server": dict(server, user=rig.identity("system")["db_user"], auth="token"),
        "clients": [{"user": CLIENT_USER, "password": CLIENT_PASSWORD}],
        **pool_extra,
        "pool": {"mode": "session", "size": 5, "connect_timeout": 5, "wait_timeout": 5},
    }
    cfg = {
        "log": {"level": "debug", "format": "text"},
        "http": {"listen": f"127.0.0.1:{http_port}"},
        "shutdown": {"timeout": 2},
        "identity": {"source": "imds", "imds_endpoint": rig.imds_endpoint},
        "pools": [pool],
    }
    return apply_overrides(cfg, overrides)


def churn_pool(**extra):
    """Pool settings that make tokenpool log in upstream all the time: a
    server lives 1 s, so client logins keep needing new server logins,
    each one presenting the cached token."""
    pool = {"mode": "session", "size": 4, "lifetime": 1, "idle_timeout": 1,
            "connect_timeout": 10, "wait_timeout": 20}
    pool.update(extra)
    return pool


# ---------------------------------------------------------------- waiting

def wait_until(cond, timeout, what, step=0.05):
    """Poll cond() every `step` s until it returns something truthy and
    return that; fail naming `what` (and the last value) after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value {v!r})")
        time.sleep(step)


# ---------------------------------------------------------------- the process

def rss_kb(pid):
    """VmRSS of pid in kB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def has_asan(pid):
    """Whether the process runs with AddressSanitizer's runtime."""
    with open(f"/proc/{pid}/maps") as f:
        return "libasan" in f.read()


def open_fds(pid):
    """What the process's descriptors point at, sorted."""
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return sorted(out)


def assert_no_leak(pid, before, rss_bound):
    """before: (rss_kb, open_fds) taken earlier. No more descriptors than
    then, and VmRSS grown by less than rss_bound kB."""
    rss_before, fds_before = before
    rss_after, fds_after = rss_kb(pid), open_fds(pid)
    assert len(fds_after) <= len(fds_before), f"file descriptors before {fds_before}\nafter {fds_after}"
    assert rss_after - rss_before < rss_bound, f"VmRSS grew from {rss_before} to {rss_after} KiB"


def server_logins(tp):
    """How many server logins tokenpool has logged so far."""
    return tp.output().count("server login ok")


# ---------------------------------------------------------------- clients

def pg_connect(tp, autocommit=True, **kw):
    """psycopg2 to tokenpool's first pool; kw are libpq keywords."""
    conn = psycopg2.connect(tp.pg_dsn(**kw))
    conn.autocommit = autocommit
    return conn


def pg_whoami(tp, **dsn):
    """current_user of a fresh psycopg2 session through tokenpool."""
    conn = psycopg2.connect(tp.pg_dsn(**dsn))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT current_user")
            return cur.fetchone()[0]
    finally:
        conn.close()


def mysql_connect(tp, **kw):
    """pymysql to tokenpool's first pool as the static client, autocommit
    unless kw says otherwise; kw go to pymysql.connect."""
    kw.setdefault("autocommit", True)
    return pymysql.connect(host="127.0.0.1", port=tp.listen[1], user=CLIENT_USER,
                           password=CLIENT_PASSWORD, database=tp.config["pools"][0]["name"], **kw)


def mysql_whoami(tp, **kw):
    """The user part of CURRENT_USER() of a fresh pymysql session."""
    conn = mysql_connect(tp, **kw)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT CURRENT_USER()")
            return cur.fetchone()[0].split("@")[0]
    finally:
        conn.close()


def assert_serving(tp, connect, sql, expected):
    """tokenpool still runs, and a normal client (connect(tp)) logs in and
    gets the row `expected` for sql."""
    assert tp.running, "tokenpool died:\n" + tp.output()[-4000:]
    conn = connect(tp)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            assert cur.fetchone() == expected
    finally:
        conn.close()


def rows(conn, sql, args=None):
    """All rows of sql (DB-API); None where it returns no result set."""
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall() if cur.description else None


def one(conn, sql, args=None):
    return rows(conn, sql, args)[0][0]


# ---------------------------------------------------------------- client threads

class ClientThreads:
    """n daemon threads running self._run(i) until stopped. As a context
    manager: started on entry, stopped on exit (fails if one is stuck)."""

    def __init__(self, n):
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(n)]

    def _run(self, i):
        raise NotImplementedError

    def __enter__(self):
        for th in self._threads:
            th.start()
        return self

    def stop(self):
        self._stop.set()
        for th in self._threads:
            th.join(60)
            assert not th.is_alive(), "a client thread is stuck"

    def __exit__(self, *exc):
        self.stop()


class LoginLoop(ClientThreads):
    """Threads that log in, ask who they are and disconnect, over and over,
    until stopped. whoami() -> user name; an exception of type `failure`
    is an error, recorded as describe(e). Records ok (count), users (set)
    and errors [(time, text)]."""

    def __init__(self, threads, whoami, failure, describe):
        self.whoami, self.failure, self.describe = whoami, failure, describe
        self.ok = 0
        self.users = set()
        self.errors = []
        super().__init__(threads)

    def _run(self, i):
        while not self._stop.is_set():
            try:
                user = self.whoami()
                with self._lock:
                    self.ok += 1
                    self.users.add(user)
            except self.failure as e:
                with self._lock:
                    self.errors.append((time.monotonic(), self.describe(e)))
                time.sleep(0.05)


def pg_login_loop(tp, threads):
    """LoginLoop of psycopg2 clients (SELECT current_user)."""
    return LoginLoop(threads, lambda: pg_whoami(tp, connect_timeout=20), psycopg2.Error,
                     lambda e: str(e).strip())


def mysql_login_loop(tp, threads):
    """LoginLoop of pymysql clients (SELECT CURRENT_USER())."""
    return LoginLoop(threads, lambda: mysql_whoami(tp, connect_timeout=20), pymysql.err.MySQLError, repr)


class SessionClients(ClientThreads):
    """Clients that stay connected and run queries in a loop; on an error
    they record it and reconnect. Per client: log[i], a list of
    (time, error|None). connect() -> connection; query(conn) runs and
    checks one query; an exception of type `failure` is an error, recorded
    as describe(e, conn)."""

    def __init__(self, n, connect, query, failure, describe):
        self.connect, self.query, self.failure, self.describe = connect, query, failure, describe
        self.log = [[] for _ in range(n)]
        super().__init__(n)

    def _run(self, i):
        conn = None
        while not self._stop.is_set():
            t = time.monotonic()
            try:
                if conn is None:
                    conn = self.connect()
                self.query(conn)
                self.log[i].append((t, None))
                time.sleep(0.01)
            except self.failure as e:
                self.log[i].append((t, self.describe(e, conn)))
                try:
                    if conn is not None:
                        conn.close()
                except Exception:
                    pass
                conn = None
                time.sleep(0.05)
        if conn is not None:
            conn.close()


def assert_clients_recovered(logs, t_down, t_up, server):
    """After a restart of `server` between t_down and t_up, for each
    SessionClients log: it saw an error, none before the restart or later
    than 0.5 s after it, and it recovered. Returns the errors per client."""
    out = []
    for i, log in enumerate(logs):
        errs = [(t, e) for t, e in log if e]
        assert errs, f"client {i} saw no error across the restart"
        late = [(t - t_up, e) for t, e in errs if t > t_up + 0.5]
        assert not late, f"client {i} failed after {server} was back: {late[:3]}"
        assert all(t >= t_down - 0.1 for t, _ in errs), f"client {i} failed before the restart: {errs[:3]}"
        assert any(e is None and t > t_up for t, e in log), f"client {i} never recovered"
        out.append(errs)
    return out


def run_threads(n, target, timeout=120):
    """Run target(i) in n threads; return {i: formatted exception} of failures."""
    errors = {}

    def wrap(i):
        try:
            target(i)
        except BaseException:
            errors[i] = traceback.format_exc()

    threads = [threading.Thread(target=wrap, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
    hung = [i for i, t in enumerate(threads) if t.is_alive()]
    assert not hung, f"{len(hung)} client threads still running after {timeout} s"
    return errors


def run_all_connected(n, connect, workload, timeout=120):
    """n clients connect at once, wait until all n are connected, then
    each runs workload(conn, i); run_threads()' failures."""
    all_connected = threading.Barrier(n)

    def client(i):
        try:
            conn = connect()
        except BaseException:
            all_connected.abort()
            raise
        try:
            all_connected.wait(60)  # all n are connected at the same time
            workload(conn, i)
        finally:
            conn.close()

    return run_threads(n, client, timeout)


def describe(errors, limit=3):
    """The first `limit` of run_threads()' failures, for an assertion message."""
    first = sorted(errors.items())[:limit]
    return f"{len(errors)} clients failed; first: " + "\n".join(f"client {i}:\n{e}" for i, e in first)


class Sampler(threading.Thread):
    """Calls count() every `interval` seconds until stopped; stop() returns
    the samples. what: the source, named if sampling fails."""

    def __init__(self, count, what, interval=0.1):
        super().__init__(daemon=True)
        self.count, self.what, self.interval = count, what, interval
        self.samples = []
        self.halt = threading.Event()
        self.error = None

    def run(self):
        try:
            while not self.halt.is_set():
                self.samples.append(self.count())
                self.halt.wait(self.interval)
        except Exception as e:  # reported by the test
            self.error = e

    def stop(self):
        self.halt.set()
        self.join(30)
        assert self.error is None, f"sampling {self.what} failed: {self.error}"
        return self.samples


# ---------------------------------------------------------------- the rig

def imds_stats(rig):
    """(IMDS requests, IMDS tokens issued, all of the IdP's stats)."""
    st = rig.idp_stats()
    return st["requests"]["imds"], st["issued"]["imds"], st


def assert_token_not_logged(rig, token, server_log):
    """Neither the PAM module's log nor server_log (text) holds the token's
    signature."""
    sig = token.split(".")[2]
    with open(rig.pam_log_file) as f:
        assert sig not in f.read()
    assert sig not in server_log


# ---------------------------------------------------------------- raw input

def recv_until_closed(sock, timeout=5, limit=1 << 20):
    """Everything the peer sends until it closes: (data, how), how "eof" or
    "reset". Fails if the connection is still open after `timeout` s or
    more than `limit` bytes come."""
    sock.settimeout(timeout)
    data = b""
    how = "eof"
    deadline = time.monotonic() + timeout
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            how = "reset"
            break
        except socket.timeout:
            pytest.fail(f"tokenpool neither answered nor closed within {timeout}s (got {data[:200]!r})")
        if not chunk:
            break
        data += chunk
        if len(data) > limit:
            pytest.fail("tokenpool keeps sending")
        if time.monotonic() > deadline:
            pytest.fail(f"connection still open after {timeout}s")
    return data, how


def garbage_round(listen, rnd, opening, garbage, n=200, timeout=15):
    """n connections misbehave until tokenpool has hung up on each; fails
    naming the kinds still open after `timeout` seconds.

    opening(i, rnd) -> (kind, first bytes, keeps sending): what connection
    i sends at once; garbage(kind, rnd) -> bytes: what a connection that
    keeps sending sends each round, until tokenpool hangs up."""
    open_socks = {}
    sel = selectors.DefaultSelector()
    for i in range(n):
        s = socket.create_connection(listen, timeout=5)
        kind, first, keep_sending = opening(i, rnd)
        if first:
            s.sendall(first)
        s.setblocking(False)
        open_socks[s] = (kind, keep_sending)
        sel.register(s, selectors.EVENT_READ)

    def drop(s):
        sel.unregister(s)
        del open_socks[s]
        s.close()

    deadline = time.monotonic() + timeout
    rounds = 0
    while open_socks and time.monotonic() < deadline:
        rounds += 1
        for s, (kind, keep_sending) in list(open_socks.items()):
            if not keep_sending:
                continue
            try:
                s.send(garbage(kind, rnd))
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                drop(s)
        for key, _ in sel.select(timeout=0.05):
            s = key.fileobj
            try:
                while True:
                    if not s.recv(65536):
                        raise ConnectionResetError
            except BlockingIOError:
                continue
            except OSError:
                drop(s)
    left = sorted({str(kind) for kind, _ in open_socks.values()})
    for s in open_socks:
        s.close()
    sel.close()
    assert not open_socks, (f"{len(open_socks)} garbage connections still open after {timeout} s "
                            f"({rounds} rounds): {left}")


def growth_over_second_round(pid, run_round, healthy):
    """run_round() then healthy(), twice; the growth of pid's VmRSS (kB)
    across the second time. The first warms the allocator (and ASan's
    quarantine), so a per-connection leak shows in the second."""
    run_round()
    healthy()
    rss0 = rss_kb(pid)
    run_round()
    healthy()
    return rss_kb(pid) - rss0
