"""Pooling SQL Server sessions through tokenpool: session mode hands the
next client a clean session (RESETCONNECTION, isolation level restored);
transaction mode moves clients between servers at transaction boundaries,
replays their SET options, pins what cannot move, and carries hundreds of
clients on a handful of servers; attention cancels what runs; packet sizes
differ between clients and server without harm."""

import os

import pytest

from test_tds_common import (CLIENT_PASSWORD, CLIENT_USER, mssql_connect, node, sqlserver_config,
                             running_servers, tedious, write_freetds_conf)

import codec  # noqa: E402  (the rig's TDS codec; path set by test_tds_common)
from client import TdsClient, errors_of, rows_of  # noqa: E402


@pytest.fixture(scope="module")
def tds(rig, tmp_path_factory):
    with running_servers(rig, str(tmp_path_factory.mktemp("tds")), redirect=False) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _fresh_counters(request):
    if "tds" in request.fixturenames:
        request.getfixturevalue("tds").target.reset()
    yield
    if "tds" in request.fixturenames:
        request.getfixturevalue("tds").target.reset()


@pytest.fixture
def started(rig, tds, tokenpool, free_port):
    def start(**overrides):
        tp = tokenpool(sqlserver_config(rig, tds.target.port, free_port, **overrides))
        return tp, tp.listen[1]

    return start


def login(rig, port):
    cl = TdsClient("127.0.0.1", port, rig.ca_file)
    cl.login(user=CLIENT_USER, password=CLIENT_PASSWORD, fedauth_required=False)
    return cl


STATE_SQL = ("SELECT CONTEXT_INFO(), @@TRANCOUNT, SESSIONPROPERTY('NOCOUNT'), transaction_isolation_level, "
             "@@SPID FROM sys.dm_exec_sessions WHERE session_id = @@SPID")


# ---------------------------------------------------------------- session mode

def test_session_mode_next_client_gets_a_clean_session(rig, tds, started):
    tp, port = started(pool={"size": 1})
    a = login(rig, port)
    toks = a.batch("SET CONTEXT_INFO 0x0102; SET NOCOUNT ON; SET TRANSACTION ISOLATION LEVEL SERIALIZABLE; "
                   "CREATE TABLE #t (id INT); BEGIN TRAN")
    assert errors_of(toks) == []
    ctx, trancount, nocount, iso, spid = rows_of(a.batch(STATE_SQL))[0]
    assert (ctx[:2], trancount, nocount, iso) == (b"\x01\x02", 1, 1, 4)
    a.close()
    b = login(rig, port)
    assert rows_of(b.batch(STATE_SQL)) == [[None, 0, 0, 2, spid]]     # same server, clean
    assert errors_of(b.batch("SELECT * FROM #t")) == [208]
    b.close()
    stats = tds.target.stats()
    assert stats["resets"] >= 1 and stats["connections"] == 1
    # tedious sees the same (and its own options, which it sets itself).
    out = tedious(rig, port, [{"sql": "SELECT CONTEXT_INFO(), @@TRANCOUNT, @@SPID"}])
    assert out["results"][0]["rows"] == [[None, 0, spid]]


def test_session_mode_client_reset_is_passed_on(rig, tds, started):
    """A client's own RESETCONNECTION (tedious' reset()) reaches the server."""
    tp, port = started()
    out = tedious(rig, port, [
        {"batch": "SET CONTEXT_INFO 0x0102"},
        {"reset": True},
        {"sql": "SELECT CONTEXT_INFO()"},
    ])
    assert out["results"][2]["rows"] == [[None]]
    assert {"resetConnection": True} in out["events"]


# ---------------------------------------------------------------- transaction mode

