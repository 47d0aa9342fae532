#!/usr/bin/python3
"""make_corpus.py - writes the seed corpora for the PostgreSQL fuzz targets.

Each seed is a real message as libpq (psql) or a PostgreSQL server puts it
on the wire. The binary outputs are committed under tests/fuzz/corpus/; run
this again (Debian's /usr/bin/python3, standard library only) after editing
it. run.sh never writes into these directories: it fuzzes a copy.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def cstr(s):
    return s.encode() + b"\0"


def startup(code, body=b""):
    """A startup-phase packet: int32 length (itself included), int32 code."""
    return struct.pack("!II", 8 + len(body), code) + body


def msg(kind, body=b""):
    """A regular message: type byte, int32 length (itself included)."""
    return kind.encode() + struct.pack("!I", 4 + len(body)) + body


def params(*kv):
    return b"".join(cstr(x) for x in kv) + b"\0"


STARTUP = {
    # psql 15: user, database, fallback_application_name as
    # application_name, client_encoding "auto" resolved to UTF8
    "psql_startup": startup(196608, params(
        "user", "alice", "database", "appdb",
        "application_name", "psql", "client_encoding", "UTF8")),
    # libpq with PGOPTIONS set and no database (defaults to user)
    "libpq_options_startup": startup(196608, params(
        "user", "app@contoso.onmicrosoft.com",
        "options", "-c search_path=app",
        "application_name", "worker", "client_encoding", "UTF8")),
    "ssl_request": startup(80877103),
    "gssenc_request": startup(80877104),
    # backend pid 12345, secret key 0xdeadbeef
    "cancel_request": startup(80877102, struct.pack("!II", 12345,
                                                     0xdeadbeef)),
}

ERROR = msg("E", b"".join([
    b"S" + cstr("FATAL"), b"V" + cstr("FATAL"), b"C" + cstr("28P01"),
    b"M" + cstr('password authentication failed for user "alice"'),
    b"F" + cstr("auth.c"), b"L" + cstr("330"), b"R" + cstr("auth_failed"),
    b"\0"]))
AUTH_SASL = msg("R", struct.pack("!I", 10) + params("SCRAM-SHA-256"))
READY = msg("Z", b"I")
# SELECT 42, NULL: two columns, the second NULL (-1 length)
DATA_ROW = msg("D", struct.pack("!H", 2) + struct.pack("!I", 2) + b"42" +
               struct.pack("!i", -1))
CLIENT_FIRST = b"n,,n=,r=rOprNGfwEbeRWgbNEkqO%hvY"
SASL_INITIAL = msg("p", cstr("SCRAM-SHA-256") +
                   struct.pack("!I", len(CLIENT_FIRST)) + CLIENT_FIRST)
# an Entra access token as a cleartext password (shortened)
PASSWORD = msg("p", cstr("eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOi"
                         "JodHRwczovL29zc3JkYm1zLWFhZC5kYXRhYmFzZSJ9.c2ln"))
QUERY = msg("Q", cstr("SET search_path = app"))
KEY_DATA = msg("K", struct.pack("!II", 12345, 0xdeadbeef))
NOTICE = msg("N", b"".join([
    b"S" + cstr("NOTICE"), b"V" + cstr("NOTICE"), b"C" + cstr("00000"),
    b"M" + cstr("relation \"t\" already exists, skipping"), b"\0"]))


def sasl_cap0():
    """A SASLInitialResponse on which fuzz_pg_messages tries the writer
    with cap 0 (it picks cap from msg[len - 1] ^ msg[len / 2]): found
    pg_write_sasl_initial() writing past a cap below 5."""
    for c in range(0x21, 0x7f):
        data = CLIENT_FIRST + bytes([c])
        m = msg("p", cstr("SCRAM-SHA-256") + struct.pack("!I", len(data)) +
                data)
        if m[-1] == m[len(m) // 2]:
            return m
    raise SystemExit("no cap-0 SASL seed")


# found pg_sql_pins() reading past len on an unterminated comment
QUERY_OPEN_COMMENT = msg("Q", cstr("/*"))

# what a server sends after a successful login, in one read
LOGIN_TAIL = b"".join([
    msg("R", struct.pack("!I", 0)),
    msg("S", params("server_version", "16.4")[:-1]),
    msg("S", params("client_encoding", "UTF8")[:-1]),
    KEY_DATA,
    READY,
])

MESSAGES = {
    "error_response": ERROR,
    "auth_sasl": AUTH_SASL,
    "ready_for_query": READY,
    "data_row": DATA_ROW,
    "sasl_initial_response": SASL_INITIAL,
    "password_message": PASSWORD,
    "query_set": QUERY,
    "backend_key_data": KEY_DATA,
    "notice_response": NOTICE,
    "login_tail": LOGIN_TAIL,
    "regress_sasl_initial_cap0": sasl_cap0(),
    "regress_query_open_comment": QUERY_OPEN_COMMENT,
}


def write(target, seeds):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


write("fuzz_pg_startup", STARTUP)
write("fuzz_pg_messages", MESSAGES)
