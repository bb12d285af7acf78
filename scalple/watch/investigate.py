"""`scalple anomalies` as a library call: verify the ledger, profile it, judge it, rank findings."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from scalple.config import Config
from scalple.dsar.proof import Coverage, Mode, Verification, ledger_coverage
from scalple.dsar.query import connect
from scalple.dsar.run import Request, _secret, _verified, parse_time
from scalple.ledger.query import ledger_view
from scalple.watch.findings import Finding, flagged
from scalple.watch.profile import DAY_US, build_baselines, profile
from scalple.watch.settings import WatchSettings


@dataclass
class Report:
    findings: list[Finding]
    coverage: Coverage
    verification: Verification
    first_day: int
    last_day: int
    actor_days: int  # actor-days judged in the window


def verified(config: Config, ledger: Path, public_key: Path | None, mode: Mode) -> Verification:
    """The one verifier, called as `dsar` calls it (raises when the ledger fails it)."""
    return _verified(config, Request(ledger, public_key, mode, None, None), _secret(config))


def local_day(us: int, settings: WatchSettings) -> int:
    from scalple.watch.today import Clock

    return Clock(settings.timezone).local(us) // DAY_US


def history_days(settings: WatchSettings) -> int:
    """Days before the first judged day that its baselines and novelty look back on."""
    return max(settings.baseline_days, settings.novel_days) + 1


def investigate(
    config: Config,
    ledger: Path,
    *,
    since: str | None = "30d",
    until: str | None = None,
    actor: str | None = None,
    public_key: Path | None = None,
    mode: Mode = "quick",
) -> Report:
    settings = WatchSettings.from_config(config)
    start = parse_time(since) or 0
    end = parse_time(until, end=True) or time.time_ns() // 1000 + 1
    verification = verified(config, ledger, public_key, mode)
    first_day, last_day = local_day(start, settings), local_day(end - 1, settings)
    lo = (first_day - history_days(settings)) * DAY_US - DAY_US  # a day's margin for zones
    con = connect()
    try:
        ledger_view(con, ledger)
        profile(con, settings, max(lo, 0), end)
        build_baselines(con, settings)
        found = flagged(con, settings, first_day, last_day, actor)
        judged = con.execute(
            "SELECT count(*) FROM w_day WHERE day BETWEEN ? AND ?"
            + (" AND actor = ?" if actor else ""),
            [first_day, last_day, *([actor] if actor else [])],
        ).fetchone()
        cover = ledger_coverage(con, ledger)
    finally:
        con.close()
    return Report(found, cover, verification, first_day, last_day, int(judged[0] if judged else 0))
