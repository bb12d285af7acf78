"""A tokenizer-level scan of SQL text: literals, parameters and comments with their offsets.

It never fails, so it is both the cache key on the fast path and the fallback when parsing fails.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal, NamedTuple

TokenKind = Literal["string", "number", "comment"]

# Runs of quoted identifiers are one match (ORMs quote every name). The pattern opens with one
# character class so that `re` skips in C to the few characters that can start a token; the
# lookbehinds then say which token it is. Loops are unrolled (`[^']*(?:''[^']*)*`), which `re`
# runs far faster than an alternation per character. String prefixes (E'', X'', U&'') are sorted
# out in Python afterwards; digits inside names and parameters (t1, $1, x.5) match nothing.
_TOKEN: Final = re.compile(
    r"""
    ["'\-/$\d](?:
      (?<=")[^"]*(?:""[^"]*)*"(?:[^"'$\-/\d]*"[^"]*(?:""[^"]*)*")*
    | (?<=')[^']*(?:''[^']*)*(?:'|\Z)
    | (?<=-)-[^\n]*
    | (?<=/)\*.*?(?:\*/|\Z)
    | (?<=\$)(?P<tag>(?:[^\W\d]\w*)?)\$.*?(?:\$(?P=tag)\$|\Z)
    | (?<![\w$.]\d)(?<=\d)[\d_]*\.?\d*(?:[eE][+-]?\d+)?
    )
    """,
    re.VERBOSE | re.DOTALL,
)
_ESTRING: Final = re.compile(r"'(?:[^'\\]|\\.|'')*(?:'|\Z)", re.DOTALL)
_WORD: Final = re.compile(r"[A-Za-z_]+")
_BACKSLASH: Final = re.compile(r"\\(.)", re.DOTALL)
_PREFIXES: Final = frozenset("bBxXnNeE")


class Token(NamedTuple):
    kind: TokenKind
    start: int
    end: int  # exclusive
    text: str

    def value(self) -> str:
        """The literal's value as PostgreSQL would read it (quotes and doubled quotes removed)."""
        return self.text if self.kind == "comment" else literal_value(self.text)


def literal_value(t: str) -> str:
    """A string, dollar-quoted or numeric literal's value from its text as it is in the SQL."""
    if not t:
        return t
    first = t[0]
    if first == "'":  # the common case, without the index() search below
        body = t[1:-1] if len(t) > 1 and t[-1] == "'" else t[1:]
        return body.replace("''", "'") if "''" in body else body
    if first.isdigit():
        return t.replace("_", "") if "_" in t else t
    if first == "$":
        tag = t[: t.index("$", 1) + 1]
        inner = t[len(tag) :]
        return inner[: -len(tag)] if inner.endswith(tag) else inner
    body = t[t.index("'") + 1 :]
    body = body[:-1] if body.endswith("'") else body
    if first in "eE":
        body = _BACKSLASH.sub(r"\1", body)
    return body.replace("''", "'")


@dataclass(frozen=True, slots=True)
class Scan:
    """`key` is the SQL with literals replaced by `?` and comments removed: the cache key."""

    sql: str
    key: str
    literals: tuple[Token, ...]
    comments: tuple[Token, ...]

    def leading_words(self, n: int = 4) -> tuple[str, ...]:
        return tuple(w.upper() for w in _WORD.findall(self.key, 0, 300)[:n])


def _is_word_char(c: str) -> bool:
    return c.isalnum() or c in "_$"


def _literal_start(sql: str, start: int) -> int:
    """Move a string's start back over an E/B/X/N or U& prefix, if it has one."""
    if sql[start - 1 : start] in _PREFIXES and not _word_before(sql, start - 1):
        return start - 1
    if sql[max(start - 2, 0) : start] in ("U&", "u&") and not _word_before(sql, start - 2):
        return start - 2
    return start


def _word_before(sql: str, pos: int) -> bool:
    return pos > 0 and _is_word_char(sql[pos - 1])


def split(sql: str) -> tuple[str, list[int], list[int]]:
    """The cache key, and the literals' and comments' (start, end) offsets, flattened: the
    whole scan on a cache hit, so it builds no Token objects."""
    pieces: list[str] = []
    literals: list[int] = []
    comments: list[int] = []
    pos = 0
    search = _TOKEN.search
    m = search(sql)
    while m is not None:
        start, end = m.span()
        first = sql[start]
        if first == '"':
            m = search(sql, end)
            continue
        if first in "-/":
            pieces += (sql[pos:start], " ")
            comments += (start, end)
        else:
            if not first.isdigit():
                start = _literal_start(sql, start)
                if sql[start] in "eE":
                    e = _ESTRING.match(sql, start + 1)
                    end = e.end() if e else end
            pieces += (sql[pos:start], "?")
            literals += (start, end)
        pos = end
        m = search(sql, end)
    if not pieces:
        return sql, literals, comments
    pieces.append(sql[pos:])
    return "".join(pieces), literals, comments


def scan(sql: str) -> Scan:
    key, literals, comments = split(sql)
    lits = (
        Token("number" if sql[s].isdigit() else "string", s, e, sql[s:e])
        for s, e in zip(literals[::2], literals[1::2], strict=True)
    )
    notes = (
        Token("comment", s, e, sql[s:e]) for s, e in zip(comments[::2], comments[1::2], strict=True)
    )
    return Scan(sql, key, tuple(lits), tuple(notes))
