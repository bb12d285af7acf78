"""SQL text as PostgreSQL's scanner reads it, for the oracle: tokens, statements, command tags.

Written from scan.l's rules, independently of scalple's own lexer (an oracle that shared the
product's lexer would share its mistakes). It honours standard_conforming_strings: with it off,
a plain '...' string takes backslash escapes, as E'...' always does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import unquote

Kind = Literal["space", "comment", "string", "ident", "qident", "param", "number", "op", "semi"]

_SPACE: Final = " \t\n\r\f\v"
_IDENT: Final = re.compile(r"[A-Za-z\u0080-\U0010ffff_][A-Za-z\u0080-\U0010ffff_0-9$]*")
_DOLLAR: Final = re.compile(r"\$([A-Za-z\u0080-\U0010ffff_][A-Za-z\u0080-\U0010ffff_0-9]*)?\$")
_PARAM: Final = re.compile(r"\$\d+")
_NUMBER: Final = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_OPCHARS: Final = set("~!@#^&|`?+-*/%<>=")
_PAIR: Final = re.compile(r"([A-Za-z_][\w.-]*)\s*=\s*'([^']*)'")
IDENTITY_KEYS: Final = ("user", "actor", "scalple_user")


class LexError(ValueError):
    """Text PostgreSQL would reject at the scanner: an unterminated string, comment or name."""


@dataclass(frozen=True, slots=True)
class Token:
    kind: Kind
    start: int
    end: int
    text: str


def _string_end(sql: str, pos: int, backslash: bool) -> int:
    """End (exclusive) of the quoted string whose opening quote is at `pos`."""
    i, n = pos + 1, len(sql)
    while i < n:
        c = sql[i]
        if backslash and c == "\\":
            i += 2
            continue
        if c == "'":
            if i + 1 < n and sql[i + 1] == "'":
                i += 2
                continue
            return i + 1
        i += 1
    raise LexError(f"unterminated quoted string at offset {pos}")


def _qident_end(sql: str, pos: int) -> int:
    i = pos + 1
    while True:
        j = sql.find('"', i)
        if j < 0:
            raise LexError(f"unterminated quoted identifier at offset {pos}")
        if sql[j + 1 : j + 2] == '"':
            i = j + 2
            continue
        return j + 1


def _block_comment_end(sql: str, pos: int) -> int:
    depth, i = 0, pos
    while i < len(sql):
        two = sql[i : i + 2]
        if two == "/*":
            depth += 1
            i += 2
        elif two == "*/":
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    raise LexError(f"unterminated /* comment at offset {pos}")


def _prefixed(sql: str, i: int, word: str, scs: bool) -> tuple[Kind, int] | None:
    """A string or name that starts with a prefix letter: E'', B'', X'', N'', U&'', U&\"\"."""
    nxt = sql[i + len(word) : i + len(word) + 2]
    if len(word) == 1 and nxt[:1] == "'":
        backslash = word in "eE" or (word in "nN" and not scs)
        return "string", _string_end(sql, i + 1, backslash)
    if word in ("u", "U") and nxt == "&'":
        return "string", _string_end(sql, i + 2, False)
    if word in ("u", "U") and nxt == '&"':
        return "qident", _qident_end(sql, i + 2)
    return None


def _one(sql: str, i: int, scs: bool) -> tuple[Kind, int]:
    """The kind and end of the token starting at `i`."""
    c, two = sql[i], sql[i : i + 2]
    if c in _SPACE:
        j = i
        while j < len(sql) and sql[j] in _SPACE:
            j += 1
        return "space", j
    if two == "--":
        j = i
        while j < len(sql) and sql[j] not in "\n\r":
            j += 1
        return "comment", j
    if two == "/*":
        return "comment", _block_comment_end(sql, i)
    if c == "'":
        return "string", _string_end(sql, i, not scs)
    if c == '"':
        return "qident", _qident_end(sql, i)
    if c == "$":
        m = _PARAM.match(sql, i)
        if m:
            return "param", m.end()
        m = _DOLLAR.match(sql, i)
        if m:
            close = sql.find(m.group(0), m.end())
            if close < 0:
                raise LexError(f"unterminated dollar-quoted string at offset {i}")
            return "string", close + len(m.group(0))
        return "op", i + 1
    m = _IDENT.match(sql, i)
    if m:
        prefixed = _prefixed(sql, i, m.group(0), scs)
        return prefixed if prefixed else ("ident", m.end())
    m = _NUMBER.match(sql, i)
    if m:
        return "number", m.end()
    if c == ";":
        return "semi", i + 1
    if c == ":" and two == "::":
        return "op", i + 2
    return "op", i + 1


