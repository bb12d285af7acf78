"""Audit records for one connection: the write-ahead record of a statement, its outcome, and
the data subjects seen in its results. Values in, AuditEvents out."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Final

from scalple.analysis import (
    Analyzer,
    CopyPlan,
    ResultField,
    ResultPlan,
    StatementAnalysis,
    SubjectSet,
)
from scalple.analysis.lexer import Lexed
from scalple.events import AuditEvent, Status
from scalple.proxy import codec
from scalple.proxy.commands import Command
from scalple.proxy.identity import Claim

PLAN_CACHE: Final = 256
RECORD_CHARS: Final = 1 << 16  # of a statement past the analysis budget
LINE_LIMIT: Final = 1 << 20


class Run:
    """A statement between its write-ahead record and its outcome."""

    __slots__ = (
        "analysis",
        "carry",
        "command",
        "copy",
        "done",
        "error",
        "event",
        "plan",
        "routine",
        "rows",
        "sql",
        "sqlstate",
        "status",
        "subjects",
        "suspended",
        "tag",
    )

    def __init__(self, event: AuditEvent, sql: str, command: Command) -> None:
        self.event = event
        self.sql = sql
        self.command = command
        self.plan: ResultPlan | None = None
        self.analysis: StatementAnalysis | None = None
        self.copy: CopyPlan | None = None
        self.subjects: SubjectSet | None = None
        self.carry = b""
        self.rows = 0
        self.tag: str | None = None
        self.status: Status = "ok"
        self.sqlstate: str | None = None
        self.error: str | None = None
        self.routine: str | None = None  # the ErrorResponse's R field: tells RAISE's text apart
        self.suspended = False
        self.done = False  # its outcome is recorded

    def fail(
        self, status: Status, sqlstate: str | None, error: str | None, routine: str | None = None
    ) -> None:
        self.status, self.sqlstate, self.error = status, sqlstate, error
        self.routine = routine


def _format(formats: tuple[int, ...], i: int) -> int:
    """Bind's format codes: none means text, one applies to all, else one per parameter."""
    if not formats:
        return 0
    return formats[0] if len(formats) == 1 else formats[i]


def _text_param(value: bytes | None, fmt: int) -> str | None:
    if value is None:
        return None
    if fmt == 1:
        return "\\x" + value.hex()
    return value.decode(errors="replace")


