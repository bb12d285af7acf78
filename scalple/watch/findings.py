"""Findings: flagged actor-days with their score, words, evidence and the event ids behind them."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from scalple.watch.profile import rows, statement_lists, subject_key
from scalple.watch.rules import METRICS, Baseline, Verdict, candidate_sql, judge, summary
from scalple.watch.settings import WatchSettings

if TYPE_CHECKING:
    import duckdb

EVIDENCE_IDS: Final = 50  # event ids cited per finding; evidence.statements says how many in all
EPOCH: Final = datetime.date(1970, 1, 1)


def day_text(day: int) -> str:
    return (EPOCH + datetime.timedelta(days=day)).isoformat()


def iso(ts: int | None) -> str | None:
    if ts is None:
        return None
    t = datetime.datetime.fromtimestamp(ts / 1e6, datetime.UTC)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Finding:
    actor: str
    rule: str
    score: float
    severity: str
    day: int
    first_ts: int | None
    last_ts: int | None
    summary: str
    evidence: dict[str, Any]
    event_ids: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The shape `scalple anomalies --format json` promises, field for field."""
        return {
            "actor": self.actor,
            "rule": self.rule,
            "score": self.score,
            "severity": self.severity,
            "first_ts": iso(self.first_ts),
            "last_ts": iso(self.last_ts),
            "summary": self.summary,
            "evidence": self.evidence,
            "event_ids": self.event_ids,
        }


def baseline_of(row: Mapping[str, Any], metric: str) -> Baseline:
    return Baseline(
        own_usual=float(row[f"own_{metric}"] or 0),
        own_days=int(row["own_days"] or 0),
        peers_p99=float(row[f"peer_{metric}"] or 0),
        peers=int(row["peers"] or 0),
        group=str(row["grp"]),
    )


def make_finding(
    actor: str, day: int, verdict: Verdict, base: Baseline, settings: WatchSettings
) -> Finding:
    evidence = {
        "day": day_text(day),
        "metric": METRICS[verdict.rule],
        "value": verdict.value,
        "threshold": verdict.threshold,
        "own_usual": base.own_usual,
        "own_days": base.own_days,
        "peers_p99": base.peers_p99,
        "peers": base.peers,
        "peer_group": base.group,
        "flagged_by": verdict.why,
    }
    return Finding(
        actor=actor,
        rule=verdict.rule,
        score=verdict.score,
        severity=verdict.severity,
        day=day,
        first_ts=None,
        last_ts=None,
        summary=summary(verdict, day_text(day), base, settings),
        evidence=evidence,
    )


def judge_row(row: Mapping[str, Any], settings: WatchSettings) -> list[Finding]:
    """Every rule's verdict on one profile row that has its baseline columns."""
    out = []
    for rule in settings.rules:
        metric = METRICS[rule.name]
        base = baseline_of(row, metric)
        verdict = judge(rule, float(row[metric] or 0), base, settings)
        if verdict is not None:
            out.append(make_finding(row["actor"], int(row["day"]), verdict, base, settings))
    return out


def flagged(
    con: duckdb.DuckDBPyConnection,
    settings: WatchSettings,
    first_day: int,
    last_day: int,
    actor: str | None = None,
) -> list[Finding]:
    """Findings on days [first_day, last_day] of table `w_base`, evidence attached."""
    if not settings.rules:
        return []
    cond = " OR ".join(candidate_sql(r, settings) for r in settings.rules)
    params: list[Any] = [first_day, last_day]
    who = ""
    if actor is not None:
        who, params = " AND actor = ?", [*params, actor]
    cur = con.execute(f"SELECT * FROM w_base WHERE day BETWEEN ? AND ?{who} AND ({cond})", params)
    found = [f for row in rows(cur) for f in judge_row(row, settings)]
    attach_evidence(con, found)
    return rank(found)


def rank(found: Iterable[Finding]) -> list[Finding]:
    return sorted(found, key=lambda f: (-f.score, f.day, f.actor, f.rule))


_CONTRIBUTIONS: Final = """
WITH f AS (SELECT * FROM w_flag),
sel AS (SELECT s.*, l.event_id, l.tables, l.subjects FROM w_st s SEMI JOIN f USING (actor, day)
        JOIN w_lists l USING (ts_start, eh)),
c AS (
  SELECT 'subjects' AS rule, event_id, actor, day, ts_start FROM sel WHERE len(subjects) > 0
  UNION ALL SELECT 'rows', event_id, actor, day, ts_start FROM sel WHERE rows_read > 0
  UNION ALL SELECT 'bulk', event_id, actor, day, ts_start FROM sel WHERE bulk
  UNION ALL SELECT 'tables', event_id, actor, day, ts_start FROM sel WHERE len(tables) > 0
  UNION ALL SELECT 'refusals', event_id, actor, day, ts_start FROM sel WHERE refused
  UNION ALL SELECT 'off_hours', s.event_id, s.actor, s.day, s.ts_start
    FROM sel s JOIN w_hours h USING (actor, day, hour) WHERE NOT h.usual
  UNION ALL SELECT DISTINCT 'new_subjects', s.event_id, s.actor, s.day, s.ts_start
    FROM (SELECT event_id, actor, day, ts_start, {key} AS subject FROM sel) s
    JOIN w_touch t USING (actor, day, subject) WHERE t.new
)
SELECT actor, day, rule, count(*) AS n, min(ts_start) AS first_ts, max(ts_start) AS last_ts,
  list(event_id ORDER BY ts_start, event_id)[1:{limit}] AS ids
FROM c JOIN f USING (actor, day, rule) GROUP BY ALL
"""


def attach_evidence(con: duckdb.DuckDBPyConnection, found: list[Finding]) -> None:
    """The statements behind each finding, from table `w_st`: ids, count, first and last time."""
    if not found:
        return
    con.execute("CREATE OR REPLACE TEMP TABLE w_flag (actor VARCHAR, day INTEGER, rule VARCHAR)")
    keys = [(f.actor, f.day, f.rule) for f in found]
    con.executemany("INSERT INTO w_flag VALUES (?, ?, ?)", keys)
    statement_lists(con, "(actor, day) IN (SELECT actor, day FROM w_flag)")
    got = {
        (r["actor"], r["day"], r["rule"]): r
        for r in rows(
            con.execute(
                _CONTRIBUTIONS.format(limit=EVIDENCE_IDS, key=subject_key("unnest(subjects)"))
            )
        )
    }
    for f in found:
        r = got.get((f.actor, f.day, f.rule))
        if r is None:
            continue
        f.first_ts, f.last_ts = r["first_ts"], r["last_ts"]
        f.event_ids = list(r["ids"])
        f.evidence["statements"] = int(r["n"])
