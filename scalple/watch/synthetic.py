"""Weeks of ordinary work as ledger records, shaped as the proxy writes them: for the demo, the
tests and bench/insider.py, which need a history before anyone can look unusual.

Each colleague works on their own customers (a portfolio), a few lookups a day in office hours;
the subject hashes are keyed with the ledger's own subject secret, as the proxy makes them.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from scalple.analysis.subjects import subject_hash
from scalple.events import AuditEvent

DAY_US: Final = 86_400_000_000
HOUR_US: Final = 3_600_000_000
LOOKUP: Final = "SELECT id, name, email FROM customers WHERE id = $1"
ORDERS: Final = "SELECT id, total FROM orders WHERE customer_id = $1"


@dataclass(frozen=True)
class Desk:
    """Where a colleague's statements come from, as the proxy would see it."""

    db_role: str = "app_user"
    application_name: str = "branch-app"
    client_addr: str = "10.0.0.10"
    identity_source: str = "comment"


class Pairs:
    """Statement and outcome records of one lookup at a time, numbered from `prefix`."""

    def __init__(self, prefix: str) -> None:
        self.prefix, self.n = prefix, 0

    def lookup(
        self, actor: str, ts: int, subject: str, desk: Desk, *, orders: bool = False
    ) -> tuple[AuditEvent, AuditEvent]:
        self.n += 1
        event_id = f"{self.prefix}-{self.n}"
        table, sql = ("public.orders", ORDERS) if orders else ("public.customers", LOOKUP)
        st = AuditEvent(
            kind="statement",
            event_id=event_id,
            ts_start=ts,
            actor=actor,
            actor_email=actor if "@" in actor else None,
            identity_source=desk.identity_source,  # type: ignore[arg-type]
            db_role=desk.db_role,
            database="app",
            application_name=desk.application_name,
            client_addr=desk.client_addr,
            session_id=self.prefix,
            statement=sql,
            params=("***",),
            audit_class="READ",
            tables=(table,),
            subjects=(subject,),
            analysis="ok",
        )
        rows = 3 if orders else 1
        out = AuditEvent(
            kind="outcome",
            event_id=event_id,
            ts_start=ts,
            ts_end=ts + 400,
            duration_us=400,
            command_tag=f"SELECT {rows}",
            rows=rows,
            status="ok",
            subjects=(subject,),
        )
        return st, out


def customer(secret: bytes, i: int) -> str:
    """The subject hash of customer `i`, as the proxy records `customers.id = i`."""
    return subject_hash(secret, "customer", str(i))


def office_days(end_day: int, days: int) -> list[int]:
    """The last `days` weekdays before `end_day` (days since the epoch), oldest first."""
    out: list[int] = []
    day = end_day - 1
    while len(out) < days:
        if (day + 3) % 7 < 5:  # 1970-01-01 was a Thursday
            out.append(day)
        day -= 1
    return out[::-1]


def history(
    secret: bytes,
    actors: Sequence[str],
    days: Sequence[int],
    *,
    portfolio: int = 40,
    per_day: tuple[int, int] = (3, 8),
    desk: Desk | None = None,
    seed: int = 1,
    first_customer: int = 1_000_000,
) -> Iterator[list[AuditEvent]]:
    """Per day, the records of every colleague's lookups on their own `portfolio` customers."""
    rng = random.Random(seed)
    desk = desk or Desk()
    pairs = Pairs(f"hist{seed}")
    for day in days:
        events: list[AuditEvent] = []
        for k, actor in enumerate(actors):
            base = first_customer + k * portfolio
            for _ in range(rng.randint(*per_day)):
                ts = day * DAY_US + rng.randrange(9 * HOUR_US, 17 * HOUR_US)
                c = customer(secret, base + rng.randrange(portfolio))
                events += pairs.lookup(actor, ts, c, desk, orders=rng.random() < 0.3)
        events.sort(key=lambda e: e.ts_start)
        yield events


def main(argv: Sequence[str]) -> None:
    """`python -m scalple.watch.synthetic LEDGER KEY_DIR DAYS APP ACTOR...`: write `history`."""
    import time
    from pathlib import Path

    from scalple.ledger import open_sink
    from scalple.ledger.keys import subject_secret

    ledger, keys, days, app, *actors = argv
    sink = open_sink(Path(ledger), "os", key_dir=keys)
    when = office_days(time.time_ns() // 1000 // DAY_US, int(days))
    for events in history(
        subject_secret(Path(keys)), actors, when, desk=Desk(application_name=app)
    ):
        sink.append_sync(events)
    sink.close()


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
