"""Real clients work through the proxy unchanged, and each statement they run is recorded once."""

from __future__ import annotations

import asyncio
import re
import subprocess
import threading
import time
from collections.abc import Callable

import asyncpg
import psycopg
import pytest

from scalple.sandbox import ROLES, Sandbox, client
from tests.proxyproc import ProxyProc


def test_psql_multi_statement_and_errors(proxy: ProxyProc) -> None:
    argv, env = client("psql", proxy.port, "-c", "SELECT 1 AS a; SELECT 2 AS b",
                       "-c", "SELECT 1/0", "-c", "")  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30)
    assert "division by zero" in out.stderr
    rows = proxy.statements()
    assert [(r["statement"], r["status"]) for r in rows] == [
        ("SELECT 1 AS a", "ok"),
        ("SELECT 2 AS b", "ok"),
        ("SELECT 1/0", "error"),
    ]
    assert rows[2]["sqlstate"] == "22012"


def test_simple_query_error_skips_the_rest(proxy: ProxyProc) -> None:
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn, pytest.raises(psycopg.Error):
        conn.execute("SELECT 1; SELECT 1/0; SELECT 3")
    rows = proxy.statements()
    assert [r["status"] for r in rows] == ["ok", "error", "skipped"]


def test_psycopg_pipeline_binary_and_copy(proxy: ProxyProc, sandbox: Sandbox) -> None:
    sandbox.psql(
        "DROP TABLE IF EXISTS items; CREATE TABLE items (id int, label text);"
        "ALTER TABLE items OWNER TO app_user",
        dbname="app",
    )
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        with conn.pipeline():
            for i in range(10):
                conn.execute("INSERT INTO items VALUES (%s, %s)", (i, f"item {i}"))
        with conn.pipeline():  # an error ends the pipeline's implicit transaction
            bad = conn.execute("SELECT 1/%s", (0,))
            later = conn.execute("SELECT %s::int", (5,))
            with pytest.raises(psycopg.errors.DivisionByZero):
                conn.pipeline_sync() if hasattr(conn, "pipeline_sync") else bad.fetchone()
            with pytest.raises(psycopg.Error):
                later.fetchone()
        cur = conn.cursor(binary=True)
        cur.execute("SELECT id, label FROM items WHERE id < %s ORDER BY id", (3,))
        assert cur.fetchall() == [(0, "item 0"), (1, "item 1"), (2, "item 2")]
        with cur.copy("COPY items (id, label) FROM STDIN") as copy:
            for i in range(100, 350):
                copy.write_row((i, f"copied {i}"))
        with cur.copy("COPY items TO STDOUT") as copy:
            exported = sum(1 for _ in copy)
        assert exported == 260
    rows = proxy.statements()
    inserts = [r for r in rows if r["statement"].startswith("INSERT")]
    assert len(inserts) == 10 and all(r["rows"] == 1 and r["status"] == "ok" for r in inserts)
    assert all(r["params"] for r in inserts)
    errs = [r for r in rows if r["statement"] == "SELECT 1/$1"]
    assert errs and errs[0]["status"] == "error" and errs[0]["sqlstate"] == "22012"
    assert [r["status"] for r in rows if r["statement"] == "SELECT $1::int"] == ["skipped"]
    copy_in = [r for r in rows if "FROM STDIN" in r["statement"]]
    copy_out = [r for r in rows if "TO STDOUT" in r["statement"]]
    assert copy_in[0]["rows"] == 250 and copy_out[0]["rows"] == 260


def test_named_portal_with_row_limit_is_one_statement(proxy: ProxyProc) -> None:
    with psycopg.connect(proxy.dsn()) as conn:
        cur = conn.cursor(name="big")  # server-side cursor: DECLARE + FETCH in a transaction
        cur.itersize = 100
        cur.execute("SELECT g FROM generate_series(1, 1000) g")
        assert sum(1 for _ in cur) == 1000
        cur.close()

    async def fetch_in_chunks() -> int:
        conn = await asyncpg.connect(proxy.dsn())
        try:
            async with conn.transaction():
                total = 0
                async for _ in conn.cursor("SELECT g FROM generate_series(1, 500) g", prefetch=50):
                    total += 1
                return total
        finally:
            await conn.close()

    assert asyncio.run(fetch_in_chunks()) == 500
    rows = proxy.statements()
    chunked = [r for r in rows if "generate_series(1, 500)" in r["statement"]]
    assert len(chunked) == 1, "Executes of one suspended portal are one statement"
    assert chunked[0]["rows"] == 500 and chunked[0]["status"] == "ok"


def test_asyncpg_prepared_statements(proxy: ProxyProc) -> None:
    async def work() -> list[int]:
        conn = await asyncpg.connect(proxy.dsn(), server_settings={"application_name": "apg"})
        try:
            stmt = await conn.prepare("SELECT $1::int * 2 AS doubled")
            got = [await stmt.fetchval(i) for i in range(5)]
            await conn.executemany("SELECT $1::int", [(i,) for i in range(3)])
            return got
        finally:
            await conn.close()

    assert asyncio.run(work()) == [0, 2, 4, 6, 8]
    rows = proxy.statements()
    doubled = [r for r in rows if "doubled" in r["statement"]]
    assert len(doubled) == 5
    assert [r["params"] for r in doubled] == [(f"\\x{i:08x}",) for i in range(5)] or all(
        r["params"] for r in doubled
    )
    assert {r["application_name"] for r in doubled} == {"apg"}
    assert len([r for r in rows if r["statement"] == "SELECT $1::int"]) == 3


