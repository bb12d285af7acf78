"""Bounded work: analysis grows linearly with the statement (checked by counting the calls it
makes, not by timing), `skipped` masks everything without parsing, and the analyzer can be
called from a worker thread and the event loop's thread at once."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from scalple.analysis import Analyzer, Catalog, Policy, subject_hash
from scalple.analysis import shape as shape_module
from scalple.events import AuditEvent
from scalple.ledger import open_sink
from scalple.ledger.keys import load_public_key
from scalple.ledger.verify import verify_ledger
from tests.proxyproc import read_events

KEY = b"k" * 32


def analyzer(catalog: Catalog | None = None, **options: object) -> Analyzer:
    policy = Policy.build(
        ["users.email", "users.phone"], {"users.id": "customer"}, **options
    )  # fmt: skip
    tables = {"public.users": ["id", "email", "phone", "name"]}
    return Analyzer(policy, KEY, catalog or Catalog.from_tables(tables))


def calls(fn: Callable[[], object]) -> int:
    """How many Python lines and calls `fn` runs: a deterministic measure of work (a loop
    without calls in it counts too)."""
    n = 0

    def trace(*_: object) -> object:
        nonlocal n
        n += 1
        return trace

    sys.settrace(trace)  # type: ignore[arg-type]
    try:
        fn()
    finally:
        sys.settrace(None)
    return n


def _join(n: int) -> str:  # many tables, unqualified columns, no catalog to tell them apart
    tables = ", ".join(f"t{i}" for i in range(n))
    return f"SELECT {', '.join(f'c{i}' for i in range(n))} FROM {tables} WHERE c0 = 'x'"


def _derived(n: int) -> str:  # many derived tables of unknown columns, unqualified columns
    froms = ", ".join(f"(SELECT * FROM t{i}) s{i}" for i in range(n))
    return f"SELECT {', '.join(f'c{i}' for i in range(n))} FROM {froms} WHERE c0 = 'x'"


STATEMENTS: dict[str, Callable[[int], str]] = {
    "IN ids": lambda n: f"SELECT name FROM users WHERE id IN ({', '.join(map(str, range(n)))})",
    "IN e-mails": lambda n: (
        "SELECT name FROM users WHERE email IN ("
        + ", ".join(f"'u{i}@x.org'" for i in range(n))
        + ")"
    ),
    "row IN": lambda n: (
        "SELECT 1 FROM users WHERE (id, phone) IN ("
        + ", ".join(f"({i}, '+1 {i}')" for i in range(n))
        + ")"
    ),
    "VALUES": lambda n: (
        "INSERT INTO users (id, email) VALUES "
        + ", ".join(f"({i}, 'u{i}@x.org')" for i in range(n))
    ),
    "OR chain": lambda n: "SELECT 1 FROM users WHERE " + " OR ".join(f"id = {i}" for i in range(n)),
    "UNION ALL": lambda n: " UNION ALL ".join(f"SELECT {i}, 'x{i}'" for i in range(n)),
    "CASE": lambda n: (
        "SELECT CASE "
        + " ".join(f"WHEN phone = '{i}' THEN {i}" for i in range(n))
        + " END FROM users"
    ),
    "CTEs": lambda n: (
        "WITH " + ", ".join(f"c{i} AS (SELECT {i} AS v)" for i in range(n)) + " SELECT v FROM c0"
    ),
    "statements": lambda n: "; ".join(f"SELECT name FROM users WHERE id = {i}" for i in range(n)),
    "sum": lambda n: "SELECT " + " + ".join(f"{i}" for i in range(n)) + " FROM users",
    "joins": _join,
    "derived": _derived,
    "sqlcommenter": lambda n: (
        "SELECT 1 /*" + ",".join(f"k{i}='v{i}'" for i in range(n)) + ",user='ann'*/"
    ),
}


@pytest.mark.parametrize("name", list(STATEMENTS))
def test_analysis_work_grows_linearly_with_the_statement(name: str) -> None:
    make = STATEMENTS[name]
    small, large = make(200), make(400)
    analyzer().analyze(make(10))  # warm up: one-time work (imports, regex caches) not counted
    a = analyzer()
    miss = [calls(lambda sql=sql: a.analyze(sql)) for sql in (small, large)]
    hit = [calls(lambda sql=sql: a.analyze(sql)) for sql in (small, large)]
    skipped = [calls(lambda sql=sql: a.skipped(sql)) for sql in (small, large)]
    for work in (miss, hit, skipped):
        assert work[1] / work[0] < 2.4, (miss, hit, skipped)


def test_mask_text_work_grows_linearly() -> None:
    a = analyzer()
    a.mask_text('x "y"')

    def text(n: int) -> str:
        return " ".join(f'relation "r{i}"' for i in range(n)) + ' value: "' + "v" * n + '"'

    small, large = (calls(lambda n=n: a.mask_text(text(n))) for n in (400, 800))
    assert large / small < 2.4


def test_skipped_masks_everything_without_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_parsing(*_: object, **__: object) -> None:
        raise AssertionError("skipped() parsed")

    monkeypatch.setattr(shape_module.sqlglot, "parse", no_parsing)
    monkeypatch.setattr(shape_module.pg_parser, "fingerprint", no_parsing)
    sql = (
        "/*user='alice%40corp.com',route='/c/4711'*/ UPDATE orders SET note = 'Ann Smith',"
        " total = 12.5 WHERE id = $1 -- Ann again\n; SELECT $$x$$"
    )
    r = analyzer().skipped(sql, [b"4711", None])
    assert r.analysis == "skipped"
    assert (r.audit_class, r.command_tag_guess) == ("WRITE", "SELECT")
    assert r.tables == () and r.subjects == ()
    assert "user='alice%40corp.com'" in r.statement
    for secret in ("4711", "Ann", "Smith", "12.5", "again", "$$x$$"):
        assert secret not in r.statement, (secret, r.statement)
    assert r.params[0] != "4711" and r.params[1] is None
    assert r.statement.startswith("/*user=") and "UPDATE orders SET note = '" in r.statement


def test_skipped_fingerprint_groups_one_shape() -> None:
    a = analyzer()
    one = a.skipped("SELECT * FROM users WHERE id IN (1, 2, 3)")
    two = a.skipped("SELECT * FROM users WHERE id IN (4, 5, 6)")
    assert one.fingerprint == two.fingerprint and one.fingerprint


def test_skipped_keeps_the_masked_field_list_short() -> None:
    a = analyzer(subject_cap=10)
    r = a.skipped("SELECT 1 FROM users WHERE id IN (" + ", ".join(map(str, range(500))) + ")")
    assert len(r.masked_fields) == 11 and r.masked_fields[-1] == "… 491 more"  # 501 literals


def test_analyzer_is_safe_from_two_threads() -> None:
    """The event loop and a worker thread analyse at once, with caches small enough that
    every call evicts: nothing fails, and each answer is the one a fresh analyzer gives."""
    a = analyzer(cache_size=2)
    sqls = [f"SELECT name FROM users WHERE id = {i} AND email = 'u{i % 7}@x.org' -- {i % 5}"
            for i in range(60)]  # fmt: skip
    params = [f"SELECT name FROM users WHERE phone = $1 AND id > {i}" for i in range(60)]
    expected = {s: analyzer().analyze(s) for s in sqls}
    problems: list[str] = []
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible

    def work(offset: int) -> None:
        for round_ in range(40):
            for i in range(offset, len(sqls), 2):
                got = a.analyze(sqls[(i + round_) % len(sqls)])
                if got != expected[sqls[(i + round_) % len(sqls)]]:
                    problems.append(got.statement)
                r = a.analyze(params[i], [b"+1 555"])
                if r.analysis != "ok" or r.params == ("+1 555",):
                    problems.append(r.statement)

    try:
        threads = [threading.Thread(target=work, args=(k,)) for k in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert problems == []
    assert len(a._shapes) <= 2 and len(a._exact) <= 2
    assert subject_hash(KEY, "customer", "3") in expected[sqls[3]].subjects


def test_a_skipped_analysis_is_recorded_sealed_and_verified(tmp_path: Path) -> None:
    a = analyzer()
    r = a.skipped("SELECT name FROM users WHERE id IN (1, 2, 3) /* Ann */")
    event = AuditEvent(
        kind="statement",
        event_id="e1",
        ts_start=1,
        statement=r.statement,
        fingerprint=r.fingerprint,
        audit_class=r.audit_class,
        masked_fields=r.masked_fields,
        analysis=r.analysis,
    )
    sink = open_sink(tmp_path / "ledger", "os", key_dir=tmp_path / "keys")
    sink.append_sync([event])
    sink.close()  # seals the journal into a Parquet segment
    report = verify_ledger(tmp_path / "ledger", load_public_key(tmp_path / "keys" / "signing.pub"))
    assert report.intact and report.first_bad is None
    (row,) = read_events(tmp_path / "ledger")
    assert row["analysis"] == "skipped" and row["statement"] == r.statement


def test_large_statements_are_not_cached() -> None:
    """10,000 cached shapes of a 1 MB statement each would be 10 GB: above 64 KB, no caching."""
    a = analyzer()
    big = "INSERT INTO users (id) VALUES (" + "), (".join(map(str, range(40_000))) + ")"
    first = a.analyze(big)
    assert a.analyze(big) == first and len(a._shapes) == 0 and len(a._exact) == 0
    a.analyze("SELECT name FROM users WHERE id = $1", [b"1"])
    assert len(a._shapes) == 1 and len(a._exact) == 1
