"""The oracle's SQL lexer reads text as PostgreSQL does: checked against PostgreSQL's own scanner
(libpg_query, via pglast) where that scanner applies, and by hand with
standard_conforming_strings off, which libpg_query cannot be told."""

from __future__ import annotations

import pytest
from pglast import parser

from tests.oracle import sqltext
from tests.oracle.gen import scenario

STRINGS = {"SCONST", "USCONST", "BCONST", "XCONST"}
COMMENTS = {"C_COMMENT", "SQL_COMMENT"}


def _spans(sql: str) -> tuple[set[tuple[int, int]], set[tuple[int, int]]]:
    """(string spans, comment spans) by PostgreSQL's scanner (pglast gives character offsets,
    the end inclusive)."""
    strings, comments = set(), set()
    for t in parser.scan(sql):
        span = (t.start, t.end + 1)
        if t.name in STRINGS:
            strings.add(span)
        elif t.name in COMMENTS:
            comments.add(span)
    return strings, comments


def _generated(seed: int, count: int) -> list[str]:
    """Every statement text the generator writes for clients whose strings are standard."""
    texts = []
    for i in range(count):
        scn = scenario(seed, i)
        standard = {c: client.scs is not False for c, client in enumerate(scn.clients)}
        for step in scn.steps:
            for op in step.ops:
                sql = op.sql()
                if sql and sql.startswith("SET standard_conforming_strings"):
                    standard[step.client] = sql.endswith("on")
                elif sql and standard[step.client]:
                    texts.append(sql)
    return texts


def test_tokens_agree_with_postgresql_scanner_on_generated_statements() -> None:
    texts = _generated(seed=7, count=60)
    assert len(texts) > 300
    for sql in texts:
        toks = sqltext.tokens(sql, scs=True)
        strings = {(t.start, t.end) for t in toks if t.kind == "string"}
        comments = {(t.start, t.end) for t in toks if t.kind == "comment"}
        assert (strings, comments) == _spans(sql), sql


@pytest.mark.parametrize(
    ("sql", "scs", "strings"),
    [
        (r"SELECT 'a\'b'", False, [r"'a\'b'"]),
        (r"SELECT 'a\\' AS x", False, [r"'a\\'"]),
        (r"SELECT 'a\' AS x, 'b'", True, [r"'a\'", "'b'"]),
        (r"SELECT E'a\'b', 'c''d'", True, [r"E'a\'b'", "'c''d'"]),
        (r"SELECT N'a\'b'", False, [r"N'a\'b'"]),
        ("SELECT $q$ it's $$ $q$, $$x$$", True, ["$q$ it's $$ $q$", "$$x$$"]),
        ("SELECT xE'a'", True, ["'a'"]),
        ("SELECT U&'d\\0061t'", True, ["U&'d\\0061t'"]),
    ],
)
def test_strings_follow_standard_conforming_strings(
    sql: str, scs: bool, strings: list[str]
) -> None:
    assert [t.text for t in sqltext.tokens(sql, scs) if t.kind == "string"] == strings


def test_split_separates_statements_only_outside_strings_names_and_comments() -> None:
    sql = "SELECT 'a;b'; SELECT \"x;y\" FROM t /* ; */; SELECT $q$;$q$ -- ;\n;; SELECT E'\\';'"
    assert sqltext.split(sql) == [
        "SELECT 'a;b'",
        'SELECT "x;y" FROM t /* ; */',
        "SELECT $q$;$q$ -- ;",
        "SELECT E'\\';'",
    ]
    # With standard_conforming_strings off, \' does not end the string.
    assert sqltext.split(r"SELECT 'a\'; b'; SELECT 2", scs=False) == [
        r"SELECT 'a\'; b'",
        "SELECT 2",
    ]
    with pytest.raises(sqltext.LexError):
        sqltext.split(r"SELECT 'a\'; b'; SELECT 2", scs=True)


def test_comment_claims_only_from_real_comments_at_either_end() -> None:
    claim = "/*user='bob%40corp.example'*/"
    assert sqltext.comment_claim(f"{claim} SELECT 1") == "bob@corp.example"
    assert sqltext.comment_claim(f"SELECT 1 {claim};") == "bob@corp.example"
    assert sqltext.comment_claim(f"SELECT 1 {claim} FROM t") is None
    assert sqltext.comment_claim(f"SELECT $q${claim}$q$") is None
    assert sqltext.comment_claim(f'SELECT 1 AS "{claim}"') is None
    # The same bytes: a string with standard_conforming_strings off, a comment with it on.
    tail = r"SELECT 'x\' /*user=''bob''*/'"
    assert sqltext.comment_claim(tail, scs=False) is None
    with pytest.raises(sqltext.LexError):
        sqltext.comment_claim(tail, scs=True)


def test_normalize_ignores_what_masking_changes_and_keeps_markers() -> None:
    sent = "SELECT id FROM customers WHERE email = E'ann@x.io' AND (SELECT oracle_mark('k3'))"
    masked = "SELECT id  FROM Customers WHERE email = 'a***@***.io' AND (SELECT oracle_mark('k3'));"
    assert sqltext.normalize(sent) == sqltext.normalize(masked)
    assert sqltext.normalize(sent) != sqltext.normalize(sent.replace("'k3'", "'k4'"))
    assert sqltext.command("WITH v AS (SELECT 1) UPDATE t SET a = 1") == "UPDATE"
    assert sqltext.command("/* x */ ROLLBACK TO sp1") == "ROLLBACK"
    assert sqltext.command("DECLARE c CURSOR FOR SELECT 1") == "DECLARE CURSOR"
