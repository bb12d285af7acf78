"""The live side of the profile: today's counters per actor, kept as records arrive, and the
baselines of today read once from the ledger (DuckDB). The same `judge` as offline decides.

Counters only grow during a day and thresholds are fixed for the day, so a live alert on
(actor, rule, day) fires exactly when the offline profile of the whole day is flagged; live,
it fires as soon as the day's count so far gets there.
"""

from __future__ import annotations

import datetime
import fnmatch
import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from scalple.events import AuditEvent
from scalple.watch.findings import Finding, make_finding
from scalple.watch.profile import (
    COUNTERS,
    DAY_US,
    GROUP_HOUR_SHARE,
    HOUR_US,
    USUAL_HOUR_DAYS,
    peer_days,
    rows,
)
from scalple.watch.rules import METRICS, Baseline, judge
from scalple.watch.settings import WatchSettings

EVIDENCE_IDS: Final = 50
PENDING_MAX: Final = 200_000  # statements waiting for their outcome; the oldest are forgotten
RULE_BITS: Final = {name: 1 << i for i, name in enumerate(METRICS)}


def subject_key(h: str) -> int:
    """`profile.subject_key` of a subject hash, kept as an int (half the memory of the str)."""
    return int(h[:12], 16)


class Clock:
    """Local day and hour of µs timestamps in one time zone (offsets cached per hour)."""

    def __init__(self, timezone: str) -> None:
        self.zone = None if timezone == "UTC" else zoneinfo.ZoneInfo(timezone)
        self._hour = -1
        self._offset = 0

    def local(self, ts: int) -> int:
        if self.zone is None:
            return ts
        hour = ts // HOUR_US
        if hour != self._hour:
            t = datetime.datetime.fromtimestamp(ts / 1e6, self.zone)
            off = t.utcoffset()
            self._hour, self._offset = hour, int(off.total_seconds() * 1e6) if off else 0
        return ts + self._offset


def group_key(settings: WatchSettings, actor: str, db_role: str | None, app: str | None) -> str:
    """As `profile.group_sql` says it, for one statement."""
    for name, patterns in settings.peer_groups.items():
        if any(fnmatch.fnmatchcase(actor, p) for p in patterns):
            return "group:" + name
    role, application = db_role or "", app or ""
    return {
        "role_app": f"{role}/{application}",
        "role": role,
        "app": application,
        "none": "all",
    }[settings.peer_by]


@dataclass
class Evidence:
    n: int = 0
    first_ts: int | None = None
    last_ts: int | None = None
    ids: list[str] = field(default_factory=list)

    def add(self, event_id: str, ts: int) -> None:
        self.n += 1
        self.first_ts = ts if self.first_ts is None else min(self.first_ts, ts)
        self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)
        if len(self.ids) < EVIDENCE_IDS:
            self.ids.append(event_id)


@dataclass
class ActorDay:
    grp: str
    statements: int = 0
    rows_read: int = 0
    bulk_reads: int = 0
    refusals: int = 0
    off_hours: int = 0
    subjects: set[int] = field(default_factory=set)
    new: set[int] = field(default_factory=set)
    tables: set[str] = field(default_factory=set)
    evidence: dict[str, Evidence] = field(default_factory=dict)

    def value(self, metric: str) -> float:
        if metric == "subjects":
            return len(self.subjects)
        if metric == "new_subjects":
            return len(self.new)
        if metric == "tables":
            return len(self.tables)
        return float(getattr(self, metric))

    def cite(self, rule: str, event_id: str, ts: int, mask: list[int]) -> None:
        """Count the statement `event_id` once as evidence for `rule`."""
        bit = RULE_BITS[rule]
        if mask[0] & bit:
            return
        mask[0] |= bit
        self.evidence.setdefault(rule, Evidence()).add(event_id, ts)


@dataclass
class Baselines:
    """Today's baselines: own (per actor), peers (per group), usual hours, subjects seen."""

    day: int
    own: dict[str, dict[str, float]] = field(default_factory=dict)  # + "days"
    peers: dict[str, dict[str, float]] = field(default_factory=dict)  # + "peers"
    hours: dict[str, set[int]] = field(default_factory=dict)
    group_hours: dict[str, set[int]] = field(default_factory=dict)
    seen: dict[str, set[int]] = field(default_factory=dict)

    def of(self, actor: str, grp: str, metric: str) -> Baseline:
        own, peer = self.own.get(actor, {}), self.peers.get(grp, {})
        return Baseline(
            own_usual=own.get(metric, 0.0),
            own_days=int(own.get("days", 0)),
            peers_p99=peer.get(metric, 0.0),
            peers=int(peer.get("peers", 0)),
            group=grp,
        )


