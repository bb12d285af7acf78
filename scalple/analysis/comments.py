"""Comments as they may be recorded. A sqlcommenter comment (`/*key='value',...*/`) keeps its
keys and the identity values (who is acting: the event names them anyway) and masks every other
value; any other comment is free text and is masked whole."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

# The keys a trusted service names the acting person with (scalple.proxy.identity reads them).
IDENTITY_KEYS: Final = frozenset({"user", "actor", "scalple_user"})
# One `key='value'` pair and the comma after it; a value escapes its quotes as \'.
_PAIR: Final = re.compile(r"\s*([A-Za-z_][\w.-]*)\s*=\s*'((?:[^'\\]|\\.)*)'\s*(?:,|(?=\s*$))")
# A masked body must not open or close a comment: `a/b` masked to `*/*` would end it.
_DELIMITER: Final = re.compile(r"/(?=\*)|(?<=\*)/")


def mask_comment(text: str, mask: Callable[[str], str]) -> str | None:
    """`text` (the whole comment, delimiters included) as it may be recorded, or None when
    nothing in it needs masking."""
    if text.startswith("/*"):
        closed = text.endswith("*/") and len(text) >= 4
        opening, body, closing = "/*", text[2 : -2 if closed else len(text)], "*/" if closed else ""
    else:
        opening, body, closing = "--", text[2:], ""
    if not body.strip():
        return None
    masked = _pairs(body, mask)
    if masked is None:
        masked = mask(body)
    if masked == body:
        return None
    if "/" in masked:
        masked = _DELIMITER.sub("_", masked)
    return opening + masked + closing


def _pairs(body: str, mask: Callable[[str], str]) -> str | None:
    """A sqlcommenter body with its non-identity values masked; None if `body` is not one."""
    out: list[str] = []
    pos = 0
    while pos < len(body):
        m = _PAIR.match(body, pos)
        if m is None:
            return None if body[pos:].strip() else "".join(out) + body[pos:]
        key, value = m.group(1), m.group(2)
        if key in IDENTITY_KEYS or not value:
            out.append(m.group())
        else:
            # The masked value never holds a quote or backslash, which would end it early.
            masked = mask(value.replace("\\'", "'")).replace("'", "*").replace("\\", "*")
            out += (body[pos : m.start(2)], masked, body[m.end(2) : m.end()])
        pos = m.end()
    return "".join(out)
