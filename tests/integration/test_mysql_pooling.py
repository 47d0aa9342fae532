"""Transaction-mode pooling as MySQL clients see it, through tokenpool in
front of the rig's MariaDB.

  * 200 concurrent clients share 5 server connections: every transaction
    commits, rolls back or fails as a whole, on one server from BEGIN to
    its end, and nobody sees another client's uncommitted rows.
  * A client holding a server-side prepared statement (node mysql2's
    prepare/execute: COM_STMT_PREPARE / COM_STMT_EXECUTE), a temporary
    table, a named lock (GET_LOCK) or LOCK TABLES keeps its server
    connection while other clients come and go on the rest of the pool;
    when it leaves, that server is reset and handed on, and the next
    client finds none of its state (statement, temporary table, user
    variable, lock).

Server connections are counted in MariaDB's processlist (user = the token
user) and in tokenpool's "server login ok" lines.

Runtime: about 15 s.
"""

import json
import os
import subprocess

import pymysql
import pytest

from conftest import CLIENT_PASSWORD, CLIENT_USER
from helpers import Sampler, describe, mysql_connect, run_all_connected, run_threads, server_logins

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_MODULES = os.path.join(HERE, "node_modules")

N_CLIENTS = 200
POOL_SIZE = 5


# ---------------------------------------------------------------- helpers

def connect(tp, **kw):
    return mysql_connect(tp, connect_timeout=10, read_timeout=60, **kw)


def rows(conn, sql, args=None):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def one(conn, sql, args=None):
    return rows(conn, sql, args)[0][0]


def server_connections(rig, user):
    """Connection ids of the token user's sessions on MariaDB."""
    out = rig.mysql_admin("SELECT ID FROM information_schema.PROCESSLIST "
                          f"WHERE USER = '{user}' ORDER BY ID")
    return [int(r[0]) for r in out]


def session_sampler(rig, user):
    """Counts the token user's server sessions every 0.1 s until stopped,
    leaving out those that existed when it was made (other tests')."""
    before = set(server_connections(rig, user))
    return Sampler(lambda: len(set(server_connections(rig, user)) - before), "the processlist")


# ---------------------------------------------------------------- 200 clients, 5 servers

def _client_workload(conn, i):
    """Five transactions of client i, three of them committed; raises
    AssertionError on any wrong answer."""
    t = "tp_txn"
    # 1: committed; reads its own write inside; one server throughout.
    rows(conn, "BEGIN")
    cid = one(conn, "SELECT CONNECTION_ID()")
    rows(conn, f"INSERT INTO {t} VALUES (%s, 1, %s)", (i, i))
    rows(conn, f"UPDATE {t} SET val = val + 1000 WHERE client = %s AND seq = 1", (i,))
    got = one(conn, f"SELECT val FROM {t} WHERE client = %s AND seq = 1", (i,))
    assert got == i + 1000, f"inside its transaction client {i} read {got}"
    assert one(conn, "SELECT CONNECTION_ID()") == cid, f"client {i} changed server mid-transaction"
    rows(conn, "COMMIT")
    # 2: rolled back; inside, exactly its own two rows are visible.
    rows(conn, "BEGIN")
    rows(conn, f"INSERT INTO {t} VALUES (%s, 2, %s)", (i, i))
    n = one(conn, f"SELECT COUNT(*) FROM {t} WHERE client = %s", (i,))
    assert n == 2, f"client {i} sees {n} of its rows inside transaction 2, expected 2"
    rows(conn, "ROLLBACK")
    # 3: a statement fails (duplicate key); MySQL keeps the transaction
    # open, the client rolls it back.
    rows(conn, "BEGIN")
    rows(conn, f"INSERT INTO {t} VALUES (%s, 3, %s)", (i, i))
    with pytest.raises(pymysql.err.IntegrityError):
        rows(conn, f"INSERT INTO {t} VALUES (%s, 3, %s)", (i, i))
    assert one(conn, f"SELECT COUNT(*) FROM {t} WHERE client = %s AND seq = 3", (i,)) == 1
    rows(conn, "ROLLBACK")
    # 4: a savepoint undone, the rest committed.
    rows(conn, "BEGIN")
    rows(conn, f"INSERT INTO {t} VALUES (%s, 4, %s)", (i, i))
    rows(conn, "SAVEPOINT s")
    rows(conn, f"UPDATE {t} SET val = -1 WHERE client = %s", (i,))
    rows(conn, "ROLLBACK TO SAVEPOINT s")
    rows(conn, "COMMIT")
    # 5: autocommit.
    rows(conn, f"INSERT INTO {t} VALUES (%s, 5, %s)", (i, i))
    mine = rows(conn, f"SELECT seq, val FROM {t} WHERE client = %s ORDER BY seq", (i,))
    expected = ((1, i + 1000), (4, i), (5, i))
    assert mine == expected, f"client {i} has rows {mine}, expected {expected}"