MANY_CLIENTS = r"""
const { Connection, Request } = require('tedious');
const fs = require('fs');
const cfg = JSON.parse(process.argv[1]);
const ca = fs.readFileSync(cfg.ca);
function connect() {
  return new Promise((resolve, reject) => {
    const c = new Connection({ server: 'localhost',
      authentication: { type: 'default', options: { userName: cfg.user, password: cfg.password } },
      options: { port: cfg.port, encrypt: true, database: 'orders', cryptoCredentialsDetails: { ca },
                 connectTimeout: 60000, requestTimeout: 0, maxRetriesOnTransientErrors: 0,
                 rowCollectionOnRequestCompletion: true } });
    c.connect((err) => (err ? reject(err) : resolve(c)));
  });
}
function exec(c, sql, batch) {
  return new Promise((resolve, reject) => {
    const r = new Request(sql, (err, n, rows) => (err ? reject(err) : resolve(rows.map((row) => row.map((col) => col.value)))));
    if (batch) c.execSqlBatch(r); else c.execSql(r);
  });
}
function tm(c, op) { return new Promise((resolve, reject) => c[op]((err) => (err ? reject(err) : resolve()))); }
async function one(i) {
  const c = await connect();
  try {
    const key = `${cfg.prefix}-${i}`;
    const r1 = await exec(c, `BEGIN TRAN; INSERT INTO kv (k, v) VALUES ('${key}', 'a'); SELECT @@TRANCOUNT; COMMIT; SELECT @@TRANCOUNT`, true);
    await tm(c, 'beginTransaction');
    const s1 = await exec(c, 'SELECT @@SPID, @@TRANCOUNT');
    await exec(c, `UPDATE kv SET v = 'b' WHERE k = '${key}'`);
    const s2 = await exec(c, 'SELECT @@SPID, @@TRANCOUNT');
    await tm(c, 'commitTransaction');
    const after = await exec(c, 'SELECT @@TRANCOUNT, SESSIONPROPERTY(\'QUOTED_IDENTIFIER\')', true);
    return { r1, s1, s2, after };
  } finally {
    c.close();
  }
}
(async () => {
  const settled = await Promise.allSettled([...Array(cfg.n).keys()].map(one));
  const out = { results: [], errors: [] };
  for (const s of settled) {
    if (s.status === 'fulfilled') out.results.push(s.value); else out.errors.push(String(s.reason && s.reason.message));
  }
  process.stdout.write(JSON.stringify(out) + '\n', () => process.exit(0));
})();
"""


def test_transaction_mode_200_clients_over_5_servers(rig, tds, started):
    tp, port = started(pool={"mode": "transaction", "size": 5, "wait_timeout": 30})
    prefix = f"txn-{os.getpid()}"
    out = node(MANY_CLIENTS, {"port": port, "user": CLIENT_USER, "password": CLIENT_PASSWORD, "ca": rig.ca_file,
                              "n": 200, "prefix": prefix})
    assert out["errors"] == [], out["errors"][:5]
    assert len(out["results"]) == 200
    for r in out["results"]:
        assert r["r1"] == [[1], [0]]
        assert r["s1"][0][1] == 1 and r["s2"] == r["s1"]      # one server for the whole transaction
        assert r["after"] == [[0, 1]]                           # tedious' own SET options followed it
    rows = [r for r in tds.target.tables()["kv"] if r[0].startswith(prefix + "-")]
    assert len(rows) == 200 and {r[1] for r in rows} == {"b"}
    stats = tds.target.stats()
    assert stats["connections"] <= 5
    assert stats["logins"]["ok"] <= 5


