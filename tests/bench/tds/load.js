// A TDS load generator on tedious (the Node SQL Server client), for
// tests/bench/tds/bench.py. One process, many connections, one JSON object
// per stdout line. Never prints the token or the password.
//
//   NODE_PATH=tests/integration/node_modules node load.js '<json>'
//
// json: {mode: "persistent" | "churn" | "idle", conns, seconds, warmup,
//        server, port, database, encrypt (true | false), ca, serverName,
//        user | auth: "token", sql, connectConcurrency, connectTimeout, sync}
// The secret comes from the environment, not argv (which ps shows):
// LOAD_PASSWORD with user, LOAD_TOKEN (an access token) with auth "token".
//
// persistent  conns connections log in, then each runs `sql` in a loop
//             (SQLBatch) with one request in flight ({"event":"connected"};
//             with `sync` only once a "go" line came on stdin); after `warmup` s the
//             counters are zeroed ({"event":"measuring"}) and after
//             `seconds` s more the result line is printed:
//             {"event":"result", requests, errors, rps, latency: {...},
//              hist: [[bucket, count], ...], cpu: {user_s, system_s}, ...}.
// churn       conns workers each loop: new connection, login, one `sql`,
//             close (waiting for the socket's end). Counts iterations/s;
//             latency = the whole iteration, connect = until the login
//             completed.
// idle        reads commands on stdin: "open N" (N more logged-in idle
//             connections), "probe" (one `sql` on every 10th connection),
//             "exit". Each command answers one JSON line.
//
// Latencies go into a log histogram (1% wide buckets of microseconds) so
// several processes' results can be merged exactly by bucket.
'use strict';
const fs = require('fs');
const readline = require('readline');
const { Connection, Request } = require('tedious');

const cfg = JSON.parse(process.argv[2]);
const SQL = cfg.sql || 'SELECT 1';
const LOG_BASE = Math.log(1.01);
const ca = cfg.ca ? fs.readFileSync(cfg.ca) : undefined;

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function nowUs() {
  return Number(process.hrtime.bigint() / 1000n);
}

class Hist {
  constructor() { this.b = new Map(); this.n = 0; this.sum = 0; }
  add(us) {
    const k = us < 1 ? 0 : Math.floor(Math.log(us) / LOG_BASE);
    this.b.set(k, (this.b.get(k) || 0) + 1);
    this.n++;
    this.sum += us;
  }
  pct(p) {
    if (!this.n) return null;
    const keys = [...this.b.keys()].sort((a, c) => a - c);
    const want = Math.ceil(this.n * p / 100);
    let seen = 0;
    for (const k of keys) {
      seen += this.b.get(k);
      if (seen >= want) return Math.exp((k + 0.5) * LOG_BASE) / 1000;
    }
    return null;
  }
  summary() {
    return {
      avg_ms: this.n ? this.sum / this.n / 1000 : null,
      p50_ms: this.pct(50), p90_ms: this.pct(90), p99_ms: this.pct(99), max_ms: this.pct(100),
    };
  }
  dump() { return [...this.b.entries()]; }
}

function newConnection() {
  const authentication = cfg.auth === 'token'
    ? { type: 'azure-active-directory-access-token', options: { token: process.env.LOAD_TOKEN } }
    : { type: 'default', options: { userName: cfg.user, password: process.env.LOAD_PASSWORD } };
  const options = {
    port: cfg.port,
    encrypt: cfg.encrypt,
    trustServerCertificate: false,
    connectTimeout: cfg.connectTimeout || 15000,
    requestTimeout: 30000,
    maxRetriesOnTransientErrors: 0,
    database: cfg.database,
  };
  if (ca) options.cryptoCredentialsDetails = { ca };
  if (cfg.serverName) options.serverName = cfg.serverName;
  return new Connection({ server: cfg.server || 'localhost', authentication, options });
}

// Connects; resolves with the connection or rejects with the error. Once
// the login completed, a later error just marks the connection broken.
function connect() {
  return new Promise((resolve, reject) => {
    const c = newConnection();
    let settled = false;
    c.broken = false;
    c.on('error', (e) => { c.broken = true; c.lastError = e; });
    c.on('end', () => { c.broken = true; c.ended = true; });
    c.connect((err) => {
      settled = true;
      if (err) { c.close(); reject(err); } else resolve(c);
    });
    setTimeout(() => { if (!settled) { c.close(); reject(new Error('connect: no answer')); } },
      (cfg.connectTimeout || 15000) + 2000);
  });
}

function query(c) {
  return new Promise((resolve, reject) => {
    const req = new Request(SQL, (err, rowCount) => (err ? reject(err) : resolve(rowCount)));
    c.execSqlBatch(req);
  });
}