def test_transaction_mode_200_concurrent_clients_share_5_servers(rig, tokenpool, mysql_config):
    user = rig.identity("system")["db_user"]
    rig.mysql_admin("DROP TABLE IF EXISTS tp_txn; CREATE TABLE tp_txn (client INT, seq INT, "
                    "val INT, PRIMARY KEY (client, seq)) ENGINE=InnoDB", db=rig.mysql_database)
    sampler = session_sampler(rig, user)
    tp = tokenpool(mysql_config(pool={"mode": "transaction", "size": POOL_SIZE,
                                      "max_clients": N_CLIENTS + 50, "wait_timeout": 60}))
    sampler.start()
    try:  # all 200 are connected at the same time, then run their workload
        errors = run_all_connected(N_CLIENTS, lambda: connect(tp), _client_workload)
    finally:
        samples = sampler.stop()
    try:
        assert not errors, describe(errors) + "\n" + tp.output()[-3000:]
        total = rig.mysql_admin("SELECT COUNT(*), COALESCE(SUM(val), 0), "
                                "SUM(seq IN (2, 3)) FROM tp_txn", db=rig.mysql_database)[0]
        ids = sum(range(N_CLIENTS))
        assert (int(total[0]), int(total[1]), int(total[2])) == \
            (3 * N_CLIENTS, 3 * ids + 1000 * N_CLIENTS, 0), total
    finally:
        rig.mysql_admin("DROP TABLE IF EXISTS tp_txn", db=rig.mysql_database)
    assert samples and max(samples) >= 1, f"no server connection seen: {samples}"
    assert max(samples) <= POOL_SIZE, f"up to {max(samples)} server connections for pool size {POOL_SIZE}"
    assert 1 <= server_logins(tp) <= POOL_SIZE, tp.output()[-4000:]


# ---------------------------------------------------------------- state that pins

NODE_PREPARED = r"""
const mysql = require('mysql2/promise');
const readline = require('readline');
(async () => {
  const rl = readline.createInterface({ input: process.stdin });
  const lines = rl[Symbol.asyncIterator]();
  const c = await mysql.createConnection(JSON.parse(process.argv[2]));
  // COM_STMT_PREPARE: the statement lives on this server connection only.
  const stmt = await c.prepare('SELECT ? + 1 AS v, CONNECTION_ID() AS cid');
  const [r1] = await stmt.execute([1]);
  console.log(JSON.stringify({ v: r1[0].v, cid: r1[0].cid, stmt: stmt.statement.id }));
  for (;;) {
    const line = (await lines.next()).value;
    if (line !== 'again') break;
    // COM_STMT_EXECUTE alone: the statement must still be there.
    const [r] = await stmt.execute([41]);
    console.log(JSON.stringify({ v: r[0].v, cid: r[0].cid }));
  }
  rl.close();
  await c.end();
  console.log(JSON.stringify({ left: true }));
})().catch(e => { console.log(JSON.stringify({ error: String(e), code: e.code })); process.exit(1); });
"""


