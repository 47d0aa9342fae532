#!/usr/bin/env bash
# The demo: installs what is needed, builds tokenpool, starts the local
# stand-in for Azure (an IMDS-style identity endpoint and a PostgreSQL that
# accepts only valid Entra-style tokens over TLS), puts tokenpool in front of
# it, and runs psql through tokenpool with a plain local password.
# Everything it starts is stopped on exit.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"

bash tests/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" >/dev/null

run=$(mktemp -d /tmp/tokenpool-demo.XXXXXX)
chmod 755 "$run"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT

/usr/bin/python3 tests/rig/rig.py up --dir "$run/rig" >"$run/rig.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -f "$run/rig/rig.json" ] && break; sleep 0.1; done
[ -f "$run/rig/rig.json" ] || { cat "$run/rig.log"; exit 1; }

free_port() {
	/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
port=$(free_port)
http_port=$(free_port)
/usr/bin/python3 - "$run/rig/rig.json" "$port" "$http_port" >"$run/tokenpool.json" <<'PY'
import json, sys
rig = json.load(open(sys.argv[1]))
print(json.dumps({
    "http": {"listen": "127.0.0.1:" + sys.argv[3]},
    "identity": {"source": "imds", "imds_endpoint": rig["imds_endpoint"]},
    "pools": [{
        "name": rig["pg_database"],
        "protocol": "postgres",
        "listen": "127.0.0.1:" + sys.argv[2],
        "server": {
            "host": rig["pg_host"], "port": rig["pg_port"],
            "database": rig["pg_database"],
            "user": rig["identities"]["system"]["db_user"],
            "tls": {"mode": "verify-full", "ca_file": rig["ca_file"]},
        },
        "clients": [{"user": "app", "password_env": "APP_DB_PASSWORD"}],
        "pool": {"mode": "transaction", "size": 5},
    }],
}, indent=2))
PY
chmod 600 "$run/tokenpool.json"
export APP_DB_PASSWORD=demo-password
./build/tokenpool run -c "$run/tokenpool.json" 2>"$run/tokenpool.log" &
pids+=($!)
for _ in $(seq 100); do
	(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
	sleep 0.1
done

echo "tokenpool listening on 127.0.0.1:$port; the app logs in as app / demo-password"
echo "\$ psql \"host=127.0.0.1 port=$port dbname=orders user=app\" -c ..."
PGPASSWORD=demo-password psql "host=127.0.0.1 port=$port dbname=orders user=app sslmode=disable" \
	-c "SELECT current_user AS logged_in_upstream_as, ssl AS upstream_tls, version
	      FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
get() { /usr/bin/python3 -c 'import sys, urllib.request as u
try: r = u.urlopen(sys.argv[1], timeout=5); print(r.status, r.read().decode().strip())
except Exception as e: print(getattr(e, "code", ""), e.read().decode() if hasattr(e, "read") else e)' "$1"; }
echo "\$ curl http://127.0.0.1:$http_port/readyz"
get "http://127.0.0.1:$http_port/readyz" | sed 's/^/  /'
echo "\$ curl http://127.0.0.1:$http_port/metrics | grep ..."
get "http://127.0.0.1:$http_port/metrics" |
	grep -E '^(tokenpool_servers|tokenpool_transactions_total|tokenpool_token_expiry_seconds|tokenpool_server_logins_total)' |
	sed 's/^/  /'
echo "tokenpool log:"
sed 's/^/  /' "$run/tokenpool.log"
