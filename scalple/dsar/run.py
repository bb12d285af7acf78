"""One dsar request from settings to answer: resolve keys and dates, verify, then ask the ledger."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final, TypeVar

from scalple.analysis.policy import Policy
from scalple.config import Config
from scalple.dsar.errors import BadQuery, LedgerNotVerified
from scalple.dsar.proof import Mode, Verification, verify_range
from scalple.dsar.query import ActorAnswer, SubjectAnswer, actor_answer, subject_answer
from scalple.dsar.subjects import load_secret, subject_keys
from scalple.errors import LedgerError
from scalple.ledger.keys import PUBLIC_KEY, load_public_key, resolve_key_dir
from scalple.ledger.lanes import has_lanes, holds_ledger

T = TypeVar("T")
_ATTEMPTS: Final = 6
_RELATIVE: Final = re.compile(r"^(\d+)\s*(y|mo|w|d|h)$")
_UNITS: Final = {"y": 365 * 86400, "mo": 30 * 86400, "w": 7 * 86400, "d": 86400, "h": 3600}


def parse_time(value: str | None, *, end: bool = False, now: float | None = None) -> int | None:
    """`6mo`, `30d`, `2w`, `12h`, `1y` (ago), or an ISO date/time (UTC), as µs since the epoch.

    A bare date as an end (`--until 2025-03-31`) includes that whole day.
    """
    if value is None:
        return None
    text = value.strip()
    now = time.time() if now is None else now
    if m := _RELATIVE.match(text):
        return int((now - int(m.group(1)) * _UNITS[m.group(2)]) * 1_000_000)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise BadQuery(
            f"cannot read {value!r} as a time: use 6mo, 30d, 2w, 12h, 1y or a date like 2025-03-31"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if end and len(text) == 10:
        parsed += timedelta(days=1)
    return int(parsed.timestamp() * 1_000_000)


def trusted_key(public_key: Path | None, settings: Config) -> str:
    path = public_key or resolve_key_dir(settings["key_dir"]) / PUBLIC_KEY
    if public_key is None and not path.exists():
        raise LedgerError(
            f"no public key to verify the ledger with: pass --public-key FILE (none at {path})"
        )
    return load_public_key(path)


@dataclass(frozen=True)
class Request:
    ledger: Path
    public_key: Path | None
    verify: Mode
    since: str | None
    until: str | None


def _secret(settings: Config) -> bytes | None:
    """The subject secret if there is one (it authenticates the verification cache)."""
    try:
        return load_secret(resolve_key_dir(settings["key_dir"]))
    except LedgerError:
        return None


def _verified(settings: Config, req: Request, secret: bytes | None) -> Verification:
    ledger = req.ledger
    if not (holds_ledger(ledger) or has_lanes(ledger)):
        raise LedgerError(f"{ledger} is not a ledger (no journal/, segments/ or lanes/ in it)")
    result = verify_range(ledger, trusted_key(req.public_key, settings), req.verify, secret)
    if not result.intact:
        raise LedgerNotVerified(
            f"ledger {ledger} fails verification, so no answer is given: {result.first_bad}\n"
            "run `scalple verify` for details; keep a copy of the ledger as it is"
        )
    return result


def run_subject(
    settings: Config, req: Request, subjects: Sequence[str], *, proof: bool = False
) -> SubjectAnswer:
    """`proof` reads every field of each record from the segments (for a report to hand over)."""
    policy = Policy.from_config(settings)
    since, until = parse_time(req.since), parse_time(req.until, end=True)
    secret = load_secret(resolve_key_dir(settings["key_dir"]))
    keys = subject_keys(subjects, policy.subject_columns, policy.search_path, secret)
    verification = _verified(settings, req, secret)
    return _again(
        lambda: subject_answer(req.ledger, keys, verification, since=since, until=until, full=proof)
    )


def run_actor(settings: Config, req: Request, actor: str, limit: int) -> ActorAnswer:
    since, until = parse_time(req.since), parse_time(req.until, end=True)
    verification = _verified(settings, req, _secret(settings))
    return _again(
        lambda: actor_answer(req.ledger, actor, verification, since=since, until=until, limit=limit)
    )


def _again(ask: Callable[[], T]) -> T:
    """Ask again when a file vanished under the query: a compaction replaced segments, or the
    index merged its files. Both keep every event; the next reading finds them."""
    import duckdb

    for attempt in range(_ATTEMPTS - 1):
        try:
            return ask()
        except duckdb.IOException:
            # A compaction in progress may replace several segments in a row: wait a little
            # longer each time (0.05 s, 0.1 s, ... 0.8 s) rather than ask again at once.
            time.sleep(0.05 * 2**attempt)
    return ask()
