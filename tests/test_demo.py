"""`scalple demo` driven from start to clean-up in a terminal, and the trail pairing it shows."""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import psycopg
import pytest

from scalple.demo.run import ALICE
from scalple.demo.trails import pair, parse_pgaudit, shape
from scalple.sandbox import pgbouncer_binary, postgres_bindir
from tests.proxyproc import read_events

LOG = """\
2026-11-23 19:21:20.546 UTC [6472] user=app_user db=app app=shop-web client=127.0.0.1 LOG:  \
AUDIT: SESSION,1,1,READ,SELECT,,,"SELECT email FROM customers WHERE id = 42",<none>
2026-11-23 19:21:20.547 UTC [6472] user=postgres db=app app=psql client=127.0.0.1 LOG:  \
AUDIT: SESSION,2,1,READ,SELECT,,,select 1,<none>
2026-11-23 19:21:20.548 UTC [6473] user=app_user db=app app=shop-web client=127.0.0.1 LOG:  \
AUDIT: SESSION,3,1,WRITE,UPDATE,,,"UPDATE customers
   SET email = 'x, y' WHERE id = 42",<none>
2026-11-23 19:21:20.549 UTC [6473] user=app_user db=app app=shop-web client=127.0.0.1 LOG:  \
statement: not an audit line
"""


def demo_env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "NO_COLOR": "1",
        "COLUMNS": "220",
        "SCALPLE_CONFIG": os.devnull,
        **extra,
    }


@contextlib.contextmanager
def spawn(*args: str, columns: int = 220, **env: str) -> Iterator[pexpect.spawn]:
    """`scalple demo` in a terminal; its whole transcript is kept in `logfile_read`. A test that
    fails half way still lets it clean up (Ctrl-C) instead of killing it with servers running."""
    child = pexpect.spawn(
        sys.executable,
        ["-m", "scalple", "demo", *args],
        env=demo_env(**env),
        encoding="utf-8",
        timeout=180,
        dimensions=(60, columns),
    )
    child.logfile_read = io.StringIO()
    try:
        yield child
    finally:
        if child.isalive():
            child.sendintr()
            child.expect(pexpect.EOF, timeout=60)
        child.close()


def test_pgaudit_lines_are_parsed_across_lines_and_filtered_by_application() -> None:
    lines = parse_pgaudit(LOG, {"shop-web"})
    assert [(a.user, a.audit_class, a.command) for a in lines] == [
        ("app_user", "READ", "SELECT"),
        ("app_user", "WRITE", "UPDATE"),
    ]
    assert lines[1].statement == "UPDATE customers\n   SET email = 'x, y' WHERE id = 42"
    assert len(parse_pgaudit(LOG)) == 3


def test_statements_pair_by_shape_and_unseen_ones_are_marked() -> None:
    assert shape("/*user='bob'*/ SELECT email FROM customers WHERE id = 42;") == shape(
        "select email\nfrom customers where id = ***"
    )
    events = [
        {
            "kind": "statement",
            "seq": 1,
            "actor": "bob@corp.example",
            "identity_source": "comment",
            "statement": "/*user='bob%40corp.example'*/ SELECT email FROM customers WHERE id = 7",
        }
    ]
    pairs = pair(
        events, parse_pgaudit(LOG, {"shop-web"}), ["UPDATE customers SET email = 'z' WHERE id = 1"]
    )
    assert [(p.pgaudit_user, p.actor, p.identity_source) for p in pairs] == [
        ("app_user", "bob@corp.example", "comment"),
        ("app_user", None, None),
    ]


def _require_stack() -> None:
    postgres_bindir()  # raises SandboxError naming what to install
    if pgbouncer_binary() is None:
        pytest.skip("PgBouncer is not installed; the demo's pooled-SET step needs it")