class Today:
    """The counters of one local day; fed statement and outcome records in ledger order."""

    def __init__(self, settings: WatchSettings, base: Baselines) -> None:
        self.settings, self.base, self.day = settings, base, base.day
        self.actors: dict[str, ActorDay] = {}
        # event_id -> [actor, is_read, cited-rules mask]
        self.pending: dict[str, tuple[str, bool, list[int]]] = {}
        self.dirty: set[str] = set()
        self.late = 0

    def statement(
        self,
        actor: str,
        event_id: str,
        ts: int,
        hour: int,
        grp: str,
        tables: Iterable[str],
        subjects: Iterable[str],
        is_read: bool,
    ) -> None:
        ad = self.actors.get(actor)
        if ad is None:
            ad = self.actors[actor] = ActorDay(grp)
        mask = [0]
        ad.statements += 1
        if hour not in self.base.hours.get(actor, ()) and hour not in self.base.group_hours.get(
            ad.grp, ()
        ):
            ad.off_hours += 1
            ad.cite("off_hours", event_id, ts, mask)
        tables = tuple(tables)
        if tables:
            ad.tables.update(tables)
            ad.cite("tables", event_id, ts, mask)
        self._touch(actor, ad, event_id, ts, subjects, mask)
        if len(self.pending) >= PENDING_MAX:
            del self.pending[next(iter(self.pending))]
        self.pending[event_id] = (actor, is_read, mask)
        self.dirty.add(actor)

    def outcome(
        self,
        event_id: str,
        ts: int,
        rows_read: int,
        bulk: bool,
        refused: bool,
        subjects: Iterable[str],
    ) -> None:
        got = self.pending.pop(event_id, None)
        if got is None:
            return  # its statement was on another day (or before we started)
        actor, is_read, mask = got
        ad = self.actors[actor]
        if is_read and rows_read > 0:
            ad.rows_read += rows_read
            ad.cite("rows", event_id, ts, mask)
        if is_read and bulk:
            ad.bulk_reads += 1
            ad.cite("bulk", event_id, ts, mask)
        if refused:
            ad.refusals += 1
            ad.cite("refusals", event_id, ts, mask)
        self._touch(actor, ad, event_id, ts, subjects, mask)
        self.dirty.add(actor)

    def _touch(
        self,
        actor: str,
        ad: ActorDay,
        event_id: str,
        ts: int,
        subjects: Iterable[str],
        mask: list[int],
    ) -> None:
        keys = [subject_key(s) for s in subjects]
        if not keys:
            return
        seen = self.base.seen.get(actor, set())
        for k in keys:
            if k not in ad.subjects:
                ad.subjects.add(k)
                if k not in seen:
                    ad.new.add(k)
        ad.cite("subjects", event_id, ts, mask)
        if any(k in ad.new for k in keys):
            ad.cite("new_subjects", event_id, ts, mask)

    def judge(self, actor: str) -> list[Finding]:
        """Every rule's verdict on `actor`'s day so far."""
        ad = self.actors.get(actor)
        if ad is None:
            return []
        out = []
        for rule in self.settings.rules:
            metric = METRICS[rule.name]
            base = self.base.of(actor, ad.grp, metric)
            verdict = judge(rule, ad.value(metric), base, self.settings)
            if verdict is None:
                continue
            f = make_finding(actor, self.day, verdict, base, self.settings)
            ev = ad.evidence.get(rule.name, Evidence())
            f.first_ts, f.last_ts, f.event_ids = ev.first_ts, ev.last_ts, list(ev.ids)
            f.evidence["statements"] = ev.n
            out.append(f)
        return out


class Feed:
    """Turns ledger records into `Today` calls: day changes, allow-list, statement/outcome."""

    def __init__(self, settings: WatchSettings) -> None:
        self.settings = settings
        self.clock = Clock(settings.timezone)

    def day_of(self, ts: int) -> int:
        return self.clock.local(ts) // DAY_US

    def apply(self, today: Today, e: AuditEvent) -> None:
        local = self.clock.local(e.ts_start)
        if local // DAY_US != today.day:
            today.late += 1
            return
        if e.kind == "statement":
            actor = e.actor
            if actor is None or self.settings.allowed(actor):
                return
            grp = group_key(self.settings, actor, e.db_role, e.application_name)
            hour = local // HOUR_US % 24
            today.statement(
                actor, e.event_id, e.ts_start, hour, grp, e.tables, e.subjects,
                e.audit_class == "READ",
            )  # fmt: skip
        elif e.kind == "outcome":
            rows = e.rows or 0
            bulk = rows >= self.settings.bulk_rows or (e.command_tag or "").startswith("COPY")
            refused = e.status == "refused" or e.sqlstate == "42501"
            today.outcome(e.event_id, e.ts_start, rows, bulk, refused, e.subjects)


