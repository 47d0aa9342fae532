"""What a SQL Server client is told when tokenpool refuses it (CONTRACT.md,
"What a client sees when things fail", sqlserver column), seen through
tedious: the error number and the text.

  * too many clients (max_clients): 10928 naming max_clients;
  * no server within the pool's wait_timeout: 10928 naming the wait;
  * shutting down: a request still running when shutdown.timeout ends gets
    6005 "the proxy is shutting down" (session and transaction mode), and a
    login that arrives during the drain gets 6005 too.

The server behind the pool is the rig's TDS server. Runtime: about 12 s.
"""

import json
import os
import signal
import subprocess
import time

import pytest

from helpers import wait_until
from test_tds_common import (CLIENT_PASSWORD, CLIENT_USER, NODE_MODULES, TEDIOUS_CLIENT, sqlserver_config,
                             tedious)

import codec  # noqa: E402  (the rig's TDS codec; path set by test_tds_common)
from client import TdsClient  # noqa: E402


def numbers(out):
    return [e["errorMessage"]["number"] for e in out["events"] if "errorMessage" in e]


def holder(rig, port):
    """A raw client that logged in and ran a query: in session mode it
    holds a server until it leaves."""
    cl = TdsClient("127.0.0.1", port, rig.ca_file)
    cl.login(user=CLIENT_USER, password=CLIENT_PASSWORD, fedauth_required=False)
    assert cl.scalar("SELECT 1") == 1
    return cl


def test_too_many_clients(rig, tokenpool, free_port):
    tp = tokenpool(sqlserver_config(rig, rig.tds_port, free_port, pool={"max_clients": 1}))
    h = holder(rig, tp.listen[1])
    try:
        out = tedious(rig, tp.listen[1], [{"sql": "SELECT 1"}])
    finally:
        h.close()
    assert not out["connect"]["ok"], out
    msg = "Too many clients: the tokenpool pool has reached max_clients."
    assert out["connect"]["error"] == msg, out
    assert numbers(out) == [10928]
    # The slot is free again once the holder left.
    wait_until(lambda: tedious(rig, tp.listen[1], [{"sql": "SELECT 2"}])["connect"]["ok"], 10,
               "a client slot to come free")


def test_pool_wait_timeout(rig, tokenpool, free_port):
    """Session mode, one server, held: the next client logs in (from the
    pool's cached login reply) and its first request waits wait_timeout
    for a server, then gets 10928 saying so."""
    tp = tokenpool(sqlserver_config(rig, rig.tds_port, free_port,
                                    pool={"mode": "session", "size": 1, "wait_timeout": 1}))
    h = holder(rig, tp.listen[1])
    try:
        t0 = time.monotonic()
        out = tedious(rig, tp.listen[1], [{"sql": "SELECT 1"}])
        took = time.monotonic() - t0
    finally:
        h.close()
    # tedious' own first batch (its SET options, sent as part of connect)
    # is the request that waited: tedious reports the ERROR token, keeps
    # calling the connection established, and its next request finds the
    # connection closed.
    assert numbers(out) == [10928], out
    msg = [e["errorMessage"]["message"] for e in out["events"] if "errorMessage" in e][0]
    assert msg == "no server connection within 1 s (pool size 1)", msg
    assert not out["connect"]["ok"] or not out["results"][0]["ok"], out
    assert took < 10, took
    out = tedious(rig, tp.listen[1], [{"sql": "SELECT 3"}])
    assert out["results"][0]["rows"] == [[3]], out


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_shutdown_tells_a_running_request(rig, tokenpool, free_port, mode):
    """SIGTERM while a tedious request runs inside a transaction: it may go
    on until shutdown.timeout (2 s), then it is answered 6005 and closed.
    A login that arrives meanwhile (its TCP connection was accepted before
    the listener closed) is refused with 6005 too."""
    tp = tokenpool(sqlserver_config(rig, rig.tds_port, free_port, pool={"mode": mode, "size": 2}))
    port = tp.listen[1]
    late = TdsClient("127.0.0.1", port, rig.ca_file)
    late.prelogin(fedauth_required=False)
    late.start_tls()
    cfg = {"port": port, "ca": rig.ca_file, "database": "orders", "user": CLIENT_USER,
           "password": CLIENT_PASSWORD, "steps": [{"begin": True}, {"sql": "SELECT 1"},
                                                  {"sql": "WAITFOR DELAY '00:00:08'"}]}
    p = subprocess.Popen(["node", TEDIOUS_CLIENT, json.dumps(cfg)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=dict(os.environ, NODE_PATH=NODE_MODULES))
    try:
        tds = rig.tds()
        wait_until(lambda: any(s["busy"] for s in tds.sessions()), 20, "the WAITFOR to run")
        t_term = time.monotonic()
        tp.send_signal(signal.SIGTERM)
        tp.wait_for_output("SIGTERM received: shutting down", timeout=10)
        late.send(codec.PT_LOGIN7, codec.build_login7(user=CLIENT_USER, password=CLIENT_PASSWORD,
                                                      database="orders", app="late", host="late"))
        ptype, payload, _ = late.read_message()
        told = time.monotonic() - t_term
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
        late.close()
    errs = [f for k, f in codec.parse_tokens(payload) if k == "ERROR"]
    assert [e["number"] for e in errs] == [6005] and "shutting down" in errs[0]["message"].lower(), errs
    out = json.loads(out.splitlines()[-1])
    assert out["connect"]["ok"] and out["results"][1]["rows"] == [[1]], out
    waited = out["results"][2]
    assert not waited["ok"] and waited["number"] == 6005, waited
    assert waited["error"] == "the proxy is shutting down", waited
    assert 1.5 < waited["ms"] / 1000 < 7, waited      # at shutdown.timeout, not at the WAITFOR's end
    assert tp.wait(10) == 0
    assert told < 5, told