@pytest.mark.parametrize("role", ["trust_user", "pw_user", "md5_user", "app_user"])
def test_auth_methods_pass_through(
    make_proxy: Callable[..., ProxyProc], sandbox: Sandbox, role: str
) -> None:
    proxy = make_proxy(upstream=sandbox.pg_port)  # straight to PostgreSQL: pg_hba per role
    password = ROLES[role][0]
    with psycopg.connect(proxy.dsn(role, password)) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (role,)
    if password:
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(proxy.dsn(role, "wrong"))


def test_cancel_request_reaches_the_right_backend(proxy: ProxyProc) -> None:
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        timer = threading.Timer(0.5, conn.cancel)
        timer.start()
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(20) -- to-cancel")
        assert time.monotonic() - started < 15
        assert conn.execute("SELECT 1").fetchone() == (1,)
    rows = proxy.statements()
    cancelled = [r for r in rows if "to-cancel" in r["statement"]]
    assert cancelled[0]["status"] == "cancelled" and cancelled[0]["sqlstate"] == "57014"


def test_notices_notifications_and_large_rows(
    make_proxy: Callable[..., ProxyProc], sandbox: Sandbox
) -> None:
    # LISTEN needs a session-pooled server connection: straight to PostgreSQL here.
    proxy = make_proxy(upstream=sandbox.pg_port)
    notices: list[str] = []
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        conn.execute("DO $$ BEGIN RAISE NOTICE 'hello from plpgsql'; END $$")
        conn.execute("LISTEN ch")
        with psycopg.connect(proxy.dsn(), autocommit=True) as other:
            other.execute("NOTIFY ch, 'payload'")
        conn.execute("SELECT 1")
        got = next(conn.notifies(timeout=5, stop_after=1))
        assert got.payload == "payload"
        big = conn.execute("SELECT repeat('x', 8 * 1024 * 1024)").fetchone()
        assert big is not None and len(big[0]) == 8 * 1024 * 1024
    assert "hello from plpgsql" in notices


def _pgbench(port: int, *args: str) -> str:
    argv, env = client("pgbench", port, *args)
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench_statements_are_all_recorded(
    make_proxy: Callable[..., ProxyProc], sandbox: Sandbox, mode: str
) -> None:
    sandbox.psql(
        "DROP TABLE IF EXISTS pgbench_accounts, pgbench_branches, pgbench_history, pgbench_tellers",
        dbname="app",
    )
    _pgbench(sandbox.pg_port, "-i", "-s", "1", "-q")
    # PgBouncer 1.18 in transaction mode cannot keep named prepared statements: -M prepared
    # goes straight to PostgreSQL, the other modes through the pool.
    upstream = sandbox.pg_port if mode == "prepared" else sandbox.bouncer_port
    proxy = make_proxy("--durability", "os", upstream=upstream)
    out = _pgbench(proxy.port, "-M", mode, "-c", "4", "-t", "50", "-n")
    processed = int(re.search(r"number of transactions actually processed: (\d+)", out)[1])  # type: ignore[index]
    assert processed == 200
    rows = proxy.statements(
        settle=10, until=lambda rs: sum(r["status"] == "ok" for r in rs) >= 200 * 7
    )
    # TPC-B-like: BEGIN, 3 UPDATE, SELECT, INSERT, END per transaction; pgbench also runs two
    # catalog queries of its own before the clients start.
    script = [
        r
        for r in rows
        if re.match(
            r"\s*(BEGIN|END|UPDATE pgbench_|SELECT abalance|"
            r"INSERT INTO pgbench_history)",
            r["statement"],
        )
    ]
    assert len(script) == processed * 7
    assert len(rows) - len(script) == 2
    assert all(r["status"] == "ok" for r in rows)
    assert sum(r["statement"].lstrip().upper().startswith("UPDATE") for r in rows) == 3 * processed


def test_error_in_the_middle_of_a_result(proxy: ProxyProc) -> None:
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 10 / (5 - g) FROM generate_series(1, 10) g -- midway")
        assert conn.execute("SELECT 1").fetchone() == (1,)
    (midway,) = [r for r in proxy.statements() if "midway" in r["statement"]]
    assert midway["status"] == "error" and midway["sqlstate"] == "22012"
    assert midway["rows"] == 4, "the rows sent before the error are counted"


@pytest.mark.parametrize(
    ("encoding", "text"), [("LATIN1", "café"), ("WIN1252", "€ 5"), ("LATIN9", "œuvre")]
)
def test_clients_in_other_encodings_are_read_in_theirs(
    proxy: ProxyProc, encoding: str, text: str
) -> None:
    with psycopg.connect(proxy.dsn(), autocommit=True, client_encoding=encoding) as conn:
        assert conn.execute(f"SELECT '{text}' AS t -- {encoding}").fetchone() == (text,)
        with pytest.raises(psycopg.errors.UndefinedTable, match="é_missing"):
            conn.execute("SELECT * FROM é_missing")
    (row,) = [r for r in proxy.statements() if f"-- {encoding}" in (r["statement"] or "")]
    assert text in row["statement"]  # stored as text, whatever the client's encoding
