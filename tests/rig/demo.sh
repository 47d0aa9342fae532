#!/usr/bin/env bash
# The demo: installs what is needed, builds tokenpool, starts the local
# stand-in for Azure (an IMDS-style identity endpoint; PostgreSQL, MariaDB
# and a TDS server that accept only valid Entra-style tokens over TLS), puts
# tokenpool in front of them, and runs psql, mariadb and tsql through
# tokenpool with a plain local password.
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
my_port=$(free_port)
sql_port=$(free_port)
/usr/bin/python3 - "$run/rig/rig.json" "$port" "$http_port" "$my_port" "$sql_port" >"$run/tokenpool.json" <<'PY'
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
    }, {
        # pool names are what clients ask for; each maps to a server database
        "name": "shop",
        "protocol": "mysql",
        "listen": "127.0.0.1:" + sys.argv[4],
        "server": {
            "host": rig["mysql_host"], "port": rig["mysql_port"],
            "database": rig["mysql_database"],
            "user": rig["identities"]["system"]["db_user"],
            "tls": {"mode": "verify-full", "ca_file": rig["ca_file"]},
        },
        "clients": [{"user": "app", "password_env": "APP_DB_PASSWORD"}],
        "pool": {"mode": "transaction", "size": 5},
    }, {
        "name": "ledger",
        "protocol": "sqlserver",
        "listen": "127.0.0.1:" + sys.argv[5],
        "server": {
            # the gateway: tokenpool follows its redirect to the database
            "host": rig["tds_host"], "port": rig["tds_gateway_port"],
            "database": "orders",
            "user": rig["identities"]["system"]["db_user"],
            "tls": {"mode": "verify-full", "ca_file": rig["ca_file"]},
        },
        "clients": [{"user": "app", "password_env": "APP_DB_PASSWORD"}],
        "client_tls": {"mode": "allow", "cert_file": rig["server_cert_file"],
                       "key_file": rig["server_key_file"]},
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
echo
echo "\$ mariadb -h 127.0.0.1 -P $my_port -u app shop -e ..."
mariadb -h 127.0.0.1 -P "$my_port" -u app -pdemo-password shop --table \
	-e "SELECT CURRENT_USER() AS logged_in_upstream_as,
	           (SELECT variable_value FROM information_schema.session_status
	             WHERE variable_name = 'Ssl_version') AS upstream_tls"
echo
echo "\$ tsql -S tokenpool -U app -D ledger  (SQL Server, through an Azure-style redirect)"
printf '[tokenpool]\n\thost = localhost\n\tport = %s\n\ttds version = 7.4\n\tencryption = require\n\tca file = %s\n' \
	"$sql_port" "$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ca_file"])' "$run/rig/rig.json")" \
	>"$run/freetds.conf"
printf "SELECT SUSER_SNAME() AS logged_in_upstream_as, @@SERVERNAME AS server\ngo\nexit\n" |
	FREETDSCONF="$run/freetds.conf" tsql -S tokenpool -U app -P demo-password -D ledger -o q 2>&1 |
	grep -v -E '^(locale|using default charset|Setting ledger as default database)' || true
echo
get() { /usr/bin/python3 -c 'import sys, urllib.request as u
try: r = u.urlopen(sys.argv[1], timeout=5); print(r.status, r.read().decode().strip())
except Exception as e: print(getattr(e, "code", ""), e.read().decode() if hasattr(e, "read") else e)' "$1"; }
echo "\$ curl http://127.0.0.1:$http_port/readyz"
get "http://127.0.0.1:$http_port/readyz" | sed 's/^/  /'
echo "\$ curl http://127.0.0.1:$http_port/metrics | grep ..."
get "http://127.0.0.1:$http_port/metrics" |
	grep -E '^(tokenpool_transactions_total|tokenpool_token_expiry_seconds|tokenpool_server_logins_total\{.*ok)' |
	sed 's/^/  /'
echo "tokenpool log:"
sed 's/^/  /' "$run/tokenpool.log"
