"""COM_CHANGE_USER through tokenpool, with node mysql2's changeUser().

Connection pools in application frameworks call it to hand a connection
to the next user of the pool: it must clear the session (like
COM_RESET_CONNECTION), check the credentials against tokenpool's config
(the same user, or another client user of the same pool, which shares
the server's identity), and refuse bad credentials with 1045.
"""

import json
import os
import subprocess

from conftest import CLIENT_PASSWORD, CLIENT_USER

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_MODULES = os.path.join(HERE, "node_modules")
OTHER_USER, OTHER_PASSWORD = "report", "report-secret-7"


def node(tp, body):
    """Runs body inside an async function with `c`, a mysql2/promise
    connection to tokenpool as CLIENT_USER, and `out`, a list printed as
    JSON at the end (errors are caught into out as {errno, sqlState})."""
    script = """
const mysql = require('mysql2/promise');
async function attempt(p) {
  try { return await p; } catch (e) { return {errno: e.errno, sqlState: e.sqlState}; }
}
async function one(c, sql) { const [rows] = await c.query(sql); return Object.values(rows[0])[0]; }
(async () => {
  const out = [];
  const c = await mysql.createConnection({host: '127.0.0.1', port: %d, user: %s,
    password: %s, database: %s});
  %s
  await c.end();
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
""" % (tp.listen[1], json.dumps(CLIENT_USER), json.dumps(CLIENT_PASSWORD),
       json.dumps(tp.config["pools"][0]["name"]), body)
    r = subprocess.run(["node", "-e", script], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, NODE_PATH=NODE_MODULES))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def two_users(mysql_config, **kw):
    return mysql_config(clients=[{"user": CLIENT_USER, "password": CLIENT_PASSWORD},
                                 {"user": OTHER_USER, "password": OTHER_PASSWORD}], **kw)


def test_change_to_the_same_user_clears_the_session(rig, tokenpool, mysql_config):
    tp = tokenpool(two_users(mysql_config))
    out = node(tp, """
  await c.query('SET @left_behind = 42');
  await c.query('CREATE TEMPORARY TABLE t_left (x int)');
  out.push(await one(c, 'SELECT @left_behind'));
  await c.changeUser({user: %s, password: %s});
  out.push(await one(c, 'SELECT @left_behind'));
  out.push((await attempt(c.query('SELECT * FROM t_left'))).errno);
  out.push(await one(c, 'SELECT CURRENT_USER()'));
""" % (json.dumps(CLIENT_USER), json.dumps(CLIENT_PASSWORD)))
    token_user = rig.identity("system")["db_user"]
    assert out == [42, None, 1146, f"{token_user}@%"]


def test_change_to_another_client_user_of_the_pool(rig, tokenpool, mysql_config):
    tp = tokenpool(two_users(mysql_config, pool={"mode": "transaction", "size": 2}))
    out = node(tp, """
  await c.query('SET @mine = 1');
  await c.changeUser({user: %s, password: %s});
  out.push(await one(c, 'SELECT @mine'));
  out.push(await one(c, 'SELECT CURRENT_USER()'));
  out.push(await one(c, 'SELECT 6 * 7'));
""" % (json.dumps(OTHER_USER), json.dumps(OTHER_PASSWORD)))
    token_user = rig.identity("system")["db_user"]
    assert out == [None, f"{token_user}@%", 42]


def test_bad_credentials_are_refused_with_1045(rig, tokenpool, mysql_config):
    tp = tokenpool(two_users(mysql_config))
    out = node(tp, """
  out.push(await attempt(c.changeUser({user: %s, password: 'wrong'})));
  out.push(await attempt(c.changeUser({user: %s, password: %s})));
  out.push(await attempt(c.changeUser({user: 'nobody', password: 'x'})));
""" % (json.dumps(CLIENT_USER), json.dumps(OTHER_USER), json.dumps(CLIENT_PASSWORD)))
    assert out == [{"errno": 1045, "sqlState": "28000"}] * 3
    # The refusals named no secret in tokenpool's log.
    with open(tp.log_path) as f:
        log = f.read()
    assert "wrong" not in log and CLIENT_PASSWORD not in log
