"""A tokenizer-level scan of SQL text: literals, parameters and comments with their offsets.

It never fails, so it is both the cache key on the fast path and the fallback when parsing fails.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal, NamedTuple

TokenKind = Literal["string", "number", "comment"]

# Runs of quoted identifiers are one match (ORMs quote every name). Every alternative starts
# with one of a few characters, so `re` can skip ahead in C; string prefixes (E'', X'', U&'')
# and numbers glued to words are sorted out in Python afterwards.
_TOKEN: Final = re.compile(
    r"""
      "(?:[^"]|"")*"(?:[^"'$\-/\d]*"(?:[^"]|"")*")*
    | '(?:[^']|'')*(?:'|\Z)
    | --[^\n]*|/\*.*?(?:\*/|\Z)
    | \$(?:\d+|(?P<tag>(?:[^\W\d]\w*)?)\$.*?(?:\$(?P=tag)\$|\Z))
    | \d[\d_]*\.?\d*(?:[eE][+-]?\d+)?
    """,
    re.VERBOSE | re.DOTALL,
)
_ESTRING: Final = re.compile(r"'(?:[^'\\]|\\.|'')*(?:'|\Z)", re.DOTALL)
_WORD: Final = re.compile(r"[A-Za-z_]+")
_PREFIXES: Final = frozenset("bBxXnNeE")


class Token(NamedTuple):
    kind: TokenKind
    start: int
    end: int  # exclusive
    text: str

    def value(self) -> str:
        """The literal's value as PostgreSQL would read it (quotes and doubled quotes removed)."""
        t = self.text
        if self.kind == "number":
            return t.replace("_", "")
        if self.kind == "comment" or not t:
            return t
        if t[0] == "$":
            inner = t[t.index("$", 1) + 1 :]
            tag = t[: t.index("$", 1) + 1]
            return inner[: -len(tag)] if inner.endswith(tag) else inner
        body = t[t.index("'") + 1 :]
        body = body[:-1] if body.endswith("'") else body
        if t[0] in "eE":
            body = re.sub(r"\\(.)", r"\1", body)
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


def scan(sql: str) -> Scan:
    pieces: list[str] = []
    literals: list[Token] = []
    comments: list[Token] = []
    pos = 0
    search = _TOKEN.search
    m = search(sql)
    while m is not None:
        start, end = m.span()
        first = sql[start]
        if first == '"' or (first == "$" and sql[start + 1 : start + 2].isdigit()):
            m = search(sql, end)
            continue
        if first.isdigit():
            if start and (_is_word_char(sql[start - 1]) or sql[start - 1] == "."):
                # part of a name like t1, or the fraction of .5 (rare enough to key as-is)
                m = search(sql, end)
                continue
            kind: TokenKind = "number"
        elif first in "-/":
            kind = "comment"
        else:
            kind = "string"
            start = _literal_start(sql, start)
            if sql[start] in "eE":
                e = _ESTRING.match(sql, start + 1)
                end = e.end() if e else end
        pieces.append(sql[pos:start])
        pos = end
        token = Token(kind, start, end, sql[start:end])
        if kind == "comment":
            comments.append(token)
            pieces.append(" ")
        else:
            literals.append(token)
            pieces.append("?")
        m = search(sql, end)
    if not pieces:
        return Scan(sql, sql, (), ())
    pieces.append(sql[pos:])
    return Scan(sql, "".join(pieces), tuple(literals), tuple(comments))
