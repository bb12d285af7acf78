"""The statement corpus: each statement's class, tag, tables and columns as reviewed by hand.

Each tests/corpus/*.sql file holds blocks separated by blank lines: `-- key: value` header lines,
then the statement. Keys: `class` (pgAudit class, then the command tag), `tables`, `columns`
(space-separated; `public.` may be left out, and `table.*` means every catalog column of it),
optionally `masked` (the literals, as written, that must be masked under MASKING's policy;
every other literal of the entry must be kept) and `known_gap` (why the analyzer falls short:
the entry is an expected failure). Tables and columns are compared as sets: their order
carries no meaning.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from scalple.analysis import Analyzer, Catalog, Policy
from scalple.analysis.lexer import split

CORPUS = Path(__file__).parent / "corpus"
SCHEMA = json.loads((CORPUS / "schema.json").read_text())
CATALOG = Catalog.from_tables(SCHEMA["tables"], SCHEMA["views"])
ANALYZER = Analyzer(Policy.build(), b"k" * 32, CATALOG)
MASKING = Analyzer(
    Policy.build(
        ["users.email", "users.phone", "users.data", "accounts.iban"],
        {"users.id": "customer"},
        mask_subject_ids=False,
    ),
    b"k" * 32,
    CATALOG,
)
KEYS = {"class", "tables", "columns", "masked", "known_gap"}


@dataclass(frozen=True)
class Entry:
    where: str
    sql: str
    audit_class: str
    tag: str
    tables: frozenset[str]
    columns: frozenset[str]
    masked: tuple[str, ...] | None
    known_gap: str | None


def _qualified(name: str, parts: int) -> str:
    return name if name.count(".") == parts - 1 else f"public.{name}"


def _columns(words: list[str]) -> frozenset[str]:
    out: set[str] = set()
    for word in words:
        q = _qualified(word, 3)
        table, _, column = q.rpartition(".")
        out |= {f"{table}.{c}" for c in SCHEMA["tables"][table]} if column == "*" else {q}
    return frozenset(out)


def _entry(where: str, block: str) -> Entry:
    head: dict[str, str] = {}
    lines = block.splitlines()
    while lines and lines[0].startswith("-- ") and ":" in lines[0]:
        key, _, value = lines.pop(0)[3:].partition(":")
        assert key in KEYS, f"{where}: unknown key {key!r}"
        head[key] = value.strip()
    audit_class, _, tag = head["class"].partition(" ")
    return Entry(
        where,
        "\n".join(lines),
        audit_class,
        tag,
        frozenset(_qualified(t, 2) for t in head.get("tables", "").split()),
        _columns(head.get("columns", "").split()),
        _literals(head["masked"]) if "masked" in head else None,
        head.get("known_gap"),
    )


def _literals(sql: str) -> tuple[str, ...]:
    _, offsets, _ = split(sql)
    return tuple(sql[s:e] for s, e in zip(offsets[::2], offsets[1::2], strict=True))


def _load() -> list[Entry]:
    entries = []
    for path in sorted(CORPUS.glob("*.sql")):
        block: list[str] = []
        start = 0
        for number, line in enumerate([*path.read_text().splitlines(), ""], 1):
            if line.strip():
                start = start if block else number
                block.append(line)
            elif block:
                entries.append(_entry(f"{path.name}:{start}", "\n".join(block)))
                block = []
    return entries


ENTRIES = _load()


def _param(e: Entry) -> object:
    marks = [pytest.mark.xfail(reason=e.known_gap, strict=True)] if e.known_gap else []
    return pytest.param(e, id=e.where, marks=marks)


def test_corpus_is_large_and_mostly_handled() -> None:
    assert len(ENTRIES) >= 200
    assert sum(e.known_gap is not None for e in ENTRIES) < len(ENTRIES) / 10
    assert len({e.sql for e in ENTRIES}) == len(ENTRIES), "a statement is in the corpus twice"


@pytest.mark.parametrize("e", [_param(e) for e in ENTRIES])
def test_corpus(e: Entry) -> None:
    r = ANALYZER.analyze(e.sql)
    assert r.analysis == "ok"
    got = (r.audit_class, r.command_tag_guess, set(r.tables), set(r.columns))
    assert got == (e.audit_class, e.tag, set(e.tables), set(e.columns))


@pytest.mark.parametrize("e", [_param(e) for e in ENTRIES if e.masked is not None])
def test_corpus_masking(e: Entry) -> None:
    """Exactly the listed literals are masked: the rest were proven to meet no PII column."""
    r = MASKING.analyze(e.sql)
    before, after = _literals(e.sql), _literals(r.statement)
    assert len(before) == len(after), r.statement
    masked = sorted(b for b, a in zip(before, after, strict=True) if a != b)
    assert masked == sorted(e.masked or ()), r.statement
