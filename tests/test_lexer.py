"""The lexer against PostgreSQL's own scanner (pglast's libpg_query), and the cases where
reading text differently from the server would let a statement run unseen."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from pglast import parser as pg

from scalple.analysis.lexer import lex, literal_value

_LITERALS = {"SCONST", "USCONST", "BCONST", "XCONST", "ICONST", "FCONST"}
_PIECES = [
    "'", '"', "$", "$$", "$a$", "--", "/*", "*/", ";", "\n", " ", "e'", "E'", "x'", "b'", "n'",
    "U&'", 'U&"', "\\", "''", "1", "2.5", ".5", "a", "t1", "SELECT ", "é", "ü'", "-", "/",
    "*", "$1", "1e5", ".",
]  # fmt: skip


def _texts(sql: str, flat: list[int]) -> list[str]:
    return [sql[a:b] for a, b in zip(flat[::2], flat[1::2], strict=True)]


def _server_view(sql: str) -> tuple[set[int], list[tuple[int, int]], list[int]] | None:
    """Characters inside literals (prefix letters aside), comment spans and semicolons, as
    PostgreSQL's scanner reads `sql` (pglast gives character offsets, end inclusive); None
    when it rejects the text."""
    try:
        tokens = pg.scan(sql)
    except pg.ParseError:
        return None
    inside: set[int] = set()
    comments, semicolons = [], []
    for t in tokens:
        start, end = t.start, t.end + 1
        if t.name in _LITERALS:
            inside.update(range(start, end))
        elif t.name in ("C_COMMENT", "SQL_COMMENT"):
            comments.append((start, end))
        elif t.name == "ASCII_59":
            semicolons.append(start)
    return _without_prefixes(sql, inside), comments, semicolons


def _without_prefixes(sql: str, inside: set[int]) -> set[int]:
    """The scanner counts N of N'' out of the literal and E, B, X in: compare without them."""
    return {
        i
        for i in inside
        if not (sql[i] in "eEbBxXnN" and sql[i + 1 : i + 2] == "'")
        and not (sql[i] in "uU&" and "&" in sql[i : i + 2])
    }


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), min_size=1, max_size=25).map("".join))
def test_tokens_match_postgresql_scanner(sql: str) -> None:
    server = _server_view(sql)
    ours = lex(sql)
    if server is None or ours.ambiguous:
        return  # the server rejects it, or we refuse it
    assert ours.unterminated is None, f"we read {sql!r} as unterminated; the server does not"
    literals, comments, semicolons = server
    covered = {
        i for a, b in zip(ours.literals[::2], ours.literals[1::2], strict=True) for i in range(a, b)
    }
    assert _without_prefixes(sql, covered) == literals
    assert list(zip(ours.comments[::2], ours.comments[1::2], strict=True)) == comments
    statement_ends = [e for e in ours.statements[1::2] if e < len(sql)]
    assert set(statement_ends) <= set(semicolons)


def test_a_continued_e_string_keeps_its_escapes() -> None:
    # 'a' <newline> '...' continues the E string, where \' is a quote: the DELETE is text.
    sql = "SELECT E'a'\n'\\'; DELETE FROM t; --'"
    assert _texts(sql, lex(sql).statements) == [sql]
    # ... and here the E string ends at \'' (escaped quote, then the close): the DELETE runs.
    sql = "SELECT E'a'\n'\\'' ; DELETE FROM t; --'"
    parts = lex(sql).statements
    assert sql[parts[2] : parts[3]].strip() == "DELETE FROM t"


def test_standard_conforming_strings_off_reads_backslash_escapes() -> None:
    sql = "SELECT 'a\\'; UPDATE t SET x = 1; --'"
    on, off = lex(sql), lex(sql, standard_strings=False)
    assert len(on.statements) == 4  # 'a\' ends the string: two statements and a comment
    assert len(off.statements) == 2 and off.literals == [7, len(sql)]
    assert literal_value("'a\\'b'", standard_strings=False) == "a'b"


def test_comment_like_text_inside_literals_and_names_is_no_comment() -> None:
    for sql in (
        "SELECT $q$ /*user='mallory'*/ $q$",
        "SELECT $$;--$$, 1",
        "SELECT 1 AS \"/*user='mallory'*/\"",
        "SELECT E'\\' /*user=''mallory''*/'",
    ):
        lexed = lex(sql)
        assert lexed.comments == [], sql
        assert len(lexed.statements) == 2, sql


def test_nested_comments_end_where_the_server_ends_them() -> None:
    sql = "SELECT 1 /* a /* b */ ; still comment */ ; SELECT 2"
    lexed = lex(sql)
    assert _texts(sql, lexed.comments) == ["/* a /* b */ ; still comment */"]
    assert len(lexed.statements) == 4


def test_open_text_is_reported_and_masked_whole() -> None:
    for sql, what in (
        ("SELECT 'alice@example.com", "quoted string"),
        ('SELECT "x', "quoted identifier"),
        ("SELECT 1 /* /* */", "/* comment"),
        ("SELECT $a$ x $b$", "quoted string"),
    ):
        lexed = lex(sql)
        assert lexed.unterminated == what
        assert len(lexed.statements) == 2  # never split: the server reads none of it
        assert lexed.literals[-1] == len(sql) or lexed.comments[-1] == len(sql)


def test_numbers_run_into_a_prefix_are_ambiguous() -> None:
    assert lex("SELECT 1e'x'").ambiguous is not None  # PostgreSQL 14: 1 then E'x'; 15: error
    assert lex("SELECT $1x'00'").ambiguous is not None
    assert lex("SELECT 1e5, t1, x1e'y'").ambiguous is None


def test_begin_atomic_is_flagged_only_with_more_than_one_statement() -> None:
    body = "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END"
    assert lex(body).atomic
    assert not lex("SELECT 'BEGIN ATOMIC'; SELECT 1").atomic


def test_lexing_is_linear_in_size() -> None:
    # Work, not time: the number of tokens read grows with the input, and nothing rescans.
    for piece in ("/*", "$ ", ".1", "'", '"a" ', "e'x'"):
        small, big = lex(piece * 1000), lex(piece * 10000)
        assert len(big.literals) <= 10 * len(small.literals) + 2


def test_string_continuation_has_no_catastrophic_backtracking() -> None:
    # Each `--` could end one comment and start the next: a pattern that allowed both readings
    # took 2**n steps here (n = 15 took 0.6 s); this returns at once for n = 60.
    lexed = lex("SELECT 'a'" + " --" * 60 + "\nX")
    assert lexed.literals == [7, 10]


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="'ab\n -", max_size=30), st.sampled_from(["", "B", "X", "U&"]))
def test_a_string_ends_where_the_whole_regex_says(body: str, prefix: str) -> None:
    """The end of a plain or bit string is found by skipping to its first quote with str.find;
    that must end every string where matching the string's whole pattern would."""
    from scalple.analysis import lexer

    pattern = lexer._BITS if prefix in ("B", "X") else lexer._PLAIN

    def by_regex(sql: str, pos: int) -> int:
        while True:
            found = pattern.match(sql, pos)
            if found is None:
                return -1
            more = lexer._CONTINUE.match(sql, found.end())
            if more is None:
                return found.end()
            pos = more.end()

    sql = f"SELECT {prefix}'{body}"
    start = sql.index("'") + 1
    assert lexer._string_end(sql, start, pattern) == by_regex(sql, start)
