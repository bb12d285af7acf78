"""Rows read well at any width: a table when it fits, blocks when not, never a word in letters."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from scalple.tabular import PIPE_TABLE_WIDTH, UNBOUNDED, Column, Fields, Rows, report_console

COLUMNS = ["when", "who", "tables", Column("statement", long=True)]
ROW = [
    "2025-01-01 06:00:00.000Z",
    "bob@corp.example [proxy_auth]",
    "public.customers.email, public.orders.customer_id",
    "SELECT id, name, email FROM customers WHERE id = $1 AND region = '***' ORDER BY name",
]


def render(renderable: object, width: int) -> list[str]:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(renderable)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    return [line.rstrip() for line in out.splitlines()]


def test_a_table_when_it_fits_blocks_when_not() -> None:
    wide = render(Rows(COLUMNS, [ROW, ROW]), 200)
    assert any(line.startswith("┃ when") for line in wide)
    assert sum(ROW[3] in line for line in wide) == 2  # each statement whole on one line
    narrow = render(Rows(COLUMNS, [ROW, ROW]), 80)
    assert "┃" not in "".join(narrow)
    assert narrow.count("── 1 of 2 ──") == 1 and "statement:" in narrow
    assert "tables: public.customers.email, public.orders.customer_id" in narrow
    assert all(len(line) <= 80 for line in narrow)


def test_blocks_wrap_long_values_at_words_under_themselves() -> None:
    lines = render(Rows(COLUMNS, [ROW]), 50)
    at = lines.index("statement:")
    body = lines[at + 1 :]
    assert all(line.startswith("  ") and len(line) <= 50 for line in body)
    assert " ".join(x.strip() for x in body) == ROW[3]
    tables = next(i for i, line in enumerate(lines) if line.startswith("tables:"))
    assert lines[tables + 1] == " " * len("tables: ") + "public.orders.customer_id"


def test_very_narrow_puts_values_under_their_labels() -> None:
    lines = render(Fields([("verification", "intact: 5 checkpoints signed and chained")]), 28)
    assert lines[0] == "verification:" and lines[1].startswith("  intact:")


def test_a_pipe_keeps_narrow_tables_and_never_wraps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    console = report_console(io.StringIO())
    assert console.width == UNBOUNDED
    small = Rows(["day", "statements"], [["2025-01-01", "2"]])
    assert small.fit(UNBOUNDED) is not None  # a small table stays a table
    console.print(small, Rows(COLUMNS, [ROW]), Fields([("ledger", "x " * 200)]))
    out = console.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert any("┃ day" in line for line in out)
    assert ROW[3] in out[out.index("statement:") + 1]
    assert "ledger: " + ("x " * 200).strip() in out
    monkeypatch.setenv("COLUMNS", "90")
    assert report_console(io.StringIO()).width == 90


def test_wide_rows_in_a_pipe_become_blocks() -> None:
    wide = Rows(["a", "b"], [["x" * PIPE_TABLE_WIDTH, "y"]])
    assert wide.fit(UNBOUNDED) is None


WORD = st.text(alphabet="abcdefghijklmnop.@_-0123456789", min_size=1, max_size=14)
CELL = st.lists(WORD, min_size=0, max_size=12).map(" ".join)


@settings(max_examples=150, deadline=None)
@given(
    rows=st.integers(1, 4).flatmap(lambda n: st.lists(st.lists(CELL, min_size=n, max_size=n))),
    width=st.integers(40, 220),
)
def test_no_word_is_ever_split(rows: list[list[str]], width: int) -> None:
    if not rows:
        return
    columns = [Column(f"col{i}", long=i == len(rows[0]) - 1) for i in range(len(rows[0]))]
    lines = render(Rows(columns, rows), width)
    assert all(len(line) <= width for line in lines)
    words = {w for line in lines for w in line.replace("│", " ").split()}
    for row in rows:
        for cell in row:
            assert set(cell.split()) <= words, (cell, lines)
