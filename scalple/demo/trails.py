"""Read the two audit trails the demo compares, pgAudit's server log and Scalple's ledger, and
pair them statement by statement. Pure functions over text and records."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_LINE_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
_AUDIT = re.compile(
    r"user=(?P<user>\S*) db=(?P<db>\S*) app=(?P<app>.*?) client=(?P<client>\S*) "
    r"LOG:\s+AUDIT: (?P<rest>.*)$",
    re.S,
)
_COMMENT = re.compile(r"/\*.*?\*/|--[^\n]*", re.S)
_LITERAL = re.compile(r"'(?:[^']|'')*'|\b\d+(?:\.\d+)?\b|\$\d+")


@dataclass(frozen=True)
class AuditLine:
    """One pgAudit SESSION record from the server log."""

    user: str
    database: str
    application: str
    audit_class: str
    command: str
    statement: str


@dataclass(frozen=True)
class Pair:
    statement: str
    pgaudit_user: str | None  # None: pgAudit has no line for it
    actor: str | None  # None: Scalple has no actor (or no record at all)
    identity_source: str | None  # None: Scalple never saw it


def _records(log_text: str) -> Iterable[str]:
    current: list[str] = []
    for line in log_text.splitlines():
        if _LINE_START.match(line) and current:
            yield "\n".join(current)
            current = []
        current.append(line)
    if current:
        yield "\n".join(current)


def parse_pgaudit(log_text: str, applications: Iterable[str] | None = None) -> list[AuditLine]:
    """pgAudit SESSION lines (log_line_prefix with user=, db=, app=, client=), in log order."""
    apps = set(applications) if applications is not None else None
    out = []
    for record in _records(log_text):
        m = _AUDIT.search(record)
        if not m or (apps is not None and m["app"] not in apps):
            continue
        fields = next(csv.reader([m["rest"]], strict=False), [])
        if len(fields) < 8 or fields[0] != "SESSION":
            continue
        out.append(AuditLine(m["user"], m["db"], m["app"], fields[3], fields[4], fields[7]))
    return out


def shape(sql: str) -> str:
    """A statement with comments and literals removed, for matching the two trails."""
    text = _LITERAL.sub("?", _COMMENT.sub(" ", sql))
    return " ".join(text.lower().replace("***", "?").split()).rstrip(";")


def scalple_statements(events: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Statement records, in ledger order (their outcome records are not needed here)."""
    return sorted((e for e in events if e.get("kind") == "statement"), key=lambda e: e["seq"])


def pair(
    statements: Sequence[Mapping[str, Any]], audit: Sequence[AuditLine], extra: Sequence[str] = ()
) -> list[Pair]:
    """Each Scalple statement with the pgAudit line of the same shape (first unused), then the
    `extra` statements pgAudit logged but Scalple never saw (sent around the proxy)."""
    unused = list(audit)
    pairs = []
    for e in statements:
        text = str(e.get("statement") or "")
        match = next((a for a in unused if shape(a.statement) == shape(text)), None)
        if match is not None:
            unused.remove(match)
        pairs.append(
            Pair(
                text,
                match.user if match else None,
                e.get("actor"),
                str(e.get("identity_source") or "none"),
            )
        )
    for sql in extra:
        match = next((a for a in unused if shape(a.statement) == shape(sql)), None)
        if match is not None:
            unused.remove(match)
        pairs.append(Pair(sql, match.user if match else None, None, None))
    return pairs
