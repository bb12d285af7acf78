"""Statements too large to analyse on the event loop: read off it, forwarded, recorded with every
literal masked (analysis: skipped), refused when they might change what the session mirrors;
and other clients go on meanwhile."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable

import psycopg
import pytest

from tests.proxyproc import ProxyProc

SECRET = "big.secret@example.com"


@pytest.fixture
def small_budget(make_proxy: Callable[..., ProxyProc]) -> ProxyProc:
    return make_proxy(env={"SCALPLE_ANALYSIS_MAX_BYTES": "200000"})


def test_a_statement_past_the_budget_runs_and_is_recorded_masked(small_budget: ProxyProc) -> None:
    proxy = small_budget
    padding = "x" * 300_000
    sql = f"SELECT length('{padding}') + length('{SECRET}') AS n /*user='alice'*/"
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        assert conn.execute(sql).fetchone() == (300_000 + len(SECRET),)
    (row,) = [r for r in proxy.statements() if r["analysis"] == "skipped"]
    assert row["analysis"] == "skipped" and row["status"] == "ok" and row["actor"] == "alice"
    assert SECRET not in row["statement"] and padding[:1000] not in row["statement"]
    assert len(row["statement"]) < 100_000


def test_a_large_statement_that_may_change_the_session_is_refused(small_budget: ProxyProc) -> None:
    proxy = small_budget
    padding = "y" * 300_000
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.ProgramLimitExceeded):
            conn.execute(f"SELECT set_config('application_name', '{padding}', false)")
        with pytest.raises(psycopg.errors.ProgramLimitExceeded):
            conn.execute(f"PREPARE big AS SELECT '{padding}'")
        assert conn.execute("SELECT 1").fetchone() == (1,)
    refused = [r for r in proxy.statements() if r["status"] == "refused"]
    assert len(refused) == 2 and all(r["sqlstate"] == "54000" for r in refused)


def test_other_clients_go_on_while_a_large_statement_is_read(small_budget: ProxyProc) -> None:
    proxy = small_budget
    ids = ", ".join(str(i) for i in range(200_000))
    big = f"SELECT count(*) FROM generate_series(1, 10) g WHERE g IN ({ids})"
    done: list[int] = []

    def send_big() -> None:
        with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
            done.append(conn.execute(big).fetchone()[0])  # type: ignore[index]

    worker = threading.Thread(target=send_big)
    with psycopg.connect(proxy.dsn(), autocommit=True) as other:
        worker.start()
        answered = 0
        deadline = time.monotonic() + 120
        while worker.is_alive() and time.monotonic() < deadline:
            assert other.execute("SELECT 1").fetchone() == (1,)
            answered += 1
        worker.join(120)
    assert done == [10] and answered > 0
    # How long the other client waited meanwhile is bench/faults.py's to print, not a test's.


def test_sigterm_stops_the_proxy_within_its_drain_bound(
    make_proxy: Callable[..., ProxyProc],
) -> None:
    proxy = make_proxy(env={"SCALPLE_DRAIN_SECONDS": "1", "SCALPLE_ANALYSIS_MAX_BYTES": "200000"})
    assert proxy.proc is not None
    big = "SELECT 1 WHERE 1 IN (" + ", ".join(str(i) for i in range(2_000_000)) + ")"

    def run(sql: str) -> None:
        with (
            contextlib.suppress(psycopg.Error),
            psycopg.connect(proxy.dsn(), autocommit=True) as conn,
        ):
            conn.execute(sql)

    workers = [threading.Thread(target=run, args=(sql,)) for sql in ("SELECT pg_sleep(60)", big)]
    for w in workers:
        w.start()
    time.sleep(1.5)  # both in flight: one at the server, one being read by the proxy
    proxy.proc.send_signal(signal.SIGTERM)
    assert proxy.proc.wait(30) == 0  # not the 60 s the sleep asks for
    for w in workers:
        w.join(30)
    sleeping = [r for r in proxy.statements() if "pg_sleep(60)" in (r["statement"] or "")]
    assert len(sleeping) == 1 and sleeping[0]["status"] in ("incomplete", "cancelled", "error")


def test_an_idle_reader_thread_keeps_nothing_it_read() -> None:
    """A reader thread hands its message to the loop and keeps no reference while idle: a 250 MB
    statement's memory goes back once the loop is done with it."""
    import asyncio
    import gc
    import weakref

    from scalple.proxy.server import Offload

    class Message:
        pass

    async def main() -> weakref.ref[Message]:
        loop = asyncio.get_running_loop()
        offload = Offload(loop, threads=1)
        done = asyncio.Event()
        box: list[Message] = []

        def handed(result: object) -> None:
            assert isinstance(result, Message)
            box.append(result)
            done.set()

        offload.submit(Message, handed)
        await done.wait()
        ref = weakref.ref(box.pop())
        await asyncio.sleep(0.2)  # the thread is now idle, blocked on its queue
        return ref

    ref = asyncio.run(main())
    gc.collect()
    assert ref() is None
