"""Startup parameters follow each client: the values a client asked for at
startup are in force on whichever pooled server runs its statements, and a
client that asked for nothing sees the server defaults, never what the
previous client of that server set."""

import os
import subprocess

import psycopg2
import pytest


def show(conn, name):
    with conn.cursor() as cur:
        cur.execute(f"SHOW {name}")
        return cur.fetchone()[0]


def backend_pid(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return cur.fetchone()[0]


@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_application_name_does_not_leak_to_the_next_client(tokenpool, pg_config, mode):
    tp = tokenpool(pg_config(pool={"mode": mode, "size": 1}))  # one server for all
    a = psycopg2.connect(tp.pg_dsn(), application_name="client-a")
    a.autocommit = True
    a_pid = backend_pid(a)
    assert show(a, "application_name") == "client-a"
    a.close()

    b = psycopg2.connect(tp.pg_dsn())
    b.autocommit = True
    assert backend_pid(b) == a_pid  # the same server, reused
    assert show(b, "application_name") != "client-a"
    b.close()


def test_client_encoding_from_startup(tokenpool, pg_config):
    tp = tokenpool(pg_config(pool={"mode": "transaction", "size": 1}))
    latin = psycopg2.connect(tp.pg_dsn(client_encoding="LATIN1"))
    latin.autocommit = True
    assert show(latin, "client_encoding") == "LATIN1"
    with latin.cursor() as cur:
        cur.execute("SELECT 'caf\u00e9'")
        assert cur.fetchone()[0] == "caf\u00e9"
    latin.close()
    plain = psycopg2.connect(tp.pg_dsn())
    plain.autocommit = True
    assert show(plain, "client_encoding") == "UTF8"
    plain.close()


def test_timezone_follows_each_psql_client(tokenpool, pg_config):
    tp = tokenpool(pg_config(pool={"mode": "transaction", "size": 1}))
    dsn = f"host=127.0.0.1 port={tp.listen[1]} dbname=orders user=app sslmode=disable"

    def show_tz(pgtz=None):
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PGPASSWORD"] = "app-password"
        if pgtz:
            env["PGTZ"] = pgtz  # libpq sends it as the TimeZone startup parameter
        out = subprocess.run(["psql", dsn, "-Atc", "SHOW TimeZone"], env=env,
                             capture_output=True, text=True, timeout=20)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    default = show_tz()
    assert show_tz("Europe/Berlin") == "Europe/Berlin"
    assert show_tz() == default  # asked for nothing: the default, not Berlin
    assert show_tz("America/New_York") == "America/New_York"
