"""The oracle's judgement: what pgAudit says the server ran, against what the ledger says.

Correspondence rules (audit.py says what pgAudit logs and when):

- A client's statements are the units whose `app=` is its unique application_name (PgBouncer
  sets it on the server connection it lends). PgBouncer's own `select 1` check is ignored.
- The statement S of a unit is its text; when the text holds several statements (a simple-query
  message), S is the one at this unit's place: the message is split with the server's lexing
  rules (sqltext, with the client's standard_conforming_strings) and units are matched in order
  to the sub-statements whose command tag is theirs (SET/RESET are never logged).
- Ran: every unit, except a SELECT that calls oracle_mark and left no mark (bound, never run).
  A mark belongs to the FETCH/EXECUTE logged right after it whose cursor query / prepared body
  calls it, else to the latest unit before it whose S calls it (DECLARE and PREPARE never run
  their query themselves).
- S matches a ledger event of the same client whose statement normalizes the same (literals,
  comments and spacing ignored: masking may change those; the oracle_mark argument is kept,
  unless the ledger masked it whole). For `EXECUTE name` the prepared
  body matches too, and for FETCH/MOVE the cursor's query (as PREPARE / DECLARE on that backend
  defined them): the ledger may record the command or the statement it runs. A client's
  statements (in the order they ran) and its events (in ledger order) are aligned monotonically,
  each event matching at most one statement (see ClientCheck).
- Tables: the relations pgAudit logged for the unit and the query it ran (`log_relation`); for
  FETCH/MOVE those of the cursor's DECLARE on the same backend. Compared for data commands.
- Actor: a client not in trusted_roles has none, whatever it claims. Otherwise a real
  sqlcommenter comment opening or closing S (as the server's lexer sees comments) names it;
  else, with the proxy straight in front of PostgreSQL, the shadow.actor its mark saw (the
  startup option is the session default); else an `anonymous` client (one that never claims)
  has none; else the actor is not known and not compared.
- A data statement (not transaction control) that ran with no actor breaks require_identity.
- A ledger event with status ok that matched no unit is a phantom, unless its command is one
  pgAudit does not log (SET, RESET), it has no text, or its command tag is ROLLBACK: pgAudit
  logs nothing in an aborted transaction, neither its ROLLBACK nor the COMMIT that ends it as one;
  nor DISCARD ALL through PgBouncer, logged under the application_name it has just reset.
- refused_ran / skipped_ran only when no event that says it ran (other than a SET or RESET) is
  left unmatched between the matched runs around it; else the run counts as missing (the
  ledger recorded it under another text, often '', and the refused event was another attempt).
"""

from __future__ import annotations

import bisect
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.oracle import sqltext
from tests.oracle.audit import Mark, Unit

Event = Mapping[str, Any]