def test_demo_runs_start_to_clean_up() -> None:
    _require_stack()
    with spawn() as child:
        child.expect(r"PostgreSQL with pgAudit on 127\.0\.0\.1:(\d+)")
        pg_port = int(child.match.group(1))
        child.expect(r"PgBouncer \(pool_mode = transaction\)")
        child.expect(r"scalple serve on 127\.0\.0\.1:\d+ → PgBouncer, ledger (\S+)")
        ledger = Path(child.match.group(1))
        child.expect("Who ran what")
        child.expect("Cleaning up")
        child.expect(r"removed (\S+)\.\r?\n")
        base = Path(child.match.group(1))
        child.expect(pexpect.EOF)
    out = _transcript(child)
    assert child.exitstatus == 0, out
    rows = {line for line in out.splitlines() if "│" in line}
    assert any("alice@corp.example (startup)" in r and "app_user" in r for r in rows), out
    assert any("bob@corp.example (comment)" in r for r in rows), out
    assert any("analyst@corp.example (set)" in r for r in rows), out
    assert sum("not seen: went around Scalple" in r for r in rows) == 2, out
    assert "Scalple named the person for 5 of the 5 statements it carried" in out
    assert "changed by alice@corp.example, but it was Bob's request" in out
    assert "email address in Bob's lookup: pgAudit's log has it in clear; Scalple's ledger" in out
    if "no `scalple verify` command yet" not in out:  # verify landed: the demo's ledger is intact
        assert re.search(r"\$ scalple verify \S+\s+intact: ", out), out
    if "no `scalple dsar` command yet" not in out:  # dsar landed: it answers for customer 42
        ran = re.search(r"\$ scalple dsar (.*?)\(exit status (\d+)\)", out, re.S)
        assert ran and ran.group(2) == "0", out
        assert "Traceback" not in ran.group(1), out
    # The watch act: Carol's browsing raises a live alert, and scalple anomalies flags her.
    assert re.search(
        r"ALERT new_subjects \(high, score [\d.]+\) carol@corp\.example: touched 30", out
    )
    ran = re.search(r"\$ scalple anomalies (.*?)\(exit status (\d+)\)", out, re.S)
    assert ran and ran.group(2) == "1" and "carol@corp.example" in ran.group(1), out
    assert "alice@corp.example" not in ran.group(1) and "bob@corp.example" not in ran.group(1)
    assert ledger.parent == base and not base.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(f"postgresql://postgres@127.0.0.1:{pg_port}/app", connect_timeout=2)


def test_demo_reads_well_at_80_columns() -> None:
    """The terminal's own width (no COLUMNS): nothing wider, no word broken into letters."""
    _require_stack()
    with spawn(columns=80, COLUMNS="") as child:
        child.expect(pexpect.EOF)
    out = _transcript(child)
    assert child.exitstatus == 0, out
    lines = out.splitlines()
    # Command lines are left for the terminal to wrap, so that they copy whole.
    assert all(len(line.rstrip()) <= 80 for line in lines if "$ scalple" not in line), out
    words = set(out.replace("│", " ").split())
    assert {"public.customers.email", "public.orders.customer_id"} <= words, out
    assert "    statement:" in lines and "    ── 1 of 4 ──" in lines, out  # dsar's blocks
    assert any(line.startswith("┃ statement") for line in lines), out  # the trails still a table


def _transcript(child: pexpect.spawn) -> str:
    text = str(child.logfile_read.getvalue()) if child.logfile_read else ""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_keep_leaves_it_running_until_ctrl_c() -> None:
    _require_stack()
    with spawn("--keep") as child:
        child.expect(r"through Scalple as Alice\s+(postgresql://\S+)")
        alice_dsn = child.match.group(1)
        child.expect(r"ledger\s+(\S+)")
        ledger = Path(child.match.group(1))
        child.expect("Press Ctrl-C to stop and clean up.")
        with psycopg.connect(alice_dsn, autocommit=True) as con:
            assert con.execute("SELECT count(*) FROM customers").fetchone() == (3,)
        mine = [
            e
            for e in read_events(ledger)
            if e["kind"] == "statement" and e["statement"] == "SELECT count(*) FROM customers"
        ]
        assert [(e["actor"], e["identity_source"]) for e in mine] == [(ALICE, "startup")]
        child.sendintr()
        child.expect(r"removed (\S+)\.")
        base = Path(child.match.group(1))
        child.expect(pexpect.EOF)
    assert child.exitstatus == 0, _transcript(child)
    assert not base.exists()


def test_a_closed_terminal_still_cleans_up() -> None:
    _require_stack()
    with spawn("--keep") as child:
        child.expect(r"PostgreSQL with pgAudit on 127\.0\.0\.1:(\d+)")
        pg_port = int(child.match.group(1))
        child.expect("Press Ctrl-C to stop and clean up.")
        child.kill(signal.SIGHUP)
        child.expect(r"removed (\S+)\.")
        base = Path(child.match.group(1))
        child.expect(pexpect.EOF)
    assert not base.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(f"postgresql://postgres@127.0.0.1:{pg_port}/app", connect_timeout=2)


def test_missing_postgresql_says_how_to_install(tmp_path: Path) -> None:
    path = f"{Path(sys.executable).parent}:/usr/bin:/bin"
    with spawn(SCALPLE_PG_BINDIR=str(tmp_path), PATH=path) as child:
        child.expect(pexpect.EOF)
    out = _transcript(child)
    assert child.exitstatus == 2, out
    assert "apt-get install -y postgresql-15 postgresql-15-pgaudit" in out
    assert "Traceback" not in out