# -- reading today's baselines from the ledger ----------------------------------------------------


def read_baselines(con: Any, settings: WatchSettings, day: int) -> Baselines:
    """Baselines of `day` from tables `w_day`, `w_hours`, `w_touch` (see `profile`): the same
    frames the offline window functions use, as plain aggregates over the days before `day`."""
    lo, hi = day - settings.baseline_days, day - 1
    base = Baselines(day)
    own = ", ".join(f"median({m}) AS {m}" for m in COUNTERS)
    for r in rows(con.execute(
        f"SELECT actor, count(*) AS days, {own} FROM w_day WHERE day BETWEEN ? AND ? "
        "GROUP BY actor", [lo, hi],
    )):  # fmt: skip
        actor = r.pop("actor")
        base.own[actor] = {k: float(v or 0) for k, v in r.items()}
    peer = ", ".join(f"median(q_{m}) AS {m}" for m in COUNTERS)
    for r in rows(con.execute(
        f"SELECT grp, max(actors) AS peers, {peer} FROM ({peer_days()}) "
        "WHERE day BETWEEN ? AND ? GROUP BY grp", [lo, hi],
    )):  # fmt: skip
        grp = r.pop("grp")
        base.peers[grp] = {k: float(v or 0) for k, v in r.items()}
    for actor, hours in con.execute(
        "SELECT actor, list(hour) FROM (SELECT actor, hour, count(*) AS days FROM w_ahours "
        "WHERE day BETWEEN ? AND ? GROUP BY ALL) WHERE days >= ? GROUP BY actor",
        [lo, hi, USUAL_HOUR_DAYS],
    ).fetchall():
        base.hours[actor] = set(hours)
    for grp, hours in con.execute(
        "SELECT grp, list(hour) FROM (SELECT grp, hour, sum(actors) AS at_hour FROM w_ghours "
        "WHERE day BETWEEN $lo AND $hi GROUP BY ALL) JOIN (SELECT grp, count(*) AS total "
        "FROM w_day0 WHERE day BETWEEN $lo AND $hi GROUP BY grp) USING (grp) "
        "WHERE at_hour >= $share * total GROUP BY grp",
        {"lo": lo, "hi": hi, "share": GROUP_HOUR_SHARE},
    ).fetchall():
        base.group_hours[grp] = set(hours)
    for actor, subjects in con.execute(
        "SELECT actor, list(DISTINCT subject) FROM w_touch WHERE day BETWEEN ? AND ? "
        "GROUP BY actor",
        [day - settings.novel_days, hi],
    ).fetchall():
        base.seen[actor] = {int(k, 16) for k in subjects}
    return base


def load(
    ledger: Path, settings: WatchSettings, day: int, before_us: int
) -> tuple[Baselines, list[dict[str, Any]]]:
    """Baselines of `day`, and the statements of `day` recorded before `before_us` (merged with
    their outcomes) for `replay`: what a watcher starting mid-day has missed."""
    from scalple.dsar.query import connect
    from scalple.ledger.query import ledger_view
    from scalple.watch.investigate import history_days
    from scalple.watch.profile import profile, statement_lists

    lo = (day - history_days(settings) - 1) * DAY_US
    con = connect()
    try:
        ledger_view(con, ledger)
        profile(con, settings, max(lo, 0), before_us)
        base = read_baselines(con, settings, day)
        statement_lists(con, f"day = {int(day)}")
        earlier = rows(con.execute(
            "SELECT event_id, actor, ts_start, hour, grp, tables, subjects, rows_read, bulk, "
            "refused FROM w_st JOIN w_lists USING (ts_start, eh) WHERE day = ? "
            "ORDER BY ts_start, seq",
            [day],
        ))  # fmt: skip
    finally:
        con.close()
    return base, earlier


def replay(today: Today, earlier: Iterable[Mapping[str, Any]]) -> None:
    """Feed statements read back from the ledger (outcome merged) into `today`."""
    for r in earlier:
        today.statement(
            r["actor"], r["event_id"], r["ts_start"], r["hour"], r["grp"], r["tables"] or (),
            r["subjects"] or (), True,
        )  # fmt: skip
        today.outcome(r["event_id"], r["ts_start"], r["rows_read"], r["bulk"], r["refused"], ())
