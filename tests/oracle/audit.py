"""pgAudit's session log, read back as what each backend executed.

The sandbox's log_line_prefix is `%m [%p] user=%u db=%d app=%a client=%h `; pgAudit writes
`AUDIT: SESSION,statement_id,substatement_id,class,command,object_type,object_name,statement,
parameters...` as CSV, one line per relation (`pgaudit.log_relation = on`). What it logs, learnt
from PostgreSQL 15 + pgAudit here:

- A statement is logged when it starts: DML and utility statements when they run, but a SELECT
  sent with the extended protocol already at Bind (PortalStart calls ExecutorStart), run or not.
- The statement text is the whole Query message, however many statements it holds.
- EXECUTE, DECLARE CURSOR and FETCH are logged after the query they run (and not at all when
  it fails); the query comes first, with the text of the message that PREPAREd or DECLAREd it.
- Statements that fail before they start (syntax, unknown names, 42P05, 26000, 34000) are not
  logged, nor SET/RESET (`-misc_set`).
"""

from __future__ import annotations

import csv
import itertools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

_RECORD: Final = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \S+ \[(?P<pid>\d+)\] user=(?P<user>\S*) "
    r"db=(?P<db>\S*) app=(?P<app>.*?) client=\S* (?P<level>[A-Z]+):  (?P<message>.*)",
    re.DOTALL,
)
_START: Final = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} ", re.MULTILINE)
# The dynamic statement `oracle_mark(marker)` runs (see ORACLE_MARK in tests/oracle/schema.py).
_MARK: Final = re.compile(
    r"^SELECT 'oracle-mark' AS kind, '(?P<marker>[^']*)' AS marker, "
    r"(?P<shadow>NULL|E?'(?:[^'\\]|''|\\.)*') AS shadow, "
    r"(?P<leaked>NULL|E?'(?:[^'\\]|''|\\.)*') AS leaked$",
    re.DOTALL,
)


@dataclass(frozen=True, slots=True)
class Line:
    pid: int
    app: str
    db: str
    user: str
    statement_id: int
    substatement_id: int
    klass: str
    command: str
    object_type: str
    object_name: str
    text: str
    params: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Mark:
    """What `oracle_mark` saw when a statement ran: the server's own state."""

    pid: int
    app: str  # the client whose statement ran (PgBouncer sets application_name per client)
    order: int  # position in the log
    marker: str
    shadow: str | None  # current_setting('shadow.actor', true): the actor by PostgreSQL's rules
    leaked: str | None  # current_setting('scalple.user', true): must never be set upstream


@dataclass(slots=True)
class Unit:
    """One statement a backend started, as pgAudit logged it: the lines of one
    (statement_id, substatement_id), the relations among them, and the statement that ran inside
    it (the prepared statement under EXECUTE, the query under DECLARE), folded in.

    pgAudit's statement_id alone does not separate statements: while a portal is open in a
    transaction every later statement is logged as a substatement of the same id."""

    pid: int
    app: str
    user: str
    order: int
    lines: list[Line] = field(default_factory=list)
    inner: list[Unit] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)

    @property
    def top(self) -> Line:
        """The statement's first line: with one line per relation, a WRITE comes before the
        READs of the same statement (INSERT ... SELECT is logged INSERT, then SELECT)."""
        return self.lines[0]

    @property
    def text(self) -> str:
        return self.top.text

    @property
    def command(self) -> str:
        return self.top.command

    @property
    def relations(self) -> frozenset[str]:
        return frozenset(
            ln.object_name
            for u in (self, *self.inner)
            for ln in u.lines
            if ln.object_type in ("TABLE", "VIEW", "MATERIALIZED VIEW", "FOREIGN TABLE")
        )

    @property
    def inner_texts(self) -> list[str]:
        return [u.text for u in self.inner]


def _unquote(value: str) -> str | None:
    """A literal as format('%L') writes it: NULL, '...', or E'...' when it holds backslashes."""
    if value == "NULL":
        return None
    if value.startswith("E"):
        return re.sub(r"\\(.)", r"\1", value[2:-1].replace("''", "'"))
    return value[1:-1].replace("''", "'")


def parse_mark(line: Line, order: int) -> Mark | None:
    if line.klass != "READ" or line.object_type:
        return None
    m = _MARK.match(line.text)
    if m is None:
        return None
    return Mark(
        line.pid, line.app, order, m["marker"], _unquote(m["shadow"]), _unquote(m["leaked"])
    )


def records(text: str) -> Iterator[re.Match[str]]:
    """Each log record (a record's message may span lines), parsed by the line prefix."""
    starts = [m.start() for m in _START.finditer(text)] + [len(text)]
    for a, b in itertools.pairwise(starts):
        m = _RECORD.match(text[a:b].rstrip("\n"))
        if m is not None:
            yield m


def audit_lines(text: str, database: str) -> Iterator[Line]:
    for rec in records(text):
        if rec["level"] != "LOG" or rec["db"] != database:
            continue
        message = rec["message"]
        if not message.startswith("AUDIT: SESSION,"):
            continue
        row = next(csv.reader([message[len("AUDIT: ") :]], strict=True))
        params = tuple(row[8:])
        yield Line(
            pid=int(rec["pid"]),
            app=rec["app"],
            db=rec["db"],
            user=rec["user"],
            statement_id=int(row[1]),
            substatement_id=int(row[2]),
            klass=row[3],
            command=row[4],
            object_type=row[5],
            object_name=row[6],
            text=row[7],
            params=() if params == ("<none>",) else params,
        )


# Utility statements that run a query through the executor: pgAudit logs that query first,
# then the utility statement once it is done.
_OUTER: Final = frozenset({"EXECUTE", "DECLARE CURSOR"})
_INNER: Final = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "MERGE"})


def units(lines: Iterable[Line]) -> tuple[list[Unit], list[Mark]]:
    """Statements each backend started, and the marks their runs left, in log order."""
    out: list[Unit] = []
    marks: list[Mark] = []
    last: dict[int, tuple[tuple[int, int], Unit]] = {}
    for i, ln in enumerate(lines):
        mark = parse_mark(ln, i)
        if mark is not None:
            marks.append(mark)
            continue
        if ln.klass == "FUNCTION":
            continue
        key = (ln.statement_id, ln.substatement_id)
        prev = last.get(ln.pid)
        if prev is not None and prev[0] == key:
            prev[1].lines.append(ln)
            continue
        unit = Unit(ln.pid, ln.app, ln.user, i, [ln])
        if prev is not None and ln.command in _OUTER and prev[1].command in _INNER:
            unit.inner.append(prev[1])
            out.remove(prev[1])
        last[ln.pid] = (key, unit)
        out.append(unit)
    return out, marks


def read_log(path: Path, start: int = 0) -> str:
    with open(path, "rb") as f:
        f.seek(start)
        return f.read().decode("utf-8", "replace")