function closeConn(c) {
  return new Promise((resolve) => {
    if (c.ended) { resolve(); return; }
    const t = setTimeout(resolve, 3000);
    c.once('end', () => { clearTimeout(t); resolve(); });
    c.close();
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- counters

const st = {
  measuring: false, requests: 0, errors: 0, errorSamples: {}, hist: new Hist(), connHist: new Hist(),
  tls: null,
};

function recordError(e) {
  st.errors++;
  const m = String((e && (e.message || e.code)) || e).slice(0, 200);
  st.errorSamples[m] = (st.errorSamples[m] || 0) + 1;
}

function resetCounters() {
  st.requests = 0;
  st.errors = 0;
  st.errorSamples = {};
  st.hist = new Hist();
  st.connHist = new Hist();
}

let stop = false;

function result(t0, cpu0) {
  const secs = (nowUs() - t0) / 1e6;
  const cpu = process.cpuUsage(cpu0);
  return {
    event: 'result', mode: cfg.mode, conns: cfg.conns, seconds: secs, requests: st.requests,
    errors: st.errors, error_samples: st.errorSamples, rps: st.requests / secs,
    latency: st.hist.summary(), hist: st.hist.dump(),
    connect: cfg.mode === 'churn' ? st.connHist.summary() : null,
    conn_hist: cfg.mode === 'churn' ? st.connHist.dump() : null,
    cpu: { user_s: cpu.user / 1e6, system_s: cpu.system / 1e6 }, tls: st.tls,
    rss_kb: Math.round(process.memoryUsage().rss / 1024),
  };
}

// Opens n connections, at most `limit` logins in flight; returns
// {conns, errors}.
async function openMany(n, limit) {
  const conns = [];
  const errors = [];
  let next = 0;
  async function lane() {
    while (next < n) {
      next++;
      try {
        const c = await connect();
        if (st.tls === null) st.tls = !!c.messageIo.tlsNegotiationComplete;
        conns.push(c);
      } catch (e) {
        errors.push(String(e && e.message));
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, n) }, lane));
  return { conns, errors };
}

// With cfg.sync, waits for a "go" line on stdin: several load.js processes
// then start their clocks together (logins take longer in some than others).
function go() {
  if (!cfg.sync) return Promise.resolve();
  return new Promise((resolve) => {
    const rl = readline.createInterface({ input: process.stdin });
    rl.on('line', (line) => { if (line.trim() === 'go') { rl.close(); resolve(); } });
  });
}

// Runs the timed part: warm-up, "measuring", window, result line.
async function timed(workers) {
  await sleep((cfg.warmup || 0) * 1000);
  resetCounters();
  st.measuring = true;
  const t0 = nowUs();
  const cpu0 = process.cpuUsage();
  emit({ event: 'measuring' });
  await sleep(cfg.seconds * 1000);
  const res = result(t0, cpu0);
  stop = true;
  emit(res);
  // Let the loops finish their request in flight, but not for ever.
  await Promise.race([Promise.all(workers), sleep(5000)]);
}

// ---------------------------------------------------------------- modes

async function persistent() {
  const { conns, errors } = await openMany(cfg.conns, cfg.connectConcurrency || 32);
  if (errors.length) {
    emit({ event: 'fatal', error: `${errors.length} of ${cfg.conns} logins failed`, samples: errors.slice(0, 5) });
    conns.forEach((c) => c.close());
    return 1;
  }
  emit({ event: 'connected', conns: conns.length, tls: st.tls });
  await go();
  const workers = conns.map(async (c0) => {
    let c = c0;
    while (!stop) {
      if (c.broken) {
        // Someone dropped it: count, back off a little, log in again.
        recordError(c.lastError || new Error('connection ended'));
        c.close();
        await sleep(100);
        try { c = await connect(); } catch (e) { recordError(e); await sleep(100); }
        continue;
      }
      const t = nowUs();
      try {
        await query(c);
        st.requests++;
        st.hist.add(nowUs() - t);
      } catch (e) {
        recordError(e);
        if (!c.broken) await sleep(10);
      }
    }
    await closeConn(c);
  });
  await timed(workers);
  return 0;
}

async function churn() {
  emit({ event: 'connected', conns: 0, tls: null });
  await go();
  const workers = Array.from({ length: cfg.conns }, async () => {
    while (!stop) {
      const t = nowUs();
      let c = null;
      try {
        c = await connect();
        if (st.tls === null) st.tls = !!c.messageIo.tlsNegotiationComplete;
        const tc = nowUs() - t;
        await query(c);
        await closeConn(c);
        st.requests++;
        st.connHist.add(tc);
        st.hist.add(nowUs() - t);
      } catch (e) {
        recordError(e);
        if (c) c.close();
        await sleep(20);
      }
    }
  });
  await timed(workers);
  return 0;
}

async function idle() {
  const all = [];
  const rl = readline.createInterface({ input: process.stdin });
  emit({ event: 'ready' });
  for await (const line of rl) {
    const [cmd, arg] = line.trim().split(/\s+/);
    if (cmd === 'open') {
      const t = nowUs();
      const { conns, errors } = await openMany(Number(arg), cfg.connectConcurrency || 64);
      all.push(...conns);
      emit({ event: 'opened', conns: all.length, errors: errors.length, samples: errors.slice(0, 5),
        secs: (nowUs() - t) / 1e6, tls: st.tls, rss_kb: Math.round(process.memoryUsage().rss / 1024) });
    } else if (cmd === 'probe') {
      let ok = 0;
      const bad = [];
      const step = Math.max(1, Math.floor(all.length / 10));
      for (let i = 0; i < all.length; i += step) {
        try { await query(all[i]); ok++; } catch (e) { bad.push(String(e && e.message)); }
      }
      const broken = all.filter((c) => c.broken).length;
      emit({ event: 'probed', ok, failed: bad.length, samples: bad.slice(0, 5), broken });
    } else if (cmd === 'exit') {
      break;
    }
  }
  await Promise.race([Promise.all(all.map(closeConn)), sleep(5000)]);
  emit({ event: 'closed' });
  return 0;
}

const modes = { persistent, churn, idle };
if (!modes[cfg.mode]) {
  emit({ event: 'fatal', error: `unknown mode ${cfg.mode}` });
  process.exit(2);
}
modes[cfg.mode]().then((code) => process.exit(code), (e) => {
  emit({ event: 'fatal', error: String(e && e.stack) });
  process.exit(1);
});
