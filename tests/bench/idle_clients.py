"""Holding many logged-in idle clients: what pg/pgwire.py and
mysql/mywire.py share (test code, not product code).

The wire modules know how to log in one connection; this module opens many
of them with a bounded number of logins in flight, and holds them for the
wire modules' command lines. No third-party imports, so the wire modules
stay usable on their own.
"""

import asyncio
import resource
import signal
import time


async def open_many(n, connect, concurrency=64, into=None):
    """Open n connections with connect() (a coroutine function that returns
    one logged-in connection), at most `concurrency` logins in flight so the
    proxy sees a steady stream instead of a thundering herd. Appends them to
    `into` (a list) and returns (list, seconds, errors); a failed login is
    counted in errors, not raised, so one refusal does not hide the rest."""
    into = [] if into is None else into
    sem = asyncio.Semaphore(concurrency)
    errors = []

    async def one():
        async with sem:
            try:
                into.append(await connect())
            except Exception as e:  # noqa: BLE001 -- counted and reported
                errors.append(f"{type(e).__name__}: {e}")

    t0 = time.monotonic()
    await asyncio.gather(*(one() for _ in range(n)))
    return into, time.monotonic() - t0, errors


def close_quietly(writer, goodbye):
    """Send the protocol's goodbye message and close the socket. Errors are
    ignored: the server may have dropped the connection already, and
    closing is all that is left to do either way."""
    try:
        writer.write(goodbye)
    except Exception:  # noqa: BLE001
        pass
    try:
        writer.close()
    except Exception:  # noqa: BLE001
        pass


def raise_nofile():
    """Soft open-files limit up to the hard one (no CAP_SYS_RESOURCE needed):
    thousands of idle clients need more than the usual 1024 descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def hold(connect, count, concurrency, show=None):
    """The wire modules' command line: open `count` clients, say how it
    went (and, with show, what show(first connection) returns), then hold
    them until SIGINT or SIGTERM and close them. Returns the exit status."""
    raise_nofile()

    async def run():
        conns, secs, errors = await open_many(count, connect, concurrency)
        print(f"{len(conns)} logged in in {secs:.1f}s, {len(errors)} failed"
              + (f" (first: {errors[0]})" if errors else ""), flush=True)
        if conns and show is not None:
            print(await show(conns[0]), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        for c in conns:
            c.close()

    asyncio.run(run())
    return 0
