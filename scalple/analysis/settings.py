"""Parsers for the [analysis] settings that the generic ones in scalple.config do not cover."""

from __future__ import annotations

import re
from typing import Any


def column_map(v: Any) -> dict[str, str]:
    """`{"users.id" = "customer"}` in TOML, or `users.id=customer,users.email=email` in env."""
    if isinstance(v, str):
        pairs = [p.split("=", 1) for p in v.split(",") if p.strip()]
        if any(len(p) != 2 for p in pairs):
            raise ValueError(f"expected COLUMN=KIND pairs, got {v!r}")
        v = {k.strip(): kind.strip() for k, kind in pairs}
    if not isinstance(v, dict) or not all(
        isinstance(k, str) and isinstance(x, str) and x for k, x in v.items()
    ):
        raise ValueError(f"expected a table of column = kind, got {v!r}")
    for name in v:
        column_name(name)
    return dict(v)


def column_name(v: str) -> str:
    if not 2 <= len(v.split(".")) <= 3 or not all(v.split(".")):
        raise ValueError(f"expected TABLE.COLUMN or SCHEMA.TABLE.COLUMN, got {v!r}")
    return v


def column_list(v: Any) -> tuple[str, ...]:
    items = tuple(x.strip() for x in v.split(",") if x.strip()) if isinstance(v, str) else v
    if not isinstance(items, tuple | list) or not all(isinstance(x, str) for x in items):
        raise ValueError(f"expected a list of TABLE.COLUMN names, got {v!r}")
    return tuple(column_name(x) for x in items)


def regex_map(v: Any) -> dict[str, str]:
    """Extra value patterns: `{name = "regex"}`; each regex must compile."""
    if not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()):
        raise ValueError(f"expected a table of name = regex, got {v!r}")
    for name, rx in v.items():
        try:
            re.compile(rx)
        except re.error as exc:
            raise ValueError(f"pattern {name}: {exc}") from exc
    return dict(v)
