"""PostgreSQL's lexical rules for what an audit needs: literals, comments, quoted names,
parameters and the semicolons that end statements, with their offsets.

It reads text the way the server's scanner (scan.l) does — standard_conforming_strings, E'' B''
X'' N'' U&'' strings, dollar quotes, nested /* */ comments — in one linear pass, and never
fails: what the server would reject (an unterminated string, a number run into a name) is
reported on the result, so the caller can refuse rather than guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from time import sleep
from typing import Final, Literal, NamedTuple

TokenKind = Literal["string", "number", "comment"]

# Characters that can start a token that matters; `re` skips to them in C. A string's prefix
# (E'' B'' X'' N'' U&'') is found from its quote, looking back.
# One character class (a `-` or `/` is a comment only when doubled or starred: checked after):
# `re` scans for a class far faster than for an alternation.
_START: Final = re.compile(r"""[-'";$./0-9]""")
_NAME_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_$")
# A long statement is read by a worker thread; every this many tokens (a power of two, less one)
# its loops give the GIL up so the event loop is never held for long.
YIELD_EVERY: Final = 2047
_PLAIN: Final = re.compile(r"[^']*(?:''[^']*)*'")  # xq: '' is a quote, \ is itself
_ESCAPED: Final = re.compile(r"(?:[^'\\]|\\.|'')*'", re.DOTALL)  # xe: \ escapes any character
_BITS: Final = re.compile(r"[^']*'")  # xb, xh: no escapes at all
# What _PLAIN and _BITS match from their first quote on: the run of non-quotes before it is
# skipped with str.find, which is many times faster than the regex over a long literal.
_AFTER_QUOTE: Final = {_PLAIN: re.compile(r"(?:''[^']*)*'"), _BITS: re.compile(r"'")}
_QUOTED_NAME: Final = re.compile(r'[^"]*(?:""[^"]*)*"')
# A run of quoted names with nothing between them that starts a token (ORMs quote every name).
_QUOTED_NAMES: Final = re.compile(
    r"""[^"]*(?:""[^"]*)*"(?:(?:[^"';$0-9\-/.]|\.(?![0-9])|-(?!-)|/(?!\*))*"[^"]*(?:""[^"]*)*")*"""
)
_NUMBER: Final = re.compile(r"(?:[0-9]+(?:\.(?!\.)[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_PARAM: Final = re.compile(r"\$[0-9]+")
_DOLLAR: Final = re.compile(r"\$(?:[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_\u0080-\U0010ffff]*)?\$")
_JUNK: Final = re.compile(r"[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_$\u0080-\U0010ffff]*")
_PREFIXED_QUOTE: Final = re.compile(r"[eEbBxXnN]'|[uU]&['\"]")
_LINE_END: Final = re.compile(r"[\n\r]")
_NESTING: Final = re.compile(r"/\*|\*/")
_ATOMIC: Final = re.compile(r"\bBEGIN\s+ATOMIC\b", re.IGNORECASE)
_WORD: Final = re.compile(r"[A-Za-z_]+")
_DIGITS: Final = "0123456789"
# Between the parts of one string: whitespace holding a newline, and -- comments (SQL's
# 'foo'
#   'bar' is one string 'foobar', read on in the same mode as its first part).
# Written so that no text can be matched two ways (backtracking stays linear).
_CONTINUE: Final = re.compile(r"[ \t\f]*(?:--[^\n\r]*)?[\n\r](?:[ \t\n\r\f]|--[^\n\r]*[\n\r])*'")
_BACKSLASH: Final = re.compile(r"\\(.)", re.DOTALL)


class Token(NamedTuple):
    kind: TokenKind
    start: int
    end: int  # exclusive
    text: str

    def value(self) -> str:
        """The literal's value as PostgreSQL would read it (quotes and doubled quotes removed)."""
        return self.text if self.kind == "comment" else literal_value(self.text)


def literal_value(t: str, standard_strings: bool = True) -> str:
    """A string, dollar-quoted or numeric literal's value from its text as it is in the SQL."""
    if not t:
        return t
    first = t[0]
    if first == "'":  # the common case, without the index() search below
        body = t[1:-1] if len(t) > 1 and t[-1] == "'" else t[1:]
        if not standard_strings and "\\" in body:
            body = _BACKSLASH.sub(r"\1", body)
        return body.replace("''", "'") if "''" in body else body
    if first.isdigit() or first == ".":
        return t.replace("_", "") if "_" in t else t
    if first == "$":
        tag = t[: t.index("$", 1) + 1]
        inner = t[len(tag) :]
        return inner[: -len(tag)] if inner.endswith(tag) else inner
    body = t[t.index("'") + 1 :]
    body = body[:-1] if body.endswith("'") else body
    if first in "eE" or (first in "nN" and not standard_strings):
        body = _BACKSLASH.sub(r"\1", body)
    return body.replace("''", "'")


class Lexed(NamedTuple):
    """One message's text as the server's scanner sees it. Offsets are flat (start, end) pairs.

    `statements` are the non-empty statements between top-level semicolons. `unterminated`
    names a string, name or comment left open at the end (the server rejects the whole text);
    `ambiguous` names a construct PostgreSQL versions read differently (refuse it); `atomic`
    says a `BEGIN ATOMIC` body may hold semicolons that do not end a statement.
    """

    sql: str
    key: str
    literals: list[int]
    comments: list[int]
    statements: list[int]
    unterminated: str | None = None
    ambiguous: str | None = None
    unicode_strings: bool = False
    atomic: bool = False
    # Read lightly (`lex(..., light=True)`): no literal offsets, the key cut short, only the
    # comments that could hold a claim; `watched` says `watch` matched outside every literal.
    light: bool = False
    watched: bool = False
    crowded: bool = False  # more comments that could hold a claim than a light read keeps


KEY_CAP: Final = 1 << 16  # of a light read's key
CLAIM_COMMENTS: Final = 64  # comments with an `=` a light read keeps


def _in_name(sql: str, pos: int, token_end: int) -> bool:
    """Does the character at `pos` continue a name (or number) rather than start a token?"""
    if pos == 0 or pos == token_end:
        return False
    prev = sql[pos - 1]
    return prev in _NAME_CHARS or prev >= "\x80"


def _prefix(sql: str, quote: int, token_end: int) -> int:
    """Where the string or name whose quote is at `quote` starts: at its E/B/X/N or U& prefix
    when it has one that begins a token, else at the quote."""
    before = quote - 1
    if before < 0:
        return quote
    c = sql[before]
    if c == "&":
        u = before - 1
        if u >= 0 and sql[u] in "uU" and not _in_name(sql, u, token_end):
            return u
        return quote
    if c in "eEbBxXnN" and sql[quote] == "'" and not _in_name(sql, before, token_end):
        return before
    return quote


def lex(
    sql: str,
    standard_strings: bool = True,
    *,
    light: bool = False,
    watch: re.Pattern[str] | None = None,
) -> Lexed:
    """Read `sql` once, left to right, as PostgreSQL's scanner would.

    `light` reads a statement too large to analyse in bounded memory: it keeps no literal
    offsets, a key of at most KEY_CAP characters, and only the comments that could make a
    claim; `watch` is searched for in the text outside literals and comments."""
    watched = crowded = False
    key_len = 0
    pieces: list[str] = []  # the key: literals as `?`, comments as a space
    literals: list[int] = []
    comments: list[int] = []
    ends: list[int] = []  # top-level semicolons
    unterminated = ambiguous = None
    unicode_strings = False
    plain = _PLAIN if standard_strings else _ESCAPED
    pos = 0  # the key is copied up to here
    token_end = -1  # where the last token this loop read ends: a new token may start there
    n = len(sql)
    search = _START.search
    m = search(sql)
    steps = 0
    while m is not None:
        steps += 1
        if not steps & YIELD_EVERY:
            sleep(0)  # compiled, this loop keeps the GIL: let the event loop run now and then
        start = m.start()
        c = sql[start]
        end = -1
        literal = True
        if c == ";":
            ends.append(start)
            token_end = start + 1
            m = search(sql, token_end)
            continue
        if c == "'" or c == '"':
            start = _prefix(sql, start, token_end)
            kind = sql[start].upper()
            quote = m.start()
            if c == '"':
                found = _QUOTED_NAMES.match(sql, quote + 1)
                if found is None:
                    unterminated = "quoted identifier"
                    end = n
                else:
                    token_end = found.end()
                    m = search(sql, token_end)
                    continue
            else:
                if kind == "U":
                    unicode_strings = True
                body = {"U": _PLAIN, "E": _ESCAPED, "B": _BITS, "X": _BITS}.get(kind, plain)
                end = _string_end(sql, quote + 1, body)
        elif c == "-" or c == "/":
            if sql[start + 1 : start + 2] != ("-" if c == "-" else "*"):
                m = search(sql, start + 1)  # an operator, not a comment
                continue
            literal = False
            if c == "-":
                found = _LINE_END.search(sql, start)
                end = found.start() if found else n
            else:
                end = _comment_end(sql, start)
                if end < 0:
                    unterminated = "/* comment"
                    end = n
        elif c == ".":
            after = sql[start + 1 : start + 2]
            if after == ".":  # `..` is a token of its own
                token_end = start + 2
                m = search(sql, token_end)
                continue
            if not after or after not in _DIGITS:
                m = search(sql, start + 1)
                continue
            end = _number_end(sql, start)
            if end < 0:
                ambiguous = ambiguous or f"number run into a quoted literal at {start}"
                end = -end
        elif _in_name(sql, start, token_end):  # a digit or `$` inside a name: `t1`, `a$b`
            m = search(sql, start + 1)
            continue
        elif c == "$":
            if sql[start + 1 : start + 2] in _DIGITS and start + 1 < n:
                token_end = _PARAM.match(sql, start).end()  # type: ignore[union-attr]
                junk = _JUNK.match(sql, token_end)
                if junk is not None:
                    if _PREFIXED_QUOTE.match(sql, token_end):
                        ambiguous = ambiguous or f"parameter run into a quoted literal at {start}"
                    token_end = junk.end()
                m = search(sql, token_end)
                continue
            delim = _DOLLAR.match(sql, start)
            if delim is None:  # a lone `$`: the next character starts a token of its own
                token_end = start + 1
                m = search(sql, token_end)
                continue
            close = sql.find(delim.group(), delim.end())
            end = close + len(delim.group()) if close >= 0 else -1
        else:  # a digit
            end = _number_end(sql, start)
            if end < 0:
                ambiguous = ambiguous or f"number run into a quoted literal at {start}"
                end = -end
        if end < 0:
            unterminated = "quoted string"
            end = n
        if light:
            if watch is not None and not watched:
                watched = watch.search(sql, pos, start) is not None
            if key_len < KEY_CAP:
                pieces += (sql[pos:start], "?" if literal else " ")
                key_len += start - pos + 1
            if not literal and sql.find("=", start, end) >= 0:
                if len(comments) < 2 * CLAIM_COMMENTS:
                    comments += (start, end)
                else:
                    crowded = True
        elif literal:
            pieces += (sql[pos:start], "?")
            literals += (start, end)
        else:
            pieces += (sql[pos:start], " ")
            comments += (start, end)
        pos = token_end = end
        if unterminated is not None:
            break
        m = search(sql, end)
    if unterminated is not None:
        ends.clear()  # the server reads none of it: no statement boundary can be trusted
    if light:
        if watch is not None and not watched:
            watched = watch.search(sql, pos) is not None
        pieces.append(sql[pos : pos + max(0, KEY_CAP - key_len)])
        key = "".join(pieces)
        statements = _statements(sql, key, [], [], ends) if ends else [0, len(sql)]
    elif pieces:
        pieces.append(sql[pos:])
        key = "".join(pieces)
    else:
        key = sql
    if light:
        pass
    elif not ends and not comments:  # the common case: one statement, no comment
        statements = [0, len(sql)] if sql and not sql.isspace() else []
    else:
        statements = _statements(sql, key, literals, comments, ends)
    atomic = len(statements) > 2 and _ATOMIC.search(key) is not None
    return Lexed(
        sql, key, literals, comments, statements, unterminated, ambiguous, unicode_strings,
        atomic, light, watched, crowded,
    )  # fmt: skip


def _number_end(sql: str, start: int) -> int:
    """End of the number at `start`, a name run into it included (PostgreSQL 15 rejects
    that); negative when that name is a string prefix (`1e'x'`, which versions read apart)."""
    end = _NUMBER.match(sql, start).end()  # type: ignore[union-attr]
    junk = _JUNK.match(sql, end)
    if junk is None:
        return end
    return -junk.end() if _PREFIXED_QUOTE.match(sql, end) else junk.end()


def _string_end(sql: str, pos: int, body: re.Pattern[str]) -> int:
    """End of the string whose body starts at `pos`, continuation parts included; -1 if open."""
    tail = _AFTER_QUOTE.get(body)
    while True:
        if tail is None:
            found = body.match(sql, pos)
        else:
            quote = sql.find("'", pos)
            found = None if quote < 0 else tail.match(sql, quote)
        if found is None:
            return -1
        more = _CONTINUE.match(sql, found.end())
        if more is None:
            return found.end()
        pos = more.end()


def _comment_end(sql: str, start: int) -> int:
    """End of the /* comment at `start` (comments nest), or -1 if it never closes."""
    depth = 0
    pos = start
    for m in _NESTING.finditer(sql, start):
        if m.start() < pos:
            continue  # `/*/`: the slash that closed a `/*` cannot also open a `*/`
        if m.group() == "/*":
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return m.end()
        pos = m.end()
    return -1


def _statements(
    sql: str, key: str, literals: list[int], comments: list[int], ends: list[int]
) -> list[int]:
    """(start, end) of each statement that holds a token, semicolons excluded: one walk over
    the semicolons and comments together."""
    out: list[int] = []
    begin = 0
    c = 0  # next comment to consider
    n_comments = len(comments)
    for stop in [*ends, len(sql)]:
        pos = begin
        found = False
        while c < n_comments and comments[c] < stop:
            cs, ce = comments[c], comments[c + 1]
            if cs > pos and not sql[pos:cs].isspace():
                found = True
            pos = max(pos, ce)
            c += 2
        if not found and pos < stop and not sql[pos:stop].isspace():
            found = True
        if found:
            out += (begin, stop)
        begin = stop + 1
    return out


def split(sql: str, standard_strings: bool = True) -> tuple[str, list[int], list[int]]:
    """The cache key, and the literals' and comments' (start, end) offsets, flattened: the
    whole scan on a cache hit, so it builds no Token objects."""
    lexed = lex(sql, standard_strings)
    return lexed.key, lexed.literals, lexed.comments


@dataclass(frozen=True, slots=True)
class Scan:
    """`key` is the SQL with literals replaced by `?` and comments removed: the cache key."""

    sql: str
    key: str
    literals: tuple[Token, ...]
    comments: tuple[Token, ...]

    def leading_words(self, n: int = 4) -> tuple[str, ...]:
        return tuple(w.upper() for w in _WORD.findall(self.key, 0, 300)[:n])


def scan(sql: str, standard_strings: bool = True) -> Scan:
    lexed = lex(sql, standard_strings)
    lits = (
        Token("number" if sql[s] in "0123456789." else "string", s, e, sql[s:e])
        for s, e in zip(lexed.literals[::2], lexed.literals[1::2], strict=True)
    )
    notes = (
        Token("comment", s, e, sql[s:e])
        for s, e in zip(lexed.comments[::2], lexed.comments[1::2], strict=True)
    )
    return Scan(sql, lexed.key, tuple(lits), tuple(notes))
