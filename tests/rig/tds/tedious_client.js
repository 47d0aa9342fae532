// Drives tedious (the Node TDS client) for the rig's tests: one connection,
// a list of steps, a JSON report on stdout. Never prints the token.
//
//   NODE_PATH=tests/integration/node_modules node tedious_client.js '<json>'
//
// json: {server, port, ca, token | user+password, database, encrypt (true |
//        false | "strict"), serverName, packetSize, connectTimeout,
//        steps: [{sql, params: [{name, type, value}]} | {batch} |
//                {sql, cancelAfterMs} | {begin} | {commit} | {rollback} |
//                {reset} | {sleepMs}]}
// report: {connect: {ok, error, code, ms}, packetSize, routed, results: [
//          {ok, rows, rowCount, error, code, number, ms}], end: {ms}}
'use strict';
const fs = require('fs');
const { Connection, Request, TYPES } = require('tedious');

const cfg = JSON.parse(process.argv[2]);
const out = { connect: null, results: [], events: [] };
const t0 = Date.now();

let finished = false;
function finish(code) {
  if (finished) return;
  finished = true;
  out.end = { ms: Date.now() - t0 };
  // exit only once the (possibly multi-megabyte) report is flushed to the pipe
  process.stdout.write(JSON.stringify(out) + '\n', () => process.exit(code));
}

const authentication = cfg.token !== undefined
  ? { type: 'azure-active-directory-access-token', options: { token: cfg.token } }
  : { type: 'default', options: { userName: cfg.user, password: cfg.password } };
const options = {
  port: cfg.port,
  encrypt: cfg.encrypt === undefined ? true : cfg.encrypt,
  trustServerCertificate: false,
  connectTimeout: cfg.connectTimeout || 10000,
  requestTimeout: 0,
  cancelTimeout: 5000,
  rowCollectionOnRequestCompletion: true,
  maxRetriesOnTransientErrors: 0,
};
if (cfg.ca) options.cryptoCredentialsDetails = { ca: fs.readFileSync(cfg.ca) };
if (cfg.database) options.database = cfg.database;
if (cfg.serverName) options.serverName = cfg.serverName;
if (cfg.packetSize) options.packetSize = cfg.packetSize;

const conn = new Connection({ server: cfg.server || 'localhost', authentication, options });
conn.on('error', (e) => out.events.push({ error: String(e && e.message) }));
conn.on('resetConnection', () => out.events.push({ resetConnection: true }));
conn.on('databaseChange', (db) => out.events.push({ databaseChange: db }));
conn.on('errorMessage', (e) => out.events.push({ errorMessage: { number: e.number, message: e.message } }));

function value(v) {
  if (Buffer.isBuffer(v)) return { hex: v.toString('hex') };
  return v;
}

function runStep(step) {
  return new Promise((resolve) => {
    const started = Date.now();
    const res = { ok: false };
    const done = (err, rowCount, rows) => {
      res.ms = Date.now() - started;
      if (err) {
        res.error = err.message;
        res.code = err.code;
        if (err.number !== undefined) res.number = err.number;
        if (err.errors) res.numbers = err.errors.map((e) => e.number);
      } else {
        res.ok = true;
      }
      if (rows) res.rows = rows.map((r) => r.map((c) => value(c.value)));
      if (rowCount !== undefined) res.rowCount = rowCount;
      resolve(res);
    };
    if (step.sleepMs !== undefined) { setTimeout(() => { res.ok = true; resolve(res); }, step.sleepMs); return; }
    if (step.begin) { conn.beginTransaction((e) => done(e)); return; }
    if (step.commit) { conn.commitTransaction((e) => done(e)); return; }
    if (step.rollback) { conn.rollbackTransaction((e) => done(e)); return; }
    if (step.reset) { conn.reset((e) => done(e)); return; }
    const text = step.sql !== undefined ? step.sql : step.batch;
    const req = new Request(text, done);
    for (const p of step.params || []) req.addParameter(p.name, TYPES[p.type], p.value);
    if (step.batch !== undefined) conn.execSqlBatch(req); else conn.execSql(req);
    if (step.cancelAfterMs !== undefined) setTimeout(() => req.cancel(), step.cancelAfterMs);
  });
}

conn.connect(async (err) => {
  out.connect = { ok: !err, ms: Date.now() - t0 };
  if (err) {
    out.connect.error = err.message;
    out.connect.code = err.code;
    if (err.errors) out.connect.errors = err.errors.map((e) => e.message);
    finish(0);
    return;
  }
  out.packetSize = conn.messageIo.packetSize();
  out.routed = conn.routingData === undefined ? null : conn.routingData;
  for (const step of cfg.steps || []) out.results.push(await runStep(step));
  conn.on('end', () => finish(0));
  conn.close();
  setTimeout(() => finish(0), 2000);
});
