"""Who a statement belongs to: identity claims from startup options, comments and SET scalple.user.

Pure functions over strings; the session decides which claim applies and whether the client may
make it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote

from pglast import parser as pg

GUC: Final = "scalple.user"
# What an identity SET becomes upstream: same command tag, same transaction semantics, no value.
NEUTRAL_SET: Final = "SET scalple.noop TO DEFAULT"
NEUTRAL_SET_LOCAL: Final = "SET LOCAL scalple.noop TO DEFAULT"

_SET_RE = re.compile(
    r"""^\s*(?:SET\s+(?P<scope>SESSION\s+|LOCAL\s+)?"?scalple\.user"?\s*(?:=|\bTO\b)\s*
        (?P<value>'(?:[^']|'')*'|DEFAULT|[^\s;']+)
      |RESET\s+"?scalple\.user"?)\s*;?\s*$""",
    re.IGNORECASE | re.VERBOSE | re.DOTALL,
)
_MENTION_RE = re.compile(r"scalple\.user", re.IGNORECASE)
_SET_CONFIG_RE = re.compile(r"set_config\s*\(\s*'scalple\.user'", re.IGNORECASE)
_RESET_ALL_RE = re.compile(r"^\s*(?:RESET\s+ALL|DISCARD\s+ALL)\s*;?\s*$", re.IGNORECASE)
_PAIR_RE = re.compile(r"\s*([A-Za-z_][\w.-]*)\s*=\s*'((?:[^'\\]|\\.)*)'\s*(?:,|$)")
_COMMENT_KEYS: Final = ("user", "actor", "scalple_user")
_NO_IDENTITY_NEEDED = re.compile(
    r"^\s*(?:BEGIN|START\s+TRANSACTION|COMMIT|END|ROLLBACK|ABORT|SAVEPOINT|RELEASE|"
    r"PREPARE\s+TRANSACTION|DISCARD|RESET\s+ALL)\b|^\s*;?\s*$",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Claim:
    """An assertion of who is acting: `actor` is None for a RESET."""

    actor: str | None
    source: str
    local: bool = False

    @property
    def email(self) -> str | None:
        return self.actor if self.actor and "@" in self.actor else None


class IdentitySyntaxError(ValueError):
    """A statement mentions scalple.user in a form we do not understand."""


def parse_set(sql: str) -> Claim | None:
    """`SET [SESSION|LOCAL] scalple.user = '…'` / `RESET scalple.user` as a claim; else None.

    Raises IdentitySyntaxError for a statement that mentions scalple.user but is not such a SET:
    forwarding it would leak the identity into the pooled server connection.
    """
    if not _MENTION_RE.search(sql):
        return None
    m = _SET_RE.match(sql)
    if m is None:
        if _SET_CONFIG_RE.search(sql):
            raise IdentitySyntaxError(
                "set_config('scalple.user', …) would stay on the pooled server connection and "
                "name nobody here; use SET [LOCAL] scalple.user = 'name', which scalple answers"
            )
        if sql.lstrip()[:3].upper() in ("SET", "RES"):
            raise IdentitySyntaxError(
                "use SET [LOCAL] scalple.user = 'name' or RESET scalple.user, alone in a statement"
            )
        return None
    value = m.group("value")
    local = (m.group("scope") or "").strip().upper() == "LOCAL"
    if value is None or value.upper() == "DEFAULT":
        return Claim(None, "set", local)
    if value.startswith("'"):
        value = value[1:-1].replace("''", "'")
    return Claim(value or None, "set", local)


def is_reset_all(sql: str) -> bool:
    return _RESET_ALL_RE.match(sql) is not None


def needs_no_identity(sql: str) -> bool:
    """Transaction control and empty statements touch no data and may run unattributed."""
    return _NO_IDENTITY_NEEDED.match(sql) is not None


def _pairs(text: str) -> str | None:
    for key, value in _PAIR_RE.findall(text):
        if key in _COMMENT_KEYS:
            return unquote(value.replace("\\'", "'")) or None
    return None


def _comment_bodies_scanned(sql: str) -> list[str]:
    raw = sql.encode()
    try:
        tokens = pg.scan(sql)
    except Exception:
        return []
    return [
        raw[t.start + 2 : t.end - 1].decode(errors="replace")
        for t in tokens
        if t.name == "C_COMMENT"
    ]


def parse_comment(sql: str) -> Claim | None:
    """A sqlcommenter-style `/*user='alice%40corp.com'*/` at the start or end of the statement.

    Only real comments count, never text inside a string literal: the cheap path accepts a
    comment that opens the statement or closes it with nothing but `;` after; anything less
    clear-cut goes through PostgreSQL's own scanner.
    """
    if "/*" not in sql:
        return None
    text = sql.strip().rstrip(";").rstrip()
    bodies: list[str]
    close = text.find("*/")
    if text.startswith("/*") and close > 0 and "/*" not in text[2:close]:
        bodies = [text[2:close]]
        if text.endswith("*/") and text.rfind("/*") > close:
            bodies += _comment_bodies_scanned(sql)
    elif text.endswith("*/"):
        start = text.rfind("/*")
        line_start = text.rfind("\n", 0, start) + 1
        inner = text[start + 2 : -2]
        if "--" in text[line_start:start] or "/*" in inner or "*/" in inner:
            bodies = _comment_bodies_scanned(sql)
        else:
            bodies = [inner]
    else:
        bodies = _comment_bodies_scanned(sql)
    for body in bodies:
        actor = _pairs(body)
        if actor:
            return Claim(actor, "comment")
    return None


def _split_options(options: str) -> list[str]:
    """Split a libpq `options` string on unescaped whitespace (backslash escapes a character)."""
    out, cur, i = [], [], 0
    while i < len(options):
        ch = options[i]
        if ch == "\\" and i + 1 < len(options):
            cur.append(options[i : i + 2])
            i += 2
            continue
        if ch.isspace():
            if cur:
                out.append("".join(cur))
                cur = []
        else:
            cur.append(ch)
        i += 1
    if cur:
        out.append("".join(cur))
    return out


def _unescape(arg: str) -> str:
    return re.sub(r"\\(.)", r"\1", arg)


def strip_startup_option(options: str) -> tuple[str, Claim | None]:
    """Remove `-c scalple.user=…` or `--scalple.user=…` from `options`: (the rest, the claim)."""
    args = _split_options(options)
    kept: list[str] = []
    claim: Claim | None = None
    i = 0
    while i < len(args):
        arg = args[i]
        setting: str | None = None
        if arg == "-c" and i + 1 < len(args):
            setting, step = args[i + 1], 2
        elif (arg.startswith("-c") and len(arg) > 2) or arg.startswith("--"):
            setting, step = arg[2:], 1
        else:
            step = 1
        if setting is not None:
            name, _, value = _unescape(setting).partition("=")
            if name.strip().lower().replace("-", "_") == GUC.replace("-", "_"):
                claim = Claim(value.strip() or None, "startup")
                i += step
                continue
        kept.extend(args[i : i + step])
        i += step
    return " ".join(kept), claim


def trusted(role: str, addr: str, roles: Sequence[str], networks: Sequence[str]) -> bool:
    """May a client connected as `role` from `addr` assert identity?"""
    if roles and role not in roles:
        return False
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(n, strict=False) for n in networks)
