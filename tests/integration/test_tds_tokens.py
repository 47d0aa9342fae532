"""The token lifecycle of a sqlserver pool, seen from tedious clients and
from the rig's TDS server (the stand-in for Azure SQL, started by the rig).

  * Short tokens under constant server logins for 20 s: no client login
    or query fails, the server saw several different tokens (its login
    records carry each token's `exp`), and the identity endpoint was called
    about once per token lifetime, not once per login.

Runtime: about 22 s.
"""

import pytest
import time

from test_tds_common import ClientLoop, errors_in, sqlserver_config

# Why these numbers (auth/tokens.c, proxy/pool.c as of this writing): a
# token under ~5 min is refreshed at three quarters of its remaining life,
# and a server login takes the cached token while it has 2 s left. With 8 s
# tokens tokenpool fetches about every 6 s: tokens at ~0, 6, 12, 18 s of a
# 20 s run, and every server login after 8 s used a refreshed one.
LIFETIME = 8
RUN = 20


@pytest.mark.timer_bound
def test_short_tokens_refreshed_under_login_churn_20s(rig, tokenpool, free_port, tmp_path):
    who = rig.identity("system")["db_user"]
    tds = rig.tds()
    rig.idp_config(lifetime=LIFETIME)
    t0 = time.time()
    # A server lives 3 s and idles 1 s: client logins keep needing server
    # logins, each presenting the current token to the TDS server. (A
    # shorter lifetime meets an engine bug on a loaded machine: a server
    # whose login took longer than its lifetime fails its waiting clients.)
    tp = tokenpool(sqlserver_config(rig, rig.tds_port, free_port, client_tls={"mode": "disable"},
                                    pool={"mode": "session", "size": 4, "lifetime": 3, "idle_timeout": 1,
                                          "connect_timeout": 10, "wait_timeout": 20}))
    port = tp.listen[1]
    loop = ClientLoop(str(tmp_path), [{"port": port, "workers": 3}], encrypt=False).start()
    time.sleep(max(0.0, RUN - (time.time() - t0)))
    log, = loop.stop()
    run = time.time() - t0

    errors = errors_in(log)
    assert not errors, f"{len(errors)} failed attempts of {len(log)}, first: {errors[:3]}\n" + tp.output()[-5000:]
    assert len(log) >= 100, f"only {len(log)} client logins in {run:.0f}s"
    assert {d for _, _, _, d in log} == {who}

    logins = [r for r in tds.logins() if r.get("auth") == "token"]
    ok = [r for r in logins if r["result"] == "ok"]
    assert len(ok) == len(logins), [r for r in logins if r["result"] != "ok"][:3]
    expiries = sorted({r["exp"] for r in ok})
    # Tokens fetched at ~0, 6, 12, 18 s: at least three of them were used.
    assert len(expiries) >= 3, f"server logins used only {len(expiries)} tokens: {expiries}"
    assert expiries[-1] - expiries[0] >= 2 * 0.75 * LIFETIME - 1
    assert all(r["appid"] == rig.identity("system")["client_id"] for r in ok)
    assert len(ok) >= 3 * len(expiries), f"{len(ok)} server logins for {len(expiries)} tokens"

    st = rig.idp_stats()
    requests = sum(st["requests"].values())
    # About once per lifetime (0.75 of it, plus the first), not per login.
    assert run / LIFETIME <= requests <= run / (0.75 * LIFETIME) + 2, \
        f"{requests} token requests in {run:.1f}s with {LIFETIME}s tokens: {st['recent']}"
    assert st["issued"]["imds"] == requests
    print(f"{len(log)} client logins, {len(ok)} server logins, {len(expiries)} tokens, {requests} requests")
    assert tp.running
