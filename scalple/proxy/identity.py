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

GUC: Final = "scalple.user"
# What an identity SET becomes upstream: same command tag, same transaction semantics, no value.
NEUTRAL_SET: Final = "SET scalple.noop TO DEFAULT"
NEUTRAL_SET_LOCAL: Final = "SET LOCAL scalple.noop TO DEFAULT"

# sqlcommenter: the whole comment is key='value' pairs, comma-separated (values URL-encoded).
_PAIR: Final = r"[A-Za-z_][\w.-]*\s*=\s*'(?:[^'\\]|\\.)*'"
_COMMENTER_RE = re.compile(rf"\s*{_PAIR}(?:\s*,\s*{_PAIR})*\s*,?\s*")
_PAIR_RE = re.compile(r"([A-Za-z_][\w.-]*)\s*=\s*'((?:[^'\\]|\\.)*)'")
COMMENT_KEYS: Final = ("user", "actor", "scalple_user")


@dataclass(frozen=True, slots=True)
class Claim:
    """An assertion of who is acting: `actor` is None for a RESET."""

    actor: str | None
    source: str
    local: bool = False

    @property
    def email(self) -> str | None:
        return self.actor if self.actor and "@" in self.actor else None


class ConflictingClaims(ValueError):
    """A statement's comments name more than one person."""


def _pairs(text: str) -> str | None:
    if _COMMENTER_RE.fullmatch(text) is None:
        return None  # free text that happens to say user='x' is no claim
    for key, value in _PAIR_RE.findall(text):
        if key in COMMENT_KEYS:
            return unquote(value.replace("\\'", "'")) or None
    return None


def comment_claim(sql: str, comments: list[int]) -> Claim | None:
    """A sqlcommenter-style `/*user='alice%40corp.com'*/` in one of the statement's comments.

    `comments` are the (start, end) offsets the lexer found: only what the server reads as a
    comment counts, never text inside a literal or a quoted name. Raises ConflictingClaims
    when comments name different people.
    """
    actor: str | None = None
    for start, end in zip(comments[::2], comments[1::2], strict=True):
        body = sql[start + 2 : end - 2] if sql[start + 1] == "*" else sql[start + 2 : end]
        if "=" not in body:
            continue
        found = _pairs(body)
        if found is None:
            continue
        if actor is not None and found != actor:
            raise ConflictingClaims(f"comments name both {actor!r} and {found!r}")
        actor = found
    return Claim(actor, "comment") if actor else None


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