class Recorder:
    """Builds one connection's audit records."""

    def __init__(
        self,
        session_id: str,
        now_us: Callable[[], int],
        analyzer: Analyzer | None,
        client_addr: str,
        client_port: int | None,
    ) -> None:
        self.session_id = session_id
        self.now_us = now_us
        self.analyzer = analyzer
        self.client_addr = client_addr
        self.client_port = client_port
        self.params: dict[str, str] = {}
        self.standard_strings = True
        self._ids = itertools.count(1)
        self._plans: dict[tuple[object, ...], ResultPlan | None] = {}
        # Result rows are read for subjects only when some column names one.
        self.reads_subjects = bool(analyzer and analyzer.policy.subject_columns)

    def start(
        self,
        sql: str,
        claim: Claim | None,
        command: Command,
        tx_seq: int,
        raw_params: tuple[bytes | None, ...] = (),
        formats: tuple[int, ...] = (),
        detail: str | None = None,
        skip: bool = False,
        lexed: Lexed | None = None,
    ) -> Run:
        """A statement's write-ahead record: who, from where, and what, with PII masked.

        `skip`: past the analysis budget, the statement is not parsed; its record holds its
        first RECORD_CHARS characters, every literal masked, and says how much more there was.
        """
        analyzer = self.analyzer
        a = None
        shown = sql
        if skip and len(sql) > RECORD_CHARS:
            shown = sql[:RECORD_CHARS]  # a literal cut here is read as open, and masked whole
        if analyzer is None:
            params = tuple(_text_param(v, _format(formats, i)) for i, v in enumerate(raw_params))
            analysis: dict[str, object] = {"statement": shown, "params": params}
        else:
            scs = self.standard_strings
            a = (
                analyzer.skipped(shown, raw_params, formats, standard_strings=scs)
                if skip
                else analyzer.analyze(sql, raw_params, formats, standard_strings=scs, lexed=lexed)
            )
            analysis = {
                "statement": a.statement,
                "params": a.params,
                "fingerprint": a.fingerprint,
                "audit_class": a.audit_class,
                "tables": a.tables,
                "columns": a.columns,
                "masked_fields": a.masked_fields,
                "subjects": a.subjects,
                "subjects_capped": a.subjects_capped,
                "analysis": a.analysis,
            }
        if shown is not sql:
            more = f" /* scalple: {len(sql) - len(shown)} more characters not recorded */"
            analysis["statement"] = f"{analysis['statement']}{more}"
        settings = self.params
        event = AuditEvent(
            kind="statement",
            event_id=f"{self.session_id}-{next(self._ids)}",
            ts_start=self.now_us(),
            actor=claim.actor if claim else None,
            actor_email=claim.email if claim else None,
            identity_source=claim.source if claim else "none",  # type: ignore[arg-type]
            db_role=settings.get("user"),
            database=settings.get("database") or settings.get("user"),
            application_name=settings.get("application_name"),
            client_addr=self.client_addr,
            client_port=self.client_port,
            session_id=self.session_id,
            tx_seq=tx_seq,
            detail=self.mask(detail),
            **analysis,  # type: ignore[arg-type]
        )
        run = Run(event, sql, command)
        run.analysis = a
        return run

    def outcome(self, run: Run, status: Status | None = None) -> AuditEvent:
        run.done = True
        end = self.now_us()
        started = run.event.ts_start
        rows = run.rows if run.rows else (codec.tag_rows(run.tag) if run.tag else None)
        return AuditEvent(
            kind="outcome",
            event_id=run.event.event_id,
            ts_start=started,
            ts_end=end,
            duration_us=max(0, end - started),
            session_id=self.session_id,
            tx_seq=run.event.tx_seq,
            command_tag=run.tag,
            rows=rows,
            status=status or run.status,
            sqlstate=run.sqlstate,
            error=self.mask(run.error, run.sqlstate, run.routine),
            subjects=run.subjects.subjects if run.subjects else (),
            subjects_capped=run.subjects.capped if run.subjects else False,
        )

    def mask(
        self, text: str | None, sqlstate: str | None = None, routine: str | None = None
    ) -> str | None:
        """Server messages can quote values (`invalid input syntax: "alice@x.io"`), and RAISE
        writes free text: SQLSTATE and routine tell the analyzer which it is."""
        if text is None or self.analyzer is None:
            return text
        return self.analyzer.mask_text(text, sqlstate=sqlstate, routine=routine)

    # --- subjects in results -----------------------------------------------------------------

    def plan(self, fields: tuple[codec.Field, ...] | None, run: Run) -> ResultPlan | None:
        """Which result columns carry subject identifiers, from RowDescription's OIDs."""
        analyzer = self.analyzer
        if not self.reads_subjects or analyzer is None or not fields:
            return None
        key = (fields, run.analysis.fingerprint if run.analysis else None)
        if key in self._plans:
            plan = self._plans[key]
        else:
            plan = analyzer.result_plan(
                [ResultField(f.name, f.table_oid, f.attnum, f.type_oid, f.format) for f in fields],
                run.analysis,
            )
            if len(self._plans) >= PLAN_CACHE:
                self._plans.clear()
            self._plans[key] = plan
        if plan is not None and run.subjects is None:
            run.subjects = SubjectSet(analyzer.policy.subject_cap)
        return plan

    def copy_plan(self, run: Run) -> None:
        """COPY data carries subjects too: plan which columns, count rows from the data."""
        analyzer = self.analyzer
        if analyzer is None:
            return
        run.copy = analyzer.copy_plan(run.sql)
        if run.copy is not None and run.subjects is None:
            run.subjects = SubjectSet(analyzer.policy.subject_cap)

    @staticmethod
    def count_row(run: Run, mtype: int, body: bytes | None) -> None:
        run.rows += 1
        subjects = run.subjects
        if body is None or subjects is None or subjects.capped:
            return  # a row too large to hold streamed through unread
        if mtype == 0x44 and run.plan is not None:
            subjects.add(run.plan.subjects_in_row(body))
        elif mtype == 0x64 and run.copy is not None:
            subjects.add(run.copy.subjects_in_line(body))

    @staticmethod
    def copy_in(run: Run, body: bytes | memoryview | None) -> None:
        """Client CopyData in COPY FROM STDIN: lines may span messages, so carry the tail."""
        if run.copy is None or run.subjects is None or body is None or run.subjects.capped:
            return
        if len(run.carry) + len(body) > LINE_LIMIT:  # no line that long is read for subjects
            run.carry = b""
            run.subjects.capped = True
            return
        data = run.carry + bytes(body)
        lines = data.split(b"\n")
        run.carry = lines.pop()
        for line in lines:
            if line and line != b"\\.":
                run.subjects.add(run.copy.subjects_in_line(line))
