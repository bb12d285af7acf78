"""`scalple dsar` as a person reads it: in terminals 80 and 200 columns wide, and through a pipe."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from tests.test_dsar import Ledger, touch_everywhere

LONG_SQL = (
    "SELECT c.id, c.name, c.email, o.total FROM customers c JOIN orders o ON o.customer_id = "
    "c.id WHERE c.id = $1 AND o.placed_at > now() - interval '***' ORDER BY o.placed_at DESC"
)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def answered(tmp_path: Path) -> Iterator[tuple[Ledger, list[str]]]:
    """A ledger where customer 42 was touched six times, once by a statement of 160 characters."""
    led = Ledger(tmp_path)
    led.open()
    try:
        ids = list(touch_everywhere(led, 42).values())
        long = led.statement(where=(led.customer(42),), sql=LONG_SQL)
        led.write(long, led.outcome(long))
        ids.append(long.event_id)
    finally:
        assert led.sink is not None
        led.sink.close()
        led.sink = None
    yield led, ids


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    return {**env, "NO_COLOR": "1", "TERM": "xterm"}


def _dsar_args(led: Ledger) -> list[str]:
    return ["-m", "scalple", "dsar", "-c", str(led.config), "-s", "customers.id=42"]


def in_terminal(led: Ledger, columns: int) -> list[str]:
    child = pexpect.spawn(
        sys.executable, _dsar_args(led), env=_env(), encoding="utf-8", timeout=60,
        dimensions=(50, columns),
    )  # fmt: skip
    out = child.read()
    child.close()
    assert child.exitstatus == 0, out
    return [ANSI.sub("", line).rstrip() for line in out.splitlines()]


def _whole(lines: list[str], *words: str) -> None:
    text = " ".join(" ".join(lines).replace("│", " ").split())
    for word in words:
        assert f" {word} " in f" {text} ", word


def test_80_columns_gives_one_block_per_access(answered: tuple[Ledger, list[str]]) -> None:
    led, ids = answered
    lines = in_terminal(led, 80)
    assert all(len(line) <= 80 for line in lines), lines
    assert not any("┃" in line or "│" in line for line in lines)  # no squeezed table
    assert sum(line.startswith("── ") and " of 6 ──" in line for line in lines) == 6
    assert lines.count("statement:") == 6
    tables = [line for line in lines if line.startswith("tables / columns:")]
    assert len(tables) == 6
    _whole(lines, "public.customers.email", *ids)  # no word in letters, ids whole
    at = lines.index("statement:", next(i for i, x in enumerate(lines) if ids[-1] in x))
    wrapped = []
    for line in lines[at + 1 :]:
        if not line.startswith("  "):
            break
        wrapped.append(line.strip())
    assert len(wrapped) > 1 and " ".join(wrapped) == LONG_SQL  # wrapped at words, all there


def test_200_columns_gives_a_table(answered: tuple[Ledger, list[str]]) -> None:
    led, ids = answered
    lines = in_terminal(led, 200)
    assert all(len(line) <= 200 for line in lines), lines
    header = next(line for line in lines if line.startswith("┃ when"))
    assert "statement" in header and "event id" in header
    assert sum(1 for line in lines if line.startswith("│ 20")) == 6  # one row per access
    _whole(lines, "public.customers.email", *(i for i in ids))


def test_a_pipe_gets_blocks_with_nothing_wrapped(
    answered: tuple[Ledger, list[str]], tmp_path: Path
) -> None:
    led, ids = answered
    proc = subprocess.run(
        [sys.executable, *_dsar_args(led)], capture_output=True, text=True, env=_env(), timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "  " + LONG_SQL in lines  # the whole statement on one line
    assert lines.count("statement:") == 6
    head = lines[1:4]  # ledger, verification (over 100 characters) and index, one line each
    assert [line.split(":")[0] for line in head] == ["ledger", "verification", "index"], lines
    assert len(head[1]) > 100
    out = tmp_path / "answer.txt"
    written = subprocess.run(
        [sys.executable, *_dsar_args(led), "-o", str(out)], env=_env(), timeout=60
    )
    after_head = proc.stdout[proc.stdout.index("── 1 of 6") :]  # the head says what was cached
    assert written.returncode == 0 and out.read_text().endswith(after_head)
    narrow = subprocess.run(
        [sys.executable, *_dsar_args(led)], capture_output=True, text=True,
        env={**_env(), "COLUMNS": "60"}, timeout=60,
    )  # fmt: skip
    assert all(len(line) <= 60 for line in narrow.stdout.splitlines())
    _whole(narrow.stdout.splitlines(), *ids)