def test_transaction_mode_set_options_move_with_the_client(rig, tds, started):
    """Two clients, one server: each request finds the session in the
    state its own client left it (replayed after a RESETCONNECTION)."""
    tp, port = started(pool={"mode": "transaction", "size": 1})
    x, y = login(rig, port), login(rig, port)
    assert errors_of(x.batch("SET NOCOUNT ON; SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")) == []
    q = ("SELECT SESSIONPROPERTY('NOCOUNT'), transaction_isolation_level, @@SPID "
         "FROM sys.dm_exec_sessions WHERE session_id = @@SPID")
    seen = set()
    for _ in range(3):
        nocount, iso, spid = rows_of(x.batch(q))[0]
        assert (nocount, iso) == (1, 4)
        seen.add(spid)
        nocount, iso, spid = rows_of(y.batch(q))[0]
        assert (nocount, iso) == (0, 2)
        seen.add(spid)
    assert len(seen) == 1                      # the same server all along
    assert tds.target.stats()["resets"] == 5   # each switch of client
    x.close()
    y.close()


def test_transaction_mode_pins_temp_tables_and_context_info(rig, tds, started):
    tp, port = started(pool={"mode": "transaction", "size": 2})
    pinned = login(rig, port)
    other = login(rig, port)
    assert errors_of(pinned.batch("CREATE TABLE #t (id INT); INSERT INTO #t VALUES (7)")) == []
    spid = pinned.scalar("SELECT @@SPID")
    for _ in range(3):
        assert rows_of(pinned.batch("SELECT id, @@SPID FROM #t")) == [[7, spid]]
        assert other.scalar("SELECT @@SPID") != spid           # never handed the pinned server
    assert errors_of(other.batch("SET CONTEXT_INFO 0xAA")) == []
    ospid = other.scalar("SELECT @@SPID")
    assert other.scalar("SELECT CONTEXT_INFO()")[:1] == b"\xaa"
    assert other.scalar("SELECT @@SPID") == ospid
    pinned.close()
    other.close()


def test_transaction_mode_open_transaction_rolled_back_when_client_leaves(rig, tds, started):
    tp, port = started(pool={"mode": "transaction", "size": 1})
    a = login(rig, port)
    a.batch("BEGIN TRAN")
    spid = a.scalar("SELECT @@SPID")
    a.close()
    b = login(rig, port)
    assert rows_of(b.batch("SELECT @@TRANCOUNT, @@SPID")) == [[0, spid]]
    b.close()


def test_transaction_mode_pymssql_autocommit(rig, tds, started):
    """FreeTDS sends an attention after results even with nothing running;
    without a server bound tokenpool answers it (else pymssql hangs)."""
    tp, port = started(pool={"mode": "transaction", "size": 2})
    conf = os.path.join(tds.work, f"freetds-{port}.conf")
    write_freetds_conf(conf, port, rig.ca_file)
    conns = [mssql_connect(port, conf, autocommit=True) for _ in range(4)]
    try:
        for i, c in enumerate(conns * 3):
            cur = c.cursor()
            cur.execute("SELECT %d, @@TRANCOUNT", (i,))
            assert cur.fetchall() == [(i, 0)]
    finally:
        for c in conns:
            c.close()
    assert tds.target.stats()["connections"] <= 2


# ---------------------------------------------------------------- attention

@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_tedious_cancel_during_waitfor(rig, tds, started, mode):
    tp, port = started(pool={"mode": mode, "size": 2})
    out = tedious(rig, port, [
        {"sql": "WAITFOR DELAY '00:00:30'", "cancelAfterMs": 300},      # RPC
        {"sql": "SELECT 42"},
        {"batch": "SELECT 1; WAITFOR DELAY '00:00:30'", "cancelAfterMs": 300},
        {"batch": "SELECT 43"},
    ])
    canceled, after, canceled2, after2 = out["results"]
    assert canceled["code"] == "ECANCEL" and canceled["ms"] < 5000
    assert after["rows"] == [[42]]
    assert canceled2["code"] == "ECANCEL" and canceled2["ms"] < 5000
    assert after2["rows"] == [[43]]
    assert tds.target.stats()["attentions"] == 2
    # The servers went back clean: nobody is still waiting.
    assert not [s for s in tds.target.sessions() if s["busy"]]


