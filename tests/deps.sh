#!/usr/bin/env bash
# Installs what tokenpool needs to build, and what its tests and demo run:
# Debian 12 packages only (plus npm packages for the node clients, installed
# into tests/integration/node_modules). Safe to run again.
set -euo pipefail

need_root() {
	if [ "$(id -u)" -ne 0 ]; then
		echo "tests/deps.sh: run as root (it installs Debian packages)" >&2
		exit 1
	fi
}

pkgs=(
	build-essential cmake pkg-config clang libclang-rt-14-dev clang-format
	libuv1-dev libssl-dev libcurl4-openssl-dev libcjson-dev
	openssl ca-certificates
	libhttp-parser-dev
	postgresql postgresql-client pgbouncer libpam0g-dev
	mariadb-server mariadb-client sysbench
	freetds-bin
	iptables
	python3 python3-psycopg2 python3-pymysql python3-pymssql python3-pytest
	python3-cryptography python3-prometheus-client python3-yaml
)
# Node may come from elsewhere on a machine (with its own npm); only a
# machine without it gets Debian's.
command -v node >/dev/null || pkgs+=(nodejs)
command -v npm >/dev/null || pkgs+=(npm)

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
		missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
	need_root
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Node clients for the integration tests: pg, mysql2, tedious and mssql.
here=$(cd "$(dirname "$0")" && pwd)
for m in pg mysql2 tedious mssql; do
	if [ ! -d "$here/integration/node_modules/$m" ]; then
		(cd "$here/integration" && npm install --no-audit --no-fund --silent)
		break
	fi
done
