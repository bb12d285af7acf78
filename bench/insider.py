"""Replay of the Intesa Sanpaolo case: can Scalple catch an insider among 2,000 colleagues?

    python bench/insider.py OUT [--employees 2000] [--days 460] [--lead-in 130]

Writes OUT/ledger through the real ledger writer (`LedgerSink`, the proxy's chain, journal and
sealing; appended a day at a time): `--employees` people doing case-bound work on their own
customers over `--lead-in` + `--days` working days, and one insider who, from the end of the
lead-in on, spreads 6,637 lookups over 3,573 customers he has no case for among his normal work
(as the Intesa employee did over 460 working days). Then it runs `scalple anomalies` over the
whole replay and the live rules (the watcher's own `Today` and `Feed`, fed the ledger's records
day by day) around the insider's start, and prints:

- the working day the insider is first flagged, counted from his first snoop (target: ≤ 5),
- false alerts per 1,000 actor-days (everyone but the insider; target: ≤ 1),
- the run time of `scalple anomalies` over the whole replay (target: < 60 s).

The ordinary world has what makes false alarms: people of different pace, busy days, leave,
new customers joining portfolios, overtime, the odd permission error, and a BI team exporting
thousands of rows a day (its own peer group: another application).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from scalple.analysis.subjects import SubjectHasher
from scalple.events import AuditEvent
from scalple.ledger import open_sink
from scalple.ledger.keys import subject_secret
from scalple.watch.synthetic import DAY_US, HOUR_US, Desk, Pairs, office_days

INTESA_LOOKUPS: Final = 6_637
INTESA_CUSTOMERS: Final = 3_573
BRANCH: Final = Desk(application_name="branch-app")
BI: Final = Desk(application_name="bi-tool", identity_source="proxy_auth")
EXPORT: Final = "COPY (SELECT id, name, email FROM customers WHERE branch = $1) TO STDOUT"


@dataclass
class Employee:
    name: str
    pace: float  # mean lookups per working day
    start_hour: int
    portfolio: list[int]
    bi: bool = False
    leave: set[int] = field(default_factory=set)  # working-day indexes on leave


class World:
    def __init__(self, employees: int, days: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.days = days
        self.next_customer = 1
        self.people = [self._employee(i) for i in range(employees)]
        self.insider = self.people[len(self.people) // 3]

    def _customers(self, n: int) -> list[int]:
        first, self.next_customer = self.next_customer, self.next_customer + n
        return list(range(first, first + n))

    def _employee(self, i: int) -> Employee:
        rng = self.rng
        bi = i % 100 == 99  # 1 in 100: the BI team
        e = Employee(
            name=f"emp{i:05d}@bank.example",
            pace=min(30.0, max(3.0, rng.lognormvariate(math.log(10), 0.4))),
            start_hour=rng.choice((7, 8, 8, 9, 9, 9, 10)),
            portfolio=self._customers(rng.randint(120, 400)),
            bi=bi,
        )
        for _ in range(2 * (self.days // 250 + 1)):  # two leaves of one to two weeks a year
            first = rng.randrange(self.days)
            e.leave.update(range(first, first + rng.randint(5, 10)))
        e.leave.update(d for d in range(self.days) if rng.random() < 0.02)  # sick days
        return e


@dataclass
class Snooping:
    """The insider's lookups per snooping day: 6,637 in all over 3,573 customers."""

    per_day: list[int]
    customers: list[int]


def snooping(world: World, days: int, lead_in: int) -> Snooping:
    """On about 70% of the days he is at work (never on leave), a day's share drawn at random."""
    rng, away = world.rng, world.insider.leave
    weights = [
        rng.expovariate(1.0) if rng.random() < 0.7 and lead_in + i not in away else 0.0
        for i in range(days)
    ]
    total = sum(weights)
    per_day = [int(w / total * INTESA_LOOKUPS) for w in weights]
    for i in rng.sample([i for i in range(days) if weights[i]], INTESA_LOOKUPS - sum(per_day)):
        per_day[i] += 1
    return Snooping(per_day, world._customers(INTESA_CUSTOMERS))


