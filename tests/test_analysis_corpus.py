"""The statement corpus: each statement's class, tag, tables and columns as reviewed by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scalple.analysis import Analyzer, Catalog, Policy

CORPUS = Path(__file__).parent / "corpus"
DATA: dict[str, Any] = json.loads((CORPUS / "expected.json").read_text())
LINES = (CORPUS / "statements.sql").read_text().splitlines()[1:]
ANALYZER = Analyzer(Policy.build(), b"k" * 32, Catalog.from_tables(DATA["schema"]))


@pytest.mark.parametrize(("sql", "expected"), list(zip(LINES, DATA["expected"], strict=True)))
def test_corpus(sql: str, expected: dict[str, Any]) -> None:
    r = ANALYZER.analyze(sql)
    assert r.analysis == "ok"
    got = {"class": r.audit_class, "tag": r.command_tag_guess}
    got |= {"tables": list(r.tables), "columns": list(r.columns)}
    assert got == expected
