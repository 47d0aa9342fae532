"""MySQL's own load tools through tokenpool: mysqlslap (many short
connections) and sysbench (persistent connections, prepared statements in
session mode, multiplexed transactions in transaction mode).

Each run must finish without a single error, and what the tool says it did
is checked against the database (rows written) or against tokenpool's own
counters (/v1/pools: requests forwarded), so a run that silently did
nothing fails too.

Runtime: about 20 s.
"""

import json
import os
import re
import subprocess
import urllib.request

import pytest

from conftest import CLIENT_PASSWORD, CLIENT_USER

MODES = ["session", "transaction"]


def client_env():
    return {k: v for k, v in os.environ.items() if not k.startswith("MYSQL")}


def pool_stats(tp):
    with urllib.request.urlopen(f"http://{tp.http[0]}:{tp.http[1]}/v1/pools", timeout=5) as r:
        return json.load(r)["pools"][0]


def server_logins(tp):
    return tp.output().count("server login ok")


# ---------------------------------------------------------------- mysqlslap

# Reconnect after this many statements. Plain client connections: with
# TLS, mysqlslap's 20 threads spend ~10 s in the client library for 40
# logins (directly against MariaDB too); TLS logins are tested elsewhere.
SLAP_DETACH = {"session": 2, "transaction": 1}


@pytest.mark.parametrize("mode", MODES)
def test_mysqlslap_many_short_connections(rig, tokenpool, mysql_config, mode):
    """20 concurrent clients, 3 iterations, 200 inserts per iteration,
    each client reconnecting every few statements (120 or 600 client
    logins) over at most 5 server connections; every insert lands."""
    detach = SLAP_DETACH[mode]
    rig.mysql_admin("DROP TABLE IF EXISTS tp_slap; "
                    "CREATE TABLE tp_slap (id INT AUTO_INCREMENT PRIMARY KEY, c INT)",
                    db=rig.mysql_database)
    tp = tokenpool(mysql_config(pool={"mode": mode, "size": 5, "max_clients": 100,
                                      "wait_timeout": 30}))
    before = pool_stats(tp)
    try:
        r = subprocess.run(
            ["mysqlslap", "--no-defaults", "--protocol=TCP", "-h", "127.0.0.1",
             "-P", str(tp.listen[1]), "-u", CLIENT_USER, f"--password={CLIENT_PASSWORD}",
             f"--create-schema={rig.mysql_database}", "--no-drop",
             "--concurrency=20", "--iterations=3", "--number-of-queries=200", f"--detach={detach}", "--skip-ssl",
             "--query=INSERT INTO tp_slap (c) VALUES (1)"],
            capture_output=True, text=True, env=client_env(), timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr + tp.output()[-3000:]
        assert re.search(r"Number of clients running queries: 20\b", r.stdout), r.stdout
        assert re.search(r"Average number of queries per client: 10\b", r.stdout), r.stdout
        count = rig.mysql_admin("SELECT COUNT(*) FROM tp_slap", db=rig.mysql_database)
        assert int(count[0][0]) == 600, count
    finally:
        rig.mysql_admin("DROP TABLE IF EXISTS tp_slap", db=rig.mysql_database)
    after = pool_stats(tp)
    assert after["queries"] - before["queries"] >= 600, (before, after)
    logins = tp.output().count("client logged in as app")
    assert logins >= 3 * 20 * 10 // detach, logins
    assert 1 <= server_logins(tp) <= 5, tp.output()[-3000:]
    assert "error" not in r.stderr.lower(), r.stderr


# ---------------------------------------------------------------- sysbench

def sysbench(tp, rig, *args, timeout=120):
    cmd = ["sysbench", "--db-driver=mysql", "--mysql-host=127.0.0.1",
           f"--mysql-port={tp.listen[1]}", f"--mysql-user={CLIENT_USER}",
           f"--mysql-password={CLIENT_PASSWORD}", f"--mysql-db={rig.mysql_database}",
           "--tables=2", "--table-size=500", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=client_env(), timeout=timeout)


def sysbench_counts(out):
    """(queries, transactions, ignored errors, reconnects) from a run's report."""
    def num(label):
        m = re.search(rf"^\s*{label}:\s+(\d+)", out, re.M)
        assert m, f"no {label!r} in sysbench output:\n{out}"
        return int(m.group(1))
    return num("queries"), num("transactions"), num("ignored errors"), num("reconnects")


@pytest.fixture
def sbtables(rig):
    """No sysbench tables before the test; dropped after it, whatever
    happened."""
    rig.mysql_admin("DROP TABLE IF EXISTS sbtest1, sbtest2", db=rig.mysql_database)
    yield
    rig.mysql_admin("DROP TABLE IF EXISTS sbtest1, sbtest2", db=rig.mysql_database)


@pytest.mark.parametrize("mode", MODES)
def test_sysbench_oltp_through_tokenpool(rig, tokenpool, mysql_config, mode, sbtables):
    """Session mode: oltp_read_only with server-side prepared statements on
    one server connection per thread. Transaction mode: the same
    transactions (BEGIN ... COMMIT) from 8 threads over 3 server
    connections, text protocol (prepared statements would pin each thread
    to a server). Not oltp_read_write: its deadlocks between threads are
    the server's business and would make the error count meaningless."""
    size = 8 if mode == "session" else 3
    tp = tokenpool(mysql_config(pool={"mode": mode, "size": size, "wait_timeout": 30}))
    prep = sysbench(tp, rig, "oltp_read_only", "prepare")
    assert prep.returncode == 0, prep.stdout + prep.stderr + tp.output()[-3000:]
    rows = rig.mysql_admin("SELECT (SELECT COUNT(*) FROM sbtest1), (SELECT COUNT(*) FROM sbtest2)",
                           db=rig.mysql_database)
    assert [int(x) for x in rows[0]] == [500, 500], rows
    before = pool_stats(tp)
    if mode == "session":
        run = sysbench(tp, rig, "--threads=8", "--time=4", "--db-ps-mode=auto",
                       "oltp_read_only", "run")
    else:
        run = sysbench(tp, rig, "--threads=8", "--time=4", "--db-ps-mode=disable",
                       "oltp_read_only", "run")
    assert run.returncode == 0, run.stdout + run.stderr + tp.output()[-3000:]
    assert "FATAL" not in run.stdout + run.stderr, run.stdout + run.stderr
    queries, transactions, ignored, reconnects = sysbench_counts(run.stdout)
    assert (ignored, reconnects) == (0, 0), run.stdout
    assert transactions > 0 and queries >= 14 * transactions, run.stdout
    after = pool_stats(tp)
    assert after["queries"] - before["queries"] >= queries, (queries, before, after)
    assert server_logins(tp) <= size, tp.output()[-3000:]
    if mode == "transaction":
        # BEGIN ... COMMIT of each thread multiplexed over fewer servers.
        assert after["transactions"] - before["transactions"] >= transactions, (before, after)