class Replay:
    def __init__(self, world: World, secret: bytes, lead_in: int, days: list[int]) -> None:
        self.world, self.lead_in, self.days = world, lead_in, days
        self.hasher = SubjectHasher(secret)
        self.hashes: dict[int, str] = {}
        self.pairs = Pairs("r")
        self.snoop = snooping(world, len(days) - lead_in, lead_in)
        self.lookups = 0
        self.snooped: list[int] = []
        self.first_snoop_day: int | None = None
        self.fresh = iter(self.snoop.customers)

    def subject(self, c: int) -> str:
        h = self.hashes.get(c)
        if h is None:
            h = self.hashes[c] = self.hasher("customer", str(c))
        return h

    def _ts(self, day: int, e: Employee) -> int:
        rng = self.world.rng
        hour = e.start_hour + min(8.99, rng.expovariate(1 / 4.0))
        return day * DAY_US + int(hour * HOUR_US)

    def _lookup(self, out: list[AuditEvent], e: Employee, ts: int, c: int, desk: Desk) -> None:
        rng = self.world.rng
        out += self.pairs.lookup(e.name, ts, self.subject(c), desk)
        if rng.random() < 0.4:
            out += self.pairs.lookup(e.name, ts + 5_000_000, self.subject(c), desk, orders=True)

    def employee_day(self, out: list[AuditEvent], e: Employee, k: int, day: int) -> None:
        rng = self.world.rng
        if k in e.leave:
            return
        if rng.random() < 0.3:  # a new customer joins the portfolio, an old one leaves
            e.portfolio[rng.randrange(len(e.portfolio))] = self.world._customers(1)[0]
        busy = rng.gammavariate(8.0, 1 / 8.0)
        n = max(0, round(rng.gauss(e.pace * busy, math.sqrt(e.pace * busy))))
        p = e.portfolio
        for _ in range(n):
            self._lookup(out, e, self._ts(day, e), p[int(len(p) * rng.random() ** 2)], BRANCH)
        if rng.random() < 0.02:  # overtime: a few lookups in the evening
            for _ in range(rng.randint(1, 6)):
                ts = day * DAY_US + int((e.start_hour + 9 + rng.random() * 2) * HOUR_US)
                self._lookup(out, e, ts, p[rng.randrange(len(p))], BRANCH)
        if rng.random() < 0.001:
            self._denied(out, e, self._ts(day, e))
        if e.bi:
            self._export(out, e, self._ts(day, e))
        if e is self.world.insider and k >= self.lead_in:
            self._snoop(out, e, k - self.lead_in, day)

    def _snoop(self, out: list[AuditEvent], e: Employee, s: int, day: int) -> None:
        rng = self.world.rng
        for _ in range(self.snoop.per_day[s]):
            c = next(self.fresh, None)
            if self.snooped and (c is None or rng.random() < 1 - INTESA_CUSTOMERS / INTESA_LOOKUPS):
                if c is not None:
                    self.fresh = iter([c, *self.fresh])
                c = rng.choice(self.snooped)
            else:
                assert c is not None
                self.snooped.append(c)
            if self.first_snoop_day is None:
                self.first_snoop_day = day
            self.lookups += 1
            out += self.pairs.lookup(e.name, self._ts(day, e), self.subject(c), BRANCH)

    def _denied(self, out: list[AuditEvent], e: Employee, ts: int) -> None:
        st, oc = self.pairs.lookup(e.name, ts, self.subject(e.portfolio[0]), BRANCH)
        out += [st, _replace(oc, status="error", sqlstate="42501", rows=None, subjects=())]

    def _export(self, out: list[AuditEvent], e: Employee, ts: int) -> None:
        rng = self.world.rng
        rows = rng.randint(2000, 8000)
        st, oc = self.pairs.lookup(e.name, ts, self.subject(e.portfolio[0]), BI)
        some = [self.subject(c) for c in rng.sample(e.portfolio, min(100, len(e.portfolio)))]
        out += [
            _replace(st, statement=EXPORT, subjects=()),
            _replace(oc, rows=rows, command_tag=f"COPY {rows}", subjects=tuple(some)),
        ]

    def day_events(self, k: int, day: int) -> list[AuditEvent]:
        out: list[AuditEvent] = []
        for e in self.world.people:
            self.employee_day(out, e, k, day)
        out.sort(key=lambda ev: ev.ts_start)
        return out


def _replace(e: AuditEvent, **changes: Any) -> AuditEvent:
    import msgspec

    return msgspec.structs.replace(e, **changes)