class PreparedHolder:
    """node mysql2 holding a prepared statement, and nothing else."""

    def __init__(self, tp, rig, tmp_path):
        script = tmp_path / "prepared.js"
        script.write_text(NODE_PREPARED)
        params = {"host": "127.0.0.1", "port": tp.listen[1], "user": CLIENT_USER,
                  "password": CLIENT_PASSWORD, "database": rig.mysql_database}
        self.proc = subprocess.Popen(["node", str(script), json.dumps(params)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=dict(os.environ, NODE_PATH=NODE_MODULES))
        first = self._read()
        assert first.get("v") == 2, first
        self.cid, self.stmt = first["cid"], first["stmt"]

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            raise AssertionError("mysql2 client ended: " + self.proc.stderr.read())
        return json.loads(line)

    def still_holds(self):
        """(connection id, state intact) after running its statement again."""
        self.proc.stdin.write("again\n")
        self.proc.stdin.flush()
        r = self._read()
        return r.get("cid"), r.get("v") == 42

    def leave(self):
        self.proc.stdin.write("bye\n")
        self.proc.stdin.flush()
        assert self._read() == {"left": True}
        assert self.proc.wait(10) == 0, self.proc.stderr.read()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def state_gone(self, conn):
        """On the server this client held: its statement id is unknown."""
        conn._execute_command(0x17, self.stmt.to_bytes(4, "little") + b"\x00\x01\x00\x00\x00")
        with pytest.raises(pymysql.err.MySQLError) as exc:
            conn._read_packet()
        assert exc.value.args[0] == 1243, exc.value.args  # unknown prepared statement handler


class TemporaryHolder:
    """pymysql holding a temporary table (and a user variable)."""

    def __init__(self, tp, rig, tmp_path):
        self.conn = connect(tp)
        rows(self.conn, "CREATE TEMPORARY TABLE tp_tmp (x INT)")
        rows(self.conn, "INSERT INTO tp_tmp VALUES (7)")
        rows(self.conn, "SET @pv = 5")
        self.cid = one(self.conn, "SELECT CONNECTION_ID()")

    def still_holds(self):
        cid, x, pv = rows(self.conn, "SELECT CONNECTION_ID(), (SELECT x FROM tp_tmp), @pv")[0]
        return cid, (x, pv) == (7, 5)

    def leave(self):
        self.conn.close()

    def kill(self):
        try:
            self.conn.close()
        except Exception:
            pass

    def state_gone(self, conn):
        with pytest.raises(pymysql.err.ProgrammingError) as exc:
            rows(conn, "SELECT x FROM tp_tmp")
        assert exc.value.args[0] == 1146, exc.value.args  # table doesn't exist


class NamedLockHolder:
    """pymysql holding a named lock (GET_LOCK): it lives with the server
    session, so another client on that session would own it too."""

    def __init__(self, tp, rig, tmp_path):
        self.conn = connect(tp)
        assert one(self.conn, "SELECT GET_LOCK('tp_named', 0)") == 1
        self.cid = one(self.conn, "SELECT CONNECTION_ID()")
        self.rig = rig

    def still_holds(self):
        cid, mine = rows(self.conn, "SELECT CONNECTION_ID(), IS_USED_LOCK('tp_named') = CONNECTION_ID()")[0]
        return cid, mine == 1

    def leave(self):
        self.conn.close()

    kill = TemporaryHolder.kill

    def state_gone(self, conn):
        assert one(conn, "SELECT IS_USED_LOCK('tp_named')") is None
        assert self.rig.mysql_admin("SELECT IS_FREE_LOCK('tp_named')") == [(1,)]


class TableLockHolder:
    """pymysql holding LOCK TABLES ... WRITE: while it lasts, its session may
    touch no other table and nobody else may touch the locked one."""

    def __init__(self, tp, rig, tmp_path):
        rig.mysql_admin("DROP TABLE IF EXISTS tp_locked, tp_unlocked;"
                        "CREATE TABLE tp_locked (x INT); INSERT INTO tp_locked VALUES (3);"
                        "CREATE TABLE tp_unlocked (y INT); INSERT INTO tp_unlocked VALUES (4)",
                        db=rig.mysql_database)
        self.conn = connect(tp)
        rows(self.conn, "LOCK TABLES tp_locked WRITE")
        rows(self.conn, "INSERT INTO tp_locked VALUES (5)")
        self.cid = one(self.conn, "SELECT CONNECTION_ID()")
        self.rig = rig

    def still_holds(self):
        cid, n = rows(self.conn, "SELECT CONNECTION_ID(), (SELECT count(*) FROM tp_locked)")[0]
        with pytest.raises(pymysql.err.OperationalError) as exc:
            rows(self.conn, "SELECT y FROM tp_unlocked")
        return cid, n == 2 and exc.value.args[0] == 1100  # table was not locked with LOCK TABLES

    def leave(self):
        self.conn.close()

    kill = TemporaryHolder.kill

    def state_gone(self, conn):
        assert one(conn, "SELECT y FROM tp_unlocked") == 4  # no LOCK TABLES left on the session
        self.rig.mysql_admin("SET SESSION lock_wait_timeout = 5; INSERT INTO tp_locked VALUES (6)",
                             db=self.rig.mysql_database)  # the table lock is gone


HOLDERS = {"prepared_statement": PreparedHolder, "temporary_table": TemporaryHolder,
           "named_lock": NamedLockHolder, "table_lock": TableLockHolder}


@pytest.mark.parametrize("kind", list(HOLDERS))
def test_pinned_client_keeps_its_server_and_leaves_nothing_behind(rig, tokenpool, mysql_config,
                                                                  tmp_path, kind):
    tp = tokenpool(mysql_config(pool={"mode": "transaction", "size": 2, "wait_timeout": 30}))
    holder = HOLDERS[kind](tp, rig, tmp_path)
    try:
        # Others come and go (transactions and single statements) on the
        # rest of the pool; never on the held server.
        seen = []

        def other(i):
            conn = connect(tp)
            try:
                for k in range(10):
                    rows(conn, "BEGIN")
                    seen.append(one(conn, "SELECT CONNECTION_ID()"))
                    assert one(conn, "SELECT @pv") is None
                    rows(conn, "COMMIT")
                    seen.append(one(conn, "SELECT CONNECTION_ID()"))
            finally:
                conn.close()

        for _ in range(2):
            errors = run_threads(4, other)
            assert not errors, describe(errors)
            cid, intact = holder.still_holds()
            assert cid == holder.cid and intact, (cid, holder.cid, intact)
        assert seen and holder.cid not in seen, f"others ran on the held server {holder.cid}"

        # It lets go; its server is reset and handed on, clean. Two clients
        # inside transactions hold both servers: one is the former.
        holder.leave()
        a, b = connect(tp), connect(tp)
        try:
            rows(a, "BEGIN")
            rows(b, "BEGIN")
            on = {one(a, "SELECT CONNECTION_ID()"): a, one(b, "SELECT CONNECTION_ID()"): b}
            assert holder.cid in on, f"the held server {holder.cid} was not reused: {list(on)}"
            heir = on[holder.cid]
            assert one(heir, "SELECT @pv") is None
            holder.state_gone(heir)
            rows(a, "COMMIT")
            rows(b, "COMMIT")
        finally:
            a.close()
            b.close()
        assert server_logins(tp) == 2, tp.output()[-3000:]
    finally:
        holder.kill()
