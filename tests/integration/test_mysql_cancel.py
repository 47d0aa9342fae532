"""KILL through tokenpool: thread ids are the synthetic ones of tokenpool's
greetings; `KILL QUERY <id>` from another client cancels what that
client's server runs (over a fresh token login, as MySQL needs), `KILL
<id>` closes that client, and unknown ids get MySQL's 1094.

Needs the engine changes described in the MySQL helper's report (4-byte
keys in tp_find_client_by_key, cancel links that log in, tp_conn_kill).
"""

import threading
import time

import pymysql
import pytest

from conftest import CLIENT_PASSWORD, CLIENT_USER


def connect(tp, **kw):
    return pymysql.connect(host="127.0.0.1", port=tp.listen[1], user=CLIENT_USER,
                           password=CLIENT_PASSWORD, database=tp.config["pools"][0]["name"],
                           autocommit=True, connect_timeout=10, **kw)


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_kill_query_stops_a_sleep_within_a_second(tokenpool, mysql_config, mode):
    tp = tokenpool(mysql_config(pool={"mode": mode, "size": 3}))
    a, b = connect(tp), connect(tp)
    result = {}

    def sleeper():
        t0 = time.monotonic()
        try:
            with a.cursor() as cur:
                cur.execute("SELECT SLEEP(30)")
                result["rows"] = cur.fetchall()
        except pymysql.err.OperationalError as e:
            result["error"] = e.args[0]
        result["took"] = time.monotonic() - t0

    t = threading.Thread(target=sleeper)
    t.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    with b.cursor() as cur:
        cur.execute(f"KILL QUERY {a.thread_id()}")
    t.join(10)
    assert not t.is_alive()
    assert time.monotonic() - t0 < 1.5, result
    assert result.get("error") == 1317 or result.get("rows") == ((1,),), result
    # both clients carry on
    with a.cursor() as cur:
        cur.execute("SELECT 'a'")
        assert cur.fetchone() == ("a",)
    with b.cursor() as cur:
        cur.execute("SELECT 'b'")
        assert cur.fetchone() == ("b",)
    assert "cancel requested" in tp.output()
    a.close()
    b.close()


def test_kill_connection_and_unknown_ids(tokenpool, mysql_config):
    tp = tokenpool(mysql_config())
    a, b = connect(tp), connect(tp)
    with b.cursor() as cur:
        with pytest.raises(pymysql.err.OperationalError) as exc:
            cur.execute("KILL QUERY 4242")
        assert exc.value.args[0] == 1094
        cur.execute(f"KILL {a.thread_id()}")
    with pytest.raises(pymysql.err.OperationalError) as exc:
        with a.cursor() as cur:
            cur.execute("SELECT 1")
    assert "killed" in str(exc.value)
    # a KILL of the client's own connection closes it
    with b.cursor() as cur:
        with pytest.raises(pymysql.err.OperationalError):
            cur.execute(f"KILL {b.thread_id()}")
            cur.execute("SELECT 1")
    # other KILL forms never reach the server (they would hit pooled
    # connections of other clients)
    c = connect(tp)
    with c.cursor() as cur:
        with pytest.raises(pymysql.err.MySQLError) as exc:
            cur.execute("KILL USER app")
        assert exc.value.args[0] == 1235
        cur.execute("SELECT 1")
    c.close()