def write(out: Path, a: argparse.Namespace) -> dict[str, Any]:
    ledger, keys = out / "ledger", out / "keys"
    if ledger.exists():
        raise SystemExit(f"{ledger} exists; remove it first")
    today = time.time_ns() // 1000 // DAY_US
    days = office_days(today, a.lead_in + a.days)
    world = World(a.employees, len(days), a.seed)
    replay = Replay(world, subject_secret(keys), a.lead_in, days)
    sink = open_sink(ledger, "os", key_dir=str(keys))
    started, events = time.monotonic(), 0
    for k, day in enumerate(days):
        batch = replay.day_events(k, day)
        sink.append_sync(batch)
        events += len(batch)
        if k % 20 == 0:
            rate = events / (time.monotonic() - started)
            print(f"  day {k}/{len(days)}: {events:,} events ({rate:,.0f}/s)", file=sys.stderr)
    sink.close()
    seconds = time.monotonic() - started
    meta = {
        "employees": a.employees,
        "working_days": len(days),
        "lead_in": a.lead_in,
        "first_day": days[0],
        "last_day": days[-1],
        "insider": world.insider.name,
        "first_snoop_day": replay.first_snoop_day,
        "snoop_days": [days[a.lead_in + i] for i, n in enumerate(replay.snoop.per_day) if n],
        "lookups": replay.lookups,
        "customers": len(set(replay.snooped)),
        "events": events,
        "write_seconds": round(seconds, 1),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    (out / "scalple.toml").write_text(
        f'[ledger]\nledger = "{ledger}"\nkey_dir = "{keys}"\n'
        '[analysis]\nsubject_columns = { "customers.id" = "customer" }\n'
    )
    return meta


def working_days_between(days: list[int], a: int, b: int) -> int:
    return sum(1 for d in days if a <= d <= b)


def offline(out: Path, meta: dict[str, Any]) -> dict[str, Any]:
    from scalple.watch.findings import day_text

    since = day_text(meta["first_day"])
    report = out / "anomalies.json"
    cmd = [sys.executable, "-m", "scalple", "anomalies", "--since", since, "--format", "json",
           "--out", str(report), "-c", str(out / "scalple.toml")]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if proc.returncode not in (0, 1):
        raise SystemExit(f"scalple anomalies failed ({proc.returncode}): {proc.stderr}")
    findings = json.loads(report.read_text())["findings"]
    return {"seconds": seconds, "findings": findings, "cmd": " ".join(cmd[2:])}


def actor_days(out: Path, meta: dict[str, Any]) -> int:
    import duckdb

    from scalple.ledger.query import events_view

    con = duckdb.connect()
    events_view(con, out / "ledger")
    got = con.execute(
        f"SELECT count(DISTINCT (actor, ts_start // {DAY_US})) FROM events "
        "WHERE kind = 'statement' AND actor <> ?",
        [meta["insider"]],
    ).fetchone()
    return int(got[0]) if got else 0


def live(
    out: Path, meta: dict[str, Any], before: int, after: int
) -> list[tuple[str, str, int, str]]:
    """The live rules over the days around the insider's start: baselines read from the ledger
    each day as the watcher does, the day's records fed one by one through `Feed` and `Today`,
    each actor judged after every record it touched (as the watcher's one-second pass would)."""
    import duckdb

    from scalple.ledger.query import events_view
    from scalple.watch.investigate import history_days
    from scalple.watch.profile import profile
    from scalple.watch.settings import SEVERITIES, WatchSettings
    from scalple.watch.today import Feed, Today, read_baselines

    settings = WatchSettings.defaults()
    first = meta["first_snoop_day"]
    all_days = [d for d in range(meta["first_day"], meta["last_day"] + 1) if (d + 3) % 7 < 5]
    i = all_days.index(first)
    window = all_days[max(0, i - before) : i + after + 1]
    con = duckdb.connect()
    events_view(con, out / "ledger")
    lo = (window[0] - history_days(settings) - 1) * DAY_US
    profile(con, settings, max(lo, 0), (window[-1] + 1) * DAY_US)
    import msgspec

    feed = Feed(settings)
    raised: dict[tuple[str, str, int], str] = {}
    for day in window:
        today = Today(settings, read_baselines(con, settings, day))
        cur = con.execute(
            "SELECT * EXCLUDE (prev_hash, hash) FROM events WHERE ts_start >= ? AND ts_start < ? "
            "ORDER BY seq", [day * DAY_US, (day + 1) * DAY_US],
        )  # fmt: skip
        names = [d[0] for d in cur.description or ()]
        while batch := cur.fetchmany(50_000):
            for r in batch:
                e = msgspec.convert(dict(zip(names, r, strict=True)), AuditEvent)
                feed.apply(today, e)
                for actor in today.dirty:
                    for f in today.judge(actor):
                        rank = SEVERITIES.index(f.severity)
                        key = (f.actor, f.rule, day)
                        if rank >= 1 and rank > SEVERITIES.index(raised.get(key, "low")):
                            raised[key] = f.severity  # raised, or raised again as it grew
                today.dirty.clear()
    return [(a, r, d, s) for (a, r, d), s in raised.items()]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--employees", type=int, default=2000)
    p.add_argument("--days", type=int, default=460, help="working days of snooping")
    p.add_argument(
        "--lead-in", type=int, default=130, help="working days before the first snoop (6 months)"
    )
    p.add_argument("--seed", type=int, default=14)
    p.add_argument("--live-window", type=int, default=10, help="working days live, either side")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    meta_path = a.out / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else write(a.out, a)
    print(
        f"ledger: {meta['events']:,} events, {meta['employees']:,} employees, "
        f"{meta['working_days']} working days, written through LedgerSink in "
        f"{meta['write_seconds']:.0f} s ({meta['events'] / meta['write_seconds']:,.0f}/s)"
    )
    print(
        f"insider {meta['insider']}: {meta['lookups']:,} lookups of {meta['customers']:,} "
        f"customers on {len(meta['snoop_days'])} of {meta['working_days'] - meta['lead_in']} "
        "working days"
    )
    off = offline(a.out, meta)
    days = [d for d in range(meta["first_day"], meta["last_day"] + 1) if (d + 3) % 7 < 5]
    mine = [f for f in off["findings"] if f["actor"] == meta["insider"]]
    others = [f for f in off["findings"] if f["actor"] != meta["insider"]]
    judged = actor_days(a.out, meta)
    print(f"scalple anomalies over the whole replay: {off['seconds']:.1f} s  (target < 60 s)")
    print(f"  {off['cmd']}")
    if mine:
        from datetime import date

        first_flag = min(
            date.fromisoformat(f["evidence"]["day"]).toordinal() - 719163 for f in mine
        )
        n = working_days_between(days, meta["first_snoop_day"], first_flag)
        print(
            f"  insider first flagged on working day {n} of his snooping (target ≤ 5); "
            f"flagged on {len({f['evidence']['day'] for f in mine})} days in all"
        )
    else:
        print("  insider never flagged")
    alerting = [f for f in others if f["severity"] != "low"]
    print(
        f"  false findings: {len(others)} on {judged:,} actor-days = "
        f"{1000 * len(others) / judged:.2f} per 1,000 (medium or high, as alerted live: "
        f"{len(alerting)} = {1000 * len(alerting) / judged:.2f} per 1,000; target ≤ 1)"
    )
    rules: dict[str, int] = {}
    for f in alerting:
        rules[f["rule"]] = rules.get(f["rule"], 0) + 1
    print(f"  false alerts by rule: {rules}")
    started = time.monotonic()
    raised = live(a.out, meta, a.live_window, a.live_window)
    seconds = time.monotonic() - started
    off_set = {(f["actor"], f["rule"], date_num(f["evidence"]["day"]), f["severity"])
               for f in off["findings"] if f["severity"] != "low"}  # fmt: skip
    lo = days[max(0, days.index(meta["first_snoop_day"]) - a.live_window)]
    hi = days[min(len(days) - 1, days.index(meta["first_snoop_day"]) + a.live_window)]
    off_window = {x for x in off_set if lo <= x[2] <= hi}
    ins = sorted(d for actor, _, d, _ in raised if actor == meta["insider"])
    print(
        f"live rules over {2 * a.live_window + 1} working days around the first snoop "
        f"({seconds:.0f} s): {len(raised)} alerts; insider first alerted on working day "
        f"{working_days_between(days, meta['first_snoop_day'], ins[0]) if ins else None}; "
        f"same (actor, rule, day, severity) as offline: {set(raised) == off_window}"
    )
    for x in sorted(set(raised) ^ off_window)[:10]:
        print("   differs:", x, "live" if x in set(raised) else "offline")


def date_num(text: str) -> int:
    from datetime import date

    return date.fromisoformat(text).toordinal() - 719163


if __name__ == "__main__":
    os.environ.setdefault("SCALPLE_CONFIG", os.devnull)
    main()