CLASSES: Mapping[str, str] = {
    "missing": "the server ran a statement that no ledger event records",
    "tables": "the ledger's tables are not the relations the server touched",
    "actor": "the ledger's actor is not the one PostgreSQL's rules give",
    "unattributed_ran": "a data statement ran with no identity under require_identity",
    "refused_ran": "a statement the proxy refused (never to forward) ran on the server",
    "skipped_ran": "a statement the ledger says was skipped ran on the server",
    "phantom": "the ledger says a statement ran that the server never ran",
    "identity_leaked": "scalple.user was set on a server connection",
    "pii_in_clear": "a PII value is in the ledger in clear",
    "unresolved": "the oracle could not place a logged statement (a harness defect)",
}
EXEMPT = frozenset({"BEGIN", "START TRANSACTION", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE"})
DATA = frozenset(
    {"SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "EXECUTE", "FETCH", "MOVE", "COPY"}
)
PGBOUNCER_CHECK = "select 1"


@dataclass(frozen=True)
class ClientRun:
    """One client connection of one scenario run, as the runner saw it."""

    scenario: int
    client: int
    mode: str
    app: str
    profile: str
    trusted: bool
    scs: bool
    lost: str | None = None


@dataclass(frozen=True)
class Mismatch:
    klass: str
    mode: str
    scenario: int
    client: int
    detail: str
    app: str = ""


@dataclass
class Expected:
    """What the server ran, resolved from one unit."""

    unit: Unit
    statement: str
    command: str
    accepted: frozenset[str]
    tables: frozenset[str] | None
    runs: str  # the text whose oracle_mark calls this statement's run evaluates
    marks: list[Mark] = field(default_factory=list)
    actor_known: bool = False
    actor: str | None = None

    @property
    def run_order(self) -> int:
        """When it ran: its mark's place in the log (a bound SELECT is logged at Bind)."""
        return self.marks[0].order if self.marks else self.unit.order

    @property
    def anyway(self) -> frozenset[str]:
        """The accepted texts with any marker, for an event whose marker was masked."""
        return frozenset(_MARKER.sub(_ANY_MARKER, a) for a in self.accepted)

    @property
    def ran(self) -> bool:
        return bool(self.marks) or self.command != "SELECT" or "oracle_mark(" not in self.runs

    @property
    def data(self) -> bool:
        return self.command not in EXEMPT and (
            self.command in DATA or bool(self.unit.relations) or bool(self.marks)
        )


@dataclass
class Report:
    mismatches: list[Mismatch] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    # Every statement the server ran that a ledger event was found for, with that event.
    matches: list[tuple[Expected, Event]] = field(default_factory=list)

    def by_class(self) -> dict[str, list[Mismatch]]:
        out: dict[str, list[Mismatch]] = {k: [] for k in CLASSES}
        for m in self.mismatches:
            out[m.klass].append(m)
        return out

    def merge(self, other: Report) -> None:
        self.mismatches += other.mismatches
        self.counts.update(other.counts)
        self.matches += other.matches


_MARKER = re.compile(r"oracle_mark \( '[^']*' \)")
_MASKED_MARKER = re.compile(r"oracle_mark \( '\*+' \)")
_ANY_MARKER = "oracle_mark ( '*' )"


def _norm(text: str | None, scs: bool) -> str | None:
    """The normalized text; a marker the ledger masked whole (analysis failed, every literal
    masked) stands for any marker."""
    if text is None:
        return None
    try:
        norm = sqltext.normalize(text, scs)
    except sqltext.LexError:
        return None
    return _MASKED_MARKER.sub(_ANY_MARKER, norm)


def may_record_a_run(ev: Event, scs: bool) -> bool:
    """Could this event, left unmatched, be the record of a run under another text? Any event
    but a SET or RESET (never logged, so never matched) can: '' is what an Execute of a name
    the proxy does not know is recorded as."""
    text = ev.get("statement") or ""
    return not text.strip() or not unlogged(text, scs)


def unlogged(text: str | None, scs: bool) -> bool:
    """A statement pgAudit never logs here (SET, RESET, or no statement at all)."""
    if not (text or "").strip():
        return True
    try:
        return sqltext.command(text or "", scs) in sqltext.UNLOGGED
    except sqltext.LexError:
        return False


# Judged from the ledger alone, not from which client pgAudit says ran what.
_LEDGER_ONLY = frozenset({"pii_in_clear", "identity_leaked"})


def _names_reset_behind_pooler(
    runs: Sequence[ClientRun], events: Sequence[Event]
) -> set[tuple[str, int]]:
    """(mode, scenario) of runs through PgBouncer in which a client reset every setting."""
    apps = {r.app: r for r in runs if r.mode == "bouncer"}
    out: set[tuple[str, int]] = set()
    for ev in events:
        r = apps.get(ev.get("application_name") or "")
        text = re.sub(r"\s+", " ", ev.get("statement") or "").upper()
        if r is not None and ("RESET ALL" in text or "DISCARD ALL" in text):
            out.add((r.mode, r.scenario))
    return out


def unlogged_behind_pooler(text: str | None) -> bool:
    """DISCARD ALL through PgBouncer: pgAudit logs it under the server connection's own
    application_name, which it has just reset, so no unit of the client's carries it."""
    return bool(text) and re.sub(r"[\s;]+", " ", text or "").strip().upper() == "DISCARD ALL"


def _after_keyword(text: str, keyword: str, scs: bool) -> str | None:
    """The text after the first top-level `keyword` (DECLARE ... FOR q, PREPARE ... AS q)."""
    depth = 0
    for t in sqltext.words(text, scs):
        if t.text == "(":
            depth += 1
        elif t.text == ")":
            depth -= 1
        elif depth == 0 and t.kind == "ident" and t.text.lower() == keyword:
            return text[t.end :].strip()
    return None


def _word(text: str, index: int, scs: bool) -> str:
    ws = sqltext.words(text, scs)
    return ws[index].text.lower() if -len(ws) <= index < len(ws) else ""


def _call(marker: str) -> str:
    return f"oracle_mark('{marker}')"


class Resolver:
    """Places each unit's statement and keeps what backends defined (cursors, PREPAREs)."""

    def __init__(self, scs_of: Mapping[str, bool]) -> None:
        self.scs_of = scs_of
        self.cursors: dict[tuple[int, str], tuple[str, frozenset[str]]] = {}
        self.prepared: dict[tuple[int, str], str] = {}
        self._place: dict[tuple[int, str], int] = {}

    def _statement(self, u: Unit, scs: bool) -> tuple[str, str] | None:
        """(S, its command) for the unit: the sub-statement of the message at its place."""
        subs = sqltext.split(u.text, scs)
        key = (u.pid, u.text)
        start = self._place.get(key, 0) if len(subs) > 1 else 0
        for begin in (start, 0):
            for i in range(begin, len(subs)):
                if sqltext.command(subs[i], scs) == u.command:
                    self._place[key] = i + 1
                    return subs[i], u.command
        # The query of a failed EXECUTE, logged alone with the text that PREPAREd it.
        for sub in subs:
            if sqltext.command(sub, scs) != "PREPARE":
                continue
            body = _after_keyword(sub, "as", scs)
            if body and sqltext.command(body, scs) == u.command:
                return body, u.command
        return None

    def resolve(self, u: Unit) -> Expected | None:
        scs = self.scs_of.get(u.app, True)
        try:
            found = self._statement(u, scs)
        except sqltext.LexError:
            return None
        if found is None:
            return None
        s, command = found
        accepted, runs = {sqltext.normalize(s, scs)}, s
        tables: frozenset[str] | None = u.relations if command in DATA else None
        if command == "DECLARE CURSOR":
            query = _after_keyword(s, "for", scs)
            if query:
                self.cursors[(u.pid, _word(s, 1, scs))] = (query, u.relations)
            tables = u.relations
        elif command == "PREPARE":
            body = _after_keyword(s, "as", scs)
            if body:
                self.prepared[(u.pid, _word(s, 1, scs))] = body
        elif command in ("FETCH", "MOVE"):
            query, tables = self.cursors.get((u.pid, _word(s, -1, scs)), ("", frozenset()))
            if query:
                accepted.add(sqltext.normalize(query, scs))
                runs = query
        elif command == "EXECUTE":
            name = _word(s, 1, scs)
            body = self.prepared.get((u.pid, name)) or self._inner_prepare(u, name, scs)
            if body:
                accepted.add(sqltext.normalize(body, scs))
                runs = body
        return Expected(u, s, command, frozenset(accepted), tables, runs)

    @staticmethod
    def _inner_prepare(u: Unit, name: str, scs: bool) -> str | None:
        for text in u.inner_texts:
            for sub in sqltext.split(text, scs):
                if sqltext.command(sub, scs) == "PREPARE" and _word(sub, 1, scs) == name:
                    return _after_keyword(sub, "as", scs)
        return None


def attach(expected: Sequence[Expected], marks: Iterable[Mark]) -> list[Mark]:
    """Give each mark to the statement whose run left it, among the statements the same client
    ran on the same backend. Returns the marks no statement claims (a WITH HOLD cursor's query
    run by COMMIT, for one)."""
    by_client: dict[tuple[int, str], list[Expected]] = {}
    for e in expected:
        by_client.setdefault((e.unit.pid, e.unit.app), []).append(e)
    orders = {key: [e.unit.order for e in es] for key, es in by_client.items()}
    orphans = []
    for mark in marks:
        key = (mark.pid, mark.app)
        seq = by_client.get(key, [])
        i = bisect.bisect(orders.get(key, []), mark.order)
        call = _call(mark.marker)
        nxt = seq[i] if i < len(seq) else None
        if nxt is not None and nxt.command in ("FETCH", "MOVE", "EXECUTE") and call in nxt.runs:
            nxt.marks.append(mark)
            continue
        for e in reversed(seq[:i]):
            if e.command not in ("DECLARE CURSOR", "PREPARE") and not e.marks and call in e.runs:
                e.marks.append(mark)
                break
        else:
            orphans.append(mark)
    return orphans


def expect_actor(e: Expected, run: ClientRun) -> None:
    if not run.trusted:
        e.actor_known, e.actor = True, None
        return
    claim = sqltext.comment_claim(e.statement, run.scs)
    if claim:
        e.actor_known, e.actor = True, claim
    elif run.mode == "direct" and e.marks:
        e.actor_known, e.actor = True, e.marks[-1].shadow or None
    elif run.profile == "anonymous":
        e.actor_known, e.actor = True, None


def _short(text: str | None, n: int = 160) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _event_text(ev: Event) -> str:
    return f"{ev.get('status')} {ev.get('actor')!r} {_short(ev.get('statement'))!r}"


def align(weights: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    """A monotone matching of rows (statements in the order the server ran them) to columns
    (ledger events in ledger order) of greatest total weight (0: may not match)."""
    n, m = len(weights), len(weights[0]) if weights else 0
    best = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        row, prev, w = best[i], best[i - 1], weights[i - 1]
        for j in range(1, m + 1):
            here = max(prev[j], row[j - 1])
            if w[j - 1]:
                here = max(here, prev[j - 1] + w[j - 1])
            row[j] = here
    pairs = []
    i, j = n, m
    while i and j:
        if best[i][j] == best[i - 1][j]:
            i -= 1
        elif best[i][j] == best[i][j - 1]:
            j -= 1
        else:
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
    return pairs[::-1]


class ClientCheck:
    """One client's statements, as the server ran them, against its ledger events.

    Both are in the same order (a client waits for each batch's answer before the next; the
    ledger is written in the order messages arrive, the log in the order the server runs them),
    so they are matched by a monotone alignment on text: a statement is never paired with an
    event recorded for an attempt before or after it. A match to an event with an outcome
    weighs more than one to an event the ledger says did not run. SELECTs bound and never run
    (logged at Bind) take part as anchors: they match the refused or skipped Execute."""

    def __init__(self, run: ClientRun, events: Sequence[Event], pii: Iterable[str]) -> None:
        self.run = run
        self.events = sorted(events, key=lambda ev: int(ev.get("seq") or 0))
        self.norms = [_norm(ev.get("statement"), run.scs) for ev in self.events]
        self.expected: list[Expected] = []
        self.bound: list[Expected] = []  # SELECTs bound and never run: anchors, not checked
        self.pii = tuple(pii)
        self.report = Report()

    def flag(self, klass: str, detail: str) -> None:
        r = self.run
        self.report.mismatches.append(Mismatch(klass, r.mode, r.scenario, r.client, detail, r.app))

    def leaked(self, marks: Iterable[Mark], where: str) -> None:
        for mark in marks:
            if mark.leaked:
                self.flag("identity_leaked", f"scalple.user={mark.leaked!r} upstream at {where}")

    def add(self, e: Expected) -> None:
        counts = self.report.counts
        self.leaked(e.marks, repr(_short(e.statement)))
        if not e.ran:
            counts["statements bound, never run"] += 1
            self.bound.append(e)
            return
        counts["statements run"] += 1
        expect_actor(e, self.run)
        if e.data and e.actor_known and e.actor is None:
            self.flag("unattributed_ran", f"ran with no identity: {_short(e.statement)!r}")
        self.expected.append(e)

    def _weights(self, e: Expected) -> list[int]:
        """4 for an event of the statement's text that ran (ok, or an outcome still owed), 3 for
        one that failed (it may have failed before running: a Bind refused, a plan's error), 1
        for one the ledger says did not run; a statement bound but never run matches only the
        latter."""
        accepted, anyway, ran = e.accepted, e.anyway, e.ran
        out = []
        for n, ev in zip(self.norms, self.events, strict=True):
            status = ev.get("status")
            if n is None or (n not in accepted and n not in anyway):
                out.append(0)
            elif status in ("refused", "skipped"):
                out.append(1)
            elif not ran:
                out.append(0)
            else:
                out.append(3 if status in ("error", "cancelled") else 4)
        return out

    def finish(self) -> Report:
        rows = sorted(self.expected + self.bound, key=lambda e: e.run_order)
        pairs = self._explained(rows, dict(align([self._weights(e) for e in rows])))
        used = set(pairs.values())
        for i, e in enumerate(rows):
            if not e.ran:
                continue
            j = pairs.get(i)
            if j is None:
                self.flag(
                    "missing", f"server ran {_short(e.statement)!r}; ledger: {self._near(used)}"
                )
            else:
                self.compare(e, self.events[j])
        self._phantoms(used)
        self._pii()
        return self.report

    def _good(self, j: int) -> bool:
        return self.events[j].get("status") not in ("refused", "skipped")

    def _explained(self, rows: list[Expected], pairs: dict[int, int]) -> dict[int, int]:
        """Drop the match of a run to an event the ledger says did not run when another event
        is left unexplained between the runs around it that matched events that ran: the run
        is more likely that event, recorded under another text."""
        out = dict(pairs)
        used = set(pairs.values())
        for i, j in pairs.items():
            if not rows[i].ran or self._good(j):
                continue
            anchors = [(r, k) for r, k in pairs.items() if rows[r].ran and self._good(k)]
            low = max((k for r, k in anchors if r < i), default=-1)
            high = min((k for r, k in anchors if r > i), default=len(self.events))
            if any(k not in used and self._loose(k) for k in range(low + 1, high)):
                del out[i]
        return out

    def _loose(self, k: int) -> bool:
        return self._good(k) and may_record_a_run(self.events[k], self.run.scs)

    def compare(self, e: Expected, ev: Event) -> None:
        counts = self.report.counts
        counts["statements compared"] += 1
        self.report.matches.append((e, ev))
        if ev.get("status") in ("refused", "skipped"):
            self.flag(f"{ev.get('status')}_ran", f"ledger {_event_text(ev)} but the server ran it")
        if e.tables is not None:
            counts["tables compared"] += 1
            got = frozenset(ev.get("tables") or ())
            if got != e.tables:
                self.flag(
                    "tables",
                    f"{_short(e.statement)!r}: server touched {sorted(e.tables)}, "
                    f"ledger says {sorted(got)}",
                )
        if e.actor_known:
            counts["actors compared"] += 1
            if ev.get("actor") != e.actor:
                self.flag(
                    "actor",
                    f"{_short(e.statement)!r}: PostgreSQL's actor {e.actor!r}, "
                    f"ledger {ev.get('actor')!r} ({ev.get('identity_source')})",
                )

    def _near(self, used: set[int]) -> str:
        rest = [ev for j, ev in enumerate(self.events) if j not in used]
        return "; ".join(_event_text(ev) for ev in rest[:3]) or "(no unmatched events)"

    def _phantoms(self, used: set[int]) -> None:
        for j, ev in enumerate(self.events):
            if j in used or ev.get("status") != "ok" or unlogged(ev.get("statement"), self.run.scs):
                continue
            if ev.get("command_tag") == "ROLLBACK":
                continue  # pgAudit logs no statement of an aborted transaction, its end included
            if self.run.mode == "bouncer" and unlogged_behind_pooler(ev.get("statement")):
                continue  # DISCARD ALL resets the application_name a unit is known by
            self.flag("phantom", f"ledger {_event_text(ev)}; the server logged no such run")

    def _pii(self) -> None:
        for ev in self.events:
            blob = " ".join(
                str(ev.get(k) or "")
                for k in ("statement", "params", "error", "detail", "masked_fields")
            )
            for value in self.pii:
                if value in blob:
                    self.flag(
                        "pii_in_clear",
                        f"{value!r} in clear in {ev.get('event_id')}: {_short(blob, 200)!r}",
                    )
                    break


def check(
    runs: Sequence[ClientRun],
    units: Sequence[Unit],
    marks: Sequence[Mark],
    events: Sequence[Event],
    pii_of: Mapping[int, Iterable[str]],
) -> Report:
    """Every client's statements (in the order the server ran them) against its events."""
    by_app = {r.app: r for r in runs}
    resolver = Resolver({r.app: r.scs for r in runs})
    checks = {
        r.app: ClientCheck(r, [ev for ev in events if ev.get("application_name") == r.app],
                           pii_of.get(r.scenario, ()))
        for r in runs
    }  # fmt: skip
    report = Report()
    expected: list[Expected] = []
    for u in units:
        run = by_app.get(u.app)
        if run is None or u.text == PGBOUNCER_CHECK:
            continue
        e = resolver.resolve(u)
        if e is None:
            report.mismatches.append(
                Mismatch("unresolved", run.mode, run.scenario, run.client,
                         f"{u.command} in {_short(u.text)!r}")
            )  # fmt: skip
            continue
        expected.append(e)
    for mark in attach(expected, marks):
        if mark.app in checks:
            report.counts["marks of no statement"] += 1
            checks[mark.app].leaked([mark], f"backend {mark.pid}")
    for e in expected:
        checks[e.unit.app].add(e)
    blurred = _names_reset_behind_pooler(runs, events)
    for c in checks.values():
        found = c.finish()
        if (c.run.mode, c.run.scenario) in blurred:
            # RESET ALL / DISCARD ALL through PgBouncer resets the application_name of the
            # server connection it ran on, which PgBouncer does not know: later lines on that
            # connection carry another client's name, so who ran what cannot be told apart.
            kept = [m for m in found.mismatches if m.klass in _LEDGER_ONLY]
            report.counts["mismatches set aside (application_name reset)"] += len(
                found.mismatches
            ) - len(kept)
            found.mismatches[:] = kept
        report.merge(found)
    report.counts["clients"] += len(runs)
    report.counts["clients lost"] += sum(1 for r in runs if r.lost)
    return report
