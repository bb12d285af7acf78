"""The rules: one actor-day's value of a metric against the actor's usual day and their peers'.

The same `judge` decides offline (over DuckDB profiles) and live (over the day's counters so
far); `candidate_sql` is its necessary condition in SQL, so DuckDB hands over only the few
actor-days that can be flagged. Pure: no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from scalple.watch.settings import Rule, WatchSettings

# metric column of each rule, and how a summary says what the actor did that day
METRICS: Final = {
    "new_subjects": "new_subjects",
    "subjects": "subjects",
    "rows": "rows_read",
    "bulk": "bulk_reads",
    "tables": "tables",
    "off_hours": "off_hours",
    "refusals": "refusals",
}
_DID: Final = {
    "new_subjects": "touched {x} data subjects new to them (untouched for {novel} days before)",
    "subjects": "looked up {x} distinct data subjects",
    "rows": "read {x} rows",
    "bulk": "ran {x} bulk reads or COPY exports (each ≥ {bulk} rows or a COPY ... TO)",
    "tables": "used {x} distinct tables",
    "off_hours": "ran {x} statements at hours neither they nor their peers usually work",
    "refusals": "had {x} statements refused or denied permission (42501)",
}
HIGH: Final = 3.0
MEDIUM: Final = 1.5


@dataclass(frozen=True)
class Baseline:
    """What one actor-day is compared with. `own_days`: active days in the actor's baseline;
    `peers`: distinct actors in the peer group's baseline (too few: no peer comparison)."""

    own_usual: float
    own_days: int
    peers_p99: float
    peers: int
    group: str


@dataclass(frozen=True)
class Verdict:
    rule: str
    value: float
    score: float
    severity: str
    threshold: float
    why: str  # "baseline" or "cap"


def severity_of(score: float) -> str:
    return "high" if score >= HIGH else "medium" if score >= MEDIUM else "low"


def threshold(rule: Rule, base: Baseline, settings: WatchSettings) -> float:
    """The largest of the floor and the two baselines: the score's denominator."""
    limit = max(rule.floor, rule.own_factor * base.own_usual)
    if base.peers >= settings.min_peers:
        limit = max(limit, rule.peer_factor * base.peers_p99)
    return limit


def _above(rule: Rule, value: float, base: Baseline, settings: WatchSettings) -> bool:
    return (
        base.own_days >= settings.warmup_days
        and value >= rule.floor
        and value > rule.own_factor * base.own_usual
        and (base.peers < settings.min_peers or value > rule.peer_factor * base.peers_p99)
    )


def judge(rule: Rule, value: float, base: Baseline, settings: WatchSettings) -> Verdict | None:
    """Flag `value` when it reaches `floor` and is above both baselines (after the actor's
    warm-up), or reaches the rule's absolute cap."""
    if _above(rule, value, base, settings):
        limit = threshold(rule, base, settings)
        score = value / max(limit, 1.0)
        return Verdict(rule.name, value, round(score, 3), severity_of(score), limit, "baseline")
    if rule.cap and value >= rule.cap:
        score = value / rule.cap
        return Verdict(rule.name, value, round(score, 3), severity_of(score), rule.cap, "cap")
    return None


def candidate_sql(rule: Rule, settings: WatchSettings) -> str:
    """`judge` as a SQL condition over a profile row with its baseline columns (m, own_m,
    own_days, peer_m, peers), so DuckDB hands over only the actor-days that are flagged."""
    m = METRICS[rule.name]
    cond = (
        f"(own_days >= {settings.warmup_days} AND {m} >= {rule.floor} "
        f"AND {m} > {rule.own_factor} * own_{m} "
        f"AND (peers < {settings.min_peers} OR {m} > {rule.peer_factor} * peer_{m}))"
    )
    return f"({cond} OR {m} >= {rule.cap})" if rule.cap else cond


def summary(verdict: Verdict, day: str, base: Baseline, settings: WatchSettings) -> str:
    """Why, in words a compliance officer reads."""
    did = _DID[verdict.rule].format(
        x=_num(verdict.value), novel=settings.novel_days, bulk=f"{settings.bulk_rows:,}"
    )
    parts = [f"{did} on {day}"]
    if base.own_days >= settings.warmup_days:
        parts.append(f"this person's usual day: {_num(base.own_usual)}")
    else:
        parts.append(f"too little history to know this person's usual day ({base.own_days} days)")
    if base.peers >= settings.min_peers:
        parts.append(f"peers' 99th percentile: {_num(base.peers_p99)} ({base.peers} peers)")
    else:
        parts.append(f"too few peers to compare with ({base.peers})")
    if verdict.why == "cap":
        parts.append(f"the absolute cap is {_num(verdict.threshold)}")
    return "; ".join(parts)


def _num(x: float) -> str:
    if math.isclose(x, round(x)):
        return f"{round(x):,}"
    return f"{x:,.1f}"
