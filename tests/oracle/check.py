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
  comments and spacing ignored: masking may change those). For `EXECUTE name` the prepared
  body matches too, and for FETCH/MOVE the cursor's query (as PREPARE / DECLARE on that backend
  defined them): the ledger may record the command or the statement it runs. Each event matches
  one unit, earliest first, events the ledger calls refused/skipped last.
- Tables: the relations pgAudit logged for the unit and the query it ran (`log_relation`); for
  FETCH/MOVE those of the cursor's DECLARE on the same backend. Compared for data commands.
- Actor: a client not in trusted_roles has none, whatever it claims. Otherwise a real
  sqlcommenter comment opening or closing S (as the server's lexer sees comments) names it;
  else, with the proxy straight in front of PostgreSQL, the shadow.actor its mark saw (the
  startup option is the session default); else an `anonymous` client (one that never claims)
  has none; else the actor is not known and not compared.
- A data statement (not transaction control) that ran with no actor breaks require_identity.
- A ledger event with status ok that matched no unit is a phantom, unless its command is one
  pgAudit does not log (SET, RESET) or it has no text.
"""

from __future__ import annotations

import bisect
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
    "refused_ran": "a statement the ledger calls refused or skipped ran on the server",
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
_RANK: Mapping[object, int] = {"ok": 0, "error": 0, "cancelled": 0, "refused": 2, "skipped": 2}


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


def _norm(text: str | None, scs: bool) -> str | None:
    if text is None:
        return None
    try:
        return sqltext.normalize(text, scs)
    except sqltext.LexError:
        return None


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


class ClientCheck:
    """One client's statements, as the server ran them, against its ledger events."""

    def __init__(self, run: ClientRun, events: Sequence[Event], pii: Iterable[str]) -> None:
        self.run = run
        self.events = sorted(events, key=lambda ev: int(ev.get("seq") or 0))
        self.norms = [_norm(ev.get("statement"), run.scs) for ev in self.events]
        self.used: set[int] = set()
        self.pii = tuple(pii)
        self.report = Report()

    def flag(self, klass: str, detail: str) -> None:
        r = self.run
        self.report.mismatches.append(Mismatch(klass, r.mode, r.scenario, r.client, detail))

    def match(self, e: Expected) -> Event | None:
        """The earliest unmatched event with the statement's text: one with an outcome before
        one that never got it, before one the ledger says did not run."""
        found = [i for i, n in enumerate(self.norms) if i not in self.used and n in e.accepted]
        if not found:
            return None
        pick = min(found, key=lambda i: (_RANK.get(self.events[i].get("status"), 1), i))
        self.used.add(pick)
        return self.events[pick]

    def leaked(self, marks: Iterable[Mark], where: str) -> None:
        for mark in marks:
            if mark.leaked:
                self.flag("identity_leaked", f"scalple.user={mark.leaked!r} upstream at {where}")

    def compare(self, e: Expected) -> None:
        counts = self.report.counts
        self.leaked(e.marks, repr(_short(e.statement)))
        if not e.ran:
            counts["statements bound, never run"] += 1
            return
        counts["statements run"] += 1
        expect_actor(e, self.run)
        if e.data and e.actor_known and e.actor is None:
            self.flag("unattributed_ran", f"ran with no identity: {_short(e.statement)!r}")
        ev = self.match(e)
        if ev is None:
            self.flag("missing", f"server ran {_short(e.statement)!r}; ledger: {self._near()}")
            return
        counts["statements compared"] += 1
        self.report.matches.append((e, ev))
        if ev.get("status") in ("refused", "skipped"):
            self.flag("refused_ran", f"ledger {_event_text(ev)} but the server ran it")
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

    def _near(self) -> str:
        rest = [self.events[i] for i in range(len(self.events)) if i not in self.used]
        return "; ".join(_event_text(ev) for ev in rest[:3]) or "(no unmatched events)"

    def finish(self) -> Report:
        for i, ev in enumerate(self.events):
            text = ev.get("statement") or ""
            if i in self.used or ev.get("status") != "ok" or not text.strip():
                continue
            try:
                command = sqltext.command(text, self.run.scs)
            except sqltext.LexError:
                command = "?"
            if command not in sqltext.UNLOGGED:
                self.flag("phantom", f"ledger {_event_text(ev)}; the server logged no such run")
        self._pii()
        return self.report

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
        checks[e.unit.app].compare(e)
    for c in checks.values():
        report.merge(c.finish())
    report.counts["clients"] += len(runs)
    report.counts["clients lost"] += sum(1 for r in runs if r.lost)
    return report
