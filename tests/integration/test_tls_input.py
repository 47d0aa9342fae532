"""Bytes a TLS client sent while tokenpool could not take them.

A client waiting for a server (transaction mode, pool busy) may keep
sending; tokenpool buffers up to 1 MB of its plaintext, then stops reading.
With TLS, the last ciphertext it read is already inside OpenSSL by then,
not in the socket: when the client gets its server and tokenpool reads
again, those bytes must be decrypted too, though the socket itself has
nothing new to say. Otherwise the client waits for replies to queries
tokenpool never passed on, and tokenpool waits for bytes that never come.
"""
import socket
import struct

import pytest

from conftest import CLIENT_PASSWORD, CLIENT_USER
from pgraw import msg, pg_login, read_until_ready, recv_msg


def query(sock, sql):
    sock.sendall(msg(b"Q", sql.encode() + b"\0"))
    return read_until_ready(sock)


def big_queries(total):
    """Queries of about 300 KB each, `total` bytes in all, each answering
    with its own length (so the replies stay small)."""
    out, lengths = [], []
    while sum(len(m) for m in out) < total:
        n = min(300 * 1024, max(1, total - sum(len(m) for m in out)))
        out.append(msg(b"Q", f"SELECT length('{'x' * n}')".encode() + b"\0"))
        lengths.append(n)
    return b"".join(out), lengths


# The chunk sizes in which ciphertext is read depend on timing; several
# totals just past the 1 MB buffer make it likely that, in at least one,
# the tail of the input sits wholly inside OpenSSL when reading stops.
@pytest.mark.parametrize("extra_kb", [6, 20, 40, 60, 100])
def test_tls_client_sending_while_waiting_for_a_server_gets_every_reply(
        rig, tokenpool, pg_config, extra_kb):
    tp = tokenpool(pg_config(pool={"mode": "transaction", "size": 1, "wait_timeout": 30},
                             client_tls={"mode": "require"}))
    holder = pg_login(tp.listen[1], CLIENT_USER, CLIENT_PASSWORD, rig.pg_database, tls=True)
    query(holder, "BEGIN")  # the only server is now this client's
    waiter = pg_login(tp.listen[1], CLIENT_USER, CLIENT_PASSWORD, rig.pg_database, tls=True,
                      timeout=30)
    payload, lengths = big_queries(1024 * 1024 + extra_kb * 1024)
    waiter.sendall(payload)  # tokenpool takes ~1 MB of it, then stops reading
    query(holder, "COMMIT")  # the server goes to the waiting client
    got = []
    while len(got) < len(lengths):
        try:
            kind, body = recv_msg(waiter)
        except (socket.timeout, TimeoutError):
            pytest.fail(f"{len(got)} of {len(lengths)} replies after 30 s: the rest of the "
                        f"input was never read")
        if kind == b"D":
            (ncols,) = struct.unpack("!H", body[:2])
            (flen,) = struct.unpack("!i", body[2:6])
            assert ncols == 1
            got.append(int(body[6:6 + flen]))
        elif kind == b"E":
            pytest.fail(f"query failed: {body!r}")
    assert got == lengths
    query(waiter, "SELECT 1")
    waiter.close()
    holder.close()