def tokens(sql: str, scs: bool = True) -> list[Token]:
    """Every token of `sql`, whitespace and comments included; LexError if it cannot be read."""
    out: list[Token] = []
    i = 0
    while i < len(sql):
        kind, end = _one(sql, i, scs)
        out.append(Token(kind, i, end, sql[i:end]))
        i = end
    return out


def split(sql: str, scs: bool = True) -> list[str]:
    """The statements of a simple Query message, as the server separates them."""
    parts, start = [], 0
    for t in tokens(sql, scs):
        if t.kind == "semi":
            parts.append(sql[start : t.start])
            start = t.end
    parts.append(sql[start:])
    return [p.strip() for p in parts if _significant(p, scs)]


def _significant(text: str, scs: bool) -> bool:
    return any(t.kind not in ("space", "comment") for t in tokens(text, scs))


def words(sql: str, scs: bool = True) -> list[Token]:
    """Tokens that carry meaning: no whitespace, comments or trailing semicolons."""
    out = [t for t in tokens(sql, scs) if t.kind not in ("space", "comment")]
    while out and out[-1].kind == "semi":
        out.pop()
    return out


def normalize(sql: str, scs: bool = True) -> str:
    """`sql` with every literal replaced by `?`, comments and spacing dropped, names folded:
    two texts normalize the same when they differ only in what masking may change. The
    argument of oracle_mark(...) is kept: it tells generated statements apart."""
    out: list[str] = []
    for t in words(sql, scs):
        if t.kind == "string" and out[-2:] == ["oracle_mark", "("]:
            out.append(t.text)
        elif t.kind in ("string", "number"):
            out.append("?")
        elif t.kind == "ident":
            out.append(t.text.lower())
        else:
            out.append(t.text)
    return " ".join(out)


_TAGS: Final = {
    "begin": "BEGIN",
    "start": "START TRANSACTION",
    "commit": "COMMIT",
    "end": "COMMIT",
    "rollback": "ROLLBACK",
    "abort": "ROLLBACK",
    "savepoint": "SAVEPOINT",
    "release": "RELEASE",
    "prepare": "PREPARE",
    "execute": "EXECUTE",
    "deallocate": "DEALLOCATE",
    "declare": "DECLARE CURSOR",
    "fetch": "FETCH",
    "move": "MOVE",
    "close": "CLOSE CURSOR",
    "show": "SHOW",
    "set": "SET",
    "reset": "RESET",
    "select": "SELECT",
    "values": "SELECT",
    "table": "SELECT",
    "insert": "INSERT",
    "update": "UPDATE",
    "delete": "DELETE",
}
# Never in pgAudit's log with `pgaudit.log = 'all, -misc_set'`.
UNLOGGED: Final = frozenset({"SET", "RESET", ""})


def command(sql: str, scs: bool = True) -> str:
    """The command tag PostgreSQL (and pgAudit) gives the statement, for the statements the
    oracle's generator writes; '' when there is none."""
    ws = words(sql, scs)
    if not ws:
        return ""
    first = ws[0].text.lower()
    if first == "discard":
        return "DISCARD " + (ws[1].text.upper() if len(ws) > 1 else "")
    if first == "with":
        return _main_after_with(ws)
    if first == "reset" and len(ws) > 1 and ws[1].text.lower() == "all":
        return "RESET"
    if first in ("close", "deallocate") and ws[-1].text.lower() == "all" and len(ws) <= 3:
        return {"close": "CLOSE CURSOR ALL", "deallocate": "DEALLOCATE ALL"}[first]
    return _TAGS.get(first, first.upper())


def _main_after_with(ws: list[Token]) -> str:
    depth = 0
    for t in ws[1:]:
        if t.text == "(":
            depth += 1
        elif t.text == ")":
            depth -= 1
        elif depth == 0 and t.kind == "ident":
            tag = _TAGS.get(t.text.lower())
            if tag in ("SELECT", "INSERT", "UPDATE", "DELETE"):
                return tag
    return "SELECT"


def comment_claim(sql: str, scs: bool = True) -> str | None:
    """The actor a sqlcommenter comment names, when a real comment (as the server's scanner sees
    it) opens or closes the statement; None otherwise."""
    toks = [t for t in tokens(sql, scs) if t.kind != "space"]
    while toks and toks[-1].kind == "semi":
        toks.pop()
    edge: list[Token] = []
    for t in toks:
        if t.kind != "comment":
            break
        edge.append(t)
    for t in reversed(toks):
        if t.kind != "comment":
            break
        edge.append(t)
    for t in edge:
        body = t.text[2:-2] if t.text.startswith("/*") else t.text[2:]
        for key, value in _PAIR.findall(body):
            if key in IDENTITY_KEYS and value:
                return unquote(value) or None
    return None
