"""What an answer can claim about the ledger it came from: the range covered, and verification.

Verification is the ledger's one verifier, `scalple.ledger.verify.verify_ledger`. quick: with
the ledger's verification cache (`scalple.ledger.verified`), so segment files checked before
and unchanged since are not hashed again; every checkpoint, signature, signed head and journal
record is still checked now. full: everything checked now, the cache neither read nor trusted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from scalple.ledger.layout import Layout
from scalple.ledger.verified import VerifiedCache, cache_key
from scalple.ledger.verify import Report, verify_ledger

if TYPE_CHECKING:
    import duckdb

    from scalple.ledger.compact import Merge

Mode = Literal["quick", "full"]


def _when(us: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(us / 1e6))


@dataclass
class Verification:
    """The outcome over the ledger: `first_bad` names the first bad entry when not intact."""

    mode: Mode
    intact: bool = True
    first_bad: str | None = None
    checkpoints: int = 0
    checked_segments: int = 0
    cached_segments: int = 0
    cached_since: int | None = None
    journal_events: int = 0
    unvouched: int = 0
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, mode: Mode, report: Report) -> Verification:
        return cls(
            mode,
            intact=report.intact,
            first_bad=None if report.first_bad is None else str(report.first_bad),
            checkpoints=report.segments,
            checked_segments=report.checked_segments,
            cached_segments=report.cached_segments,
            cached_since=report.cached_since,
            journal_events=report.journal_events,
            unvouched=report.unvouched,
            warnings=list(report.warnings),
        )

    def summary(self) -> str:
        if not self.intact:
            return f"FAILED: {self.first_bad}"
        text = (
            f"intact ({self.mode}): {self.checkpoints} checkpoints signed and chained, "
            f"{self.checked_segments} segment files checked now"
        )
        if self.cached_segments:
            since = _when(self.cached_since or 0)
            text += f", {self.cached_segments} checked at {since} (files unchanged since)"
        text += f"; {self.journal_events} journal events checked"
        if self.unvouched:
            text += f" ({self.unvouched} after the last signed head)"
        return text


@dataclass(frozen=True)
class Coverage:
    """The ledger range an answer covers."""

    first_seq: int
    last_seq: int
    first_ts: int | None
    last_ts: int | None
    segments: int
    journal_events: int
    indexed_upto: int
    lanes: int = 1  # more than one: seqs count per lane, first/last seq span all lanes


def combined(covers: list[Coverage]) -> Coverage:
    """The coverage of several lanes read as one ledger."""
    if len(covers) == 1:
        return covers[0]
    firsts = [c.first_ts for c in covers if c.first_ts is not None]
    lasts = [c.last_ts for c in covers if c.last_ts is not None]
    return Coverage(
        first_seq=min((c.first_seq for c in covers if c.last_seq), default=0),
        last_seq=max(c.last_seq for c in covers),
        first_ts=min(firsts, default=None),
        last_ts=max(lasts, default=None),
        segments=sum(c.segments for c in covers),
        journal_events=sum(c.journal_events for c in covers),
        indexed_upto=min(c.indexed_upto for c in covers),
        lanes=len(covers),
    )


def verify_range(
    ledger: Path, trusted_key: str, mode: Mode, secret: bytes | None = None
) -> Verification:
    """Verify the ledger for an answer. `secret` (the subject secret) authenticates the cache;
    without it every segment is checked now."""
    cache = VerifiedCache(ledger, cache_key(secret)) if secret and mode == "quick" else None
    return Verification.of(mode, verify_ledger(Path(ledger), trusted_key, cache=cache))


def coverage(
    con: duckdb.DuckDBPyConnection, ledger: Path, indexed_upto: int, view: str = "events"
) -> Coverage:
    """First/last seq and time of one lane, read through its `events_view` named `view`
    (reads only its first segment and its tail)."""
    from scalple.ledger.query import quote

    segments = Layout(ledger).sealed()
    sealed_upto = segments[-1].last_seq if segments else 0
    first_ts: int | None = None
    if segments:
        first_ts = con.execute(
            f"SELECT min(ts_start) FROM read_parquet({quote(segments[0].parquet)})"
        ).fetchone()[0]  # type: ignore[index]
    tail = con.execute(
        f"SELECT min(seq), max(seq), max(ts_start), count(*) FILTER (WHERE seq > {sealed_upto}) "
        f"FROM {view} WHERE seq > {max(sealed_upto - 1, 0)}"
    ).fetchone()
    assert tail is not None
    lo, hi, last_ts, journal = tail
    first_seq = segments[0].first_seq if segments else (lo or 0)
    if first_ts is None and lo is not None:
        first_ts = con.execute(f"SELECT ts_start FROM {view} WHERE seq = {lo}").fetchone()[0]  # type: ignore[index]
    return Coverage(
        first_seq=first_seq,
        last_seq=hi or 0,
        first_ts=first_ts,
        last_ts=last_ts,
        segments=len(segments),
        journal_events=int(journal or 0),
        indexed_upto=indexed_upto,
    )


def ledger_coverage(con: duckdb.DuckDBPyConnection, ledger: Path) -> Coverage:
    """The coverage of every lane of `ledger`; replaces the connection's `events` view with
    `ledger_view`'s."""
    from scalple.ledger.query import ledger_view, read_again

    def read() -> Coverage:
        views = ledger_view(con, ledger)
        return combined([coverage(con, lane.root, 0, view) for lane, view in views])

    return read_again(read)


def note_compacted(ledger: Path, merge: Merge, secret: bytes | None) -> None:
    """Remember a merged segment as checked: compaction recomputed each of its event hashes
    before signing it, as sealing does, so the next answer need not check it again."""
    if secret is None:
        return
    cache = VerifiedCache(ledger, cache_key(secret))
    cache.forget(merge.replaced)
    cache.note(Layout(ledger).segment_dir / merge.merged, merge.checkpoint_digest)
    cache.save()