def test_attention_without_a_server_is_answered(rig, tds, started):
    tp, port = started(pool={"mode": "transaction", "size": 1})
    cl = login(rig, port)
    assert cl.scalar("SELECT 5") == 5
    cl.attention()
    _, payload, _ = cl.read_message()
    assert codec.parse_tokens(payload) == [("DONE", {"status": 0x20, "curcmd": 0, "rowcount": 0})]
    assert cl.scalar("SELECT 6") == 6
    cl.close()
    assert tds.target.stats()["attentions"] == 0


# ---------------------------------------------------------------- packet sizes

BIG = 1_000_000


def big_steps():
    return [
        {"sql": f"SELECT REPLICATE('ab', {BIG // 2}) AS big, LEN(REPLICATE('ab', {BIG // 2}))"},
        {"sql": "SELECT LEN(@s), RIGHT(@s, 3)",
         "params": [{"name": "s", "type": "NVarChar", "value": "x" * 99997 + "end"}]},
    ]


def check_big(out):
    assert out["connect"]["ok"], out
    big, length = out["results"][0]["rows"][0]
    assert length == BIG and big == "ab" * (BIG // 2)
    assert out["results"][1]["rows"] == [[100000, "end"]]


@pytest.mark.parametrize("client_size", [512, 32767])
def test_client_packet_size_differs_from_server(rig, tds, started, client_size):
    tp, port = started()
    out = tedious(rig, port, big_steps(), packetSize=client_size)
    check_big(out)
    assert out["packetSize"] == client_size            # it keeps its own size
    assert tds.target.last_login()["packet_size"] == 4096


@pytest.mark.parametrize("server_size", [512, 32767])
def test_server_packet_size_differs_from_client(rig, tds, started, server_size):
    tds.target.config(packet_size=server_size)
    tp, port = started()
    out = tedious(rig, port, big_steps())
    check_big(out)
    assert out["packetSize"] == 4096
    assert tds.target.last_login()["packet_size"] == server_size


def read_packets(cl):
    """The next reply message as (packet lengths, payload)."""
    lengths, payload = [], bytearray()
    while True:
        ptype, status, length, spid, _ = codec.parse_header(cl._read(8))
        assert ptype == codec.PT_REPLY
        lengths.append(length)
        payload += cl._read(length - 8)
        if status & codec.ST_EOM:
            return lengths, bytes(payload)


def test_mixed_packet_sizes_share_a_server(rig, tds, started):
    """Transaction mode, one server at 4096: clients at 512 and 32767 take
    turns on it, sending packets of their own size; the small one gets its
    replies re-framed into packets of exactly 512 bytes (the last of a
    message shorter), the large one the server's 4096-byte packets as they
    are (smaller than its size, which is valid); the data is intact."""
    tp, port = started(pool={"mode": "transaction", "size": 1})
    small, large = TdsClient("127.0.0.1", port, rig.ca_file), TdsClient("127.0.0.1", port, rig.ca_file)
    small.login(user=CLIENT_USER, password=CLIENT_PASSWORD, fedauth_required=False, packet_size=512)
    large.login(user=CLIENT_USER, password=CLIENT_PASSWORD, fedauth_required=False, packet_size=32767)
    assert (small.packet_size, large.packet_size) == (512, 32767)
    text = "y" * 20000
    for cl, size in ((small, 512), (large, 32767), (small, 512), (large, 32767)):
        sql = f"SELECT REPLICATE('x', 70000), LEN('{text}')"
        cl.send(codec.PT_SQLBATCH, codec.build_all_headers(cl.descriptor) + sql.encode("utf-16-le"))
        lengths, payload = read_packets(cl)
        full = min(size, 4096)
        assert all(n == full for n in lengths[:-1]) and lengths[-1] <= full
        assert rows_of(codec.parse_tokens(payload)) == [["x" * 70000, 20000]]
    assert tds.target.stats()["connections"] == 1
    small.close()
    large.close()
