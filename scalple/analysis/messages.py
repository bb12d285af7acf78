"""Server error and notice texts as they may be recorded: their shape kept, the values they
quote masked.

A message PostgreSQL writes itself has a fixed wording around what it quotes. A quoted name is
kept when an object word names its kind (`relation "orders"`, `constraint "users_email_key"`)
and it reads as a name (a column only when the policy or the catalog knows it, since
`WHERE name = "Ann"` comes back as `column "Ann" does not exist`); every other quoted text is a
value, masked to the end of its line, since values may hold quotes themselves. `Key (...)=(...)`
details lose their values unless every column named is known not to be sensitive, and `Failing
row contains (...)` loses them all. A text written by user code (RAISE, ASSERT, a procedural
language's own reporting, or any SQLSTATE of class P0) is free text: nothing tells its data from
its wording, so it is masked whole, its length, spaces and punctuation kept.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Container
from typing import Final

# Where PostgreSQL reports what user code said: the ErrorResponse's routine (R) field.
_USER_ROUTINES: Final = frozenset({"exec_stmt_raise", "exec_stmt_assert"})
_USER_ROUTINE_PREFIXES: Final = ("PLy", "plperl", "pltcl")
_KEY_DETAIL: Final = re.compile(
    r"\bKey \((?P<cols>[^()\n]*(?:\([^()\n]*\)[^()\n]*)*)\)=\((?P<vals>.*?)\)"
    r"(?=\s+(?:already|is|conflicts)\b|\.?\s*$)",
    re.MULTILINE,
)
_FAILING_ROW: Final = re.compile(r"\bFailing row contains \((?P<vals>.*)\)", re.MULTILINE)
_WORD: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_OBJECT_KINDS: Final = frozenset(
    {
        "relation", "table", "column", "constraint", "index", "type", "function", "procedure",
        "aggregate", "schema", "sequence", "view", "database", "role", "user", "extension",
        "trigger", "cursor", "portal", "statement", "savepoint", "operator", "collation",
        "tablespace", "publication", "subscription", "server", "policy", "rule", "domain",
        "parameter", "identifier", "encoding", "language", "conversion", "channel", "attribute",
    }
)  # fmt: skip
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*(?:\.[A-Za-z_][A-Za-z0-9_$]*)*")
_HEX_BYTES: Final = re.compile(r"\b0x[0-9A-Fa-f]{2}(?: 0x[0-9A-Fa-f]{2})*")


def free_text(sqlstate: str | None, routine: str | None) -> bool:
    """Was the text written by user code rather than by the server's own wording?"""
    if sqlstate is not None and sqlstate.startswith("P0"):
        return True
    return routine is not None and (
        routine in _USER_ROUTINES or routine.startswith(_USER_ROUTINE_PREFIXES)
    )


def mask_message(
    text: str,
    mask: Callable[[str], str],
    sensitive: Container[str],
    columns: Container[str],
    *,
    sqlstate: str | None = None,
    routine: str | None = None,
) -> str:
    """`text` with its values masked by `mask`. `sensitive` holds the bare names of PII and
    subject columns; `columns` the bare column names known to exist (policy and catalog)."""
    if free_text(sqlstate, routine):
        return mask(text)
    if "Key (" in text:
        text = _KEY_DETAIL.sub(lambda m: _key_values(m, mask, sensitive), text)
    if "Failing row" in text:
        text = _FAILING_ROW.sub(lambda m: f"Failing row contains ({mask(m['vals'])})", text)
    if '"' in text:
        text = "\n".join(_quoted(line, mask, columns) for line in text.split("\n"))
    if "0x" in text:
        text = _HEX_BYTES.sub(lambda m: mask(m[0]), text)
    return text


def _key_values(m: re.Match[str], mask: Callable[[str], str], sensitive: Container[str]) -> str:
    words = {w.lower() for w in _WORD.findall(m["cols"])}
    if not any(w in sensitive for w in words):
        return m[0]
    return f"Key ({m['cols']})=({mask(m['vals'])})"


def _quoted(line: str, mask: Callable[[str], str], columns: Container[str]) -> str:
    """One line: quoted names kept, the first quoted value masked through the line's last
    quote (a value may hold quotes; masking keeps them, so what follows stays readable)."""
    out: list[str] = []
    pos = 0
    while True:
        open_ = line.find('"', pos)
        if open_ < 0:
            break
        close = line.find('"', open_ + 1)
        if close < 0:
            break
        name = line[open_ + 1 : close]
        if _is_name(line[max(0, open_ - 40) : open_], name, columns):
            out.append(line[pos : close + 1])
            pos = close + 1
            continue
        last = line.rfind('"')
        out += (line[pos : open_ + 1], mask(line[open_ + 1 : last]), '"')
        pos = last + 1
        break
    return "".join(out) + line[pos:]


def _is_name(before: str, name: str, columns: Container[str]) -> bool:
    words = before.split()
    kind = words[-1].lower() if words else ""
    if kind not in _OBJECT_KINDS or _NAME.fullmatch(name) is None:
        return False
    return kind != "column" or name.lower() in columns
