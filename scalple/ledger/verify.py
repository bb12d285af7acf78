"""The one verifier: recompute every hash and link of a ledger, check every checkpoint, signed
head, signature and key rotation, and name the first bad entry.

Needs only a trusted public key. `dsar` and every other reader call `verify_ledger` too, handing
it a `VerifiedCache` so that segments checked before (and unchanged since) are not hashed again;
their checkpoints are still read, signature-checked and chained every time. It reads a live
ledger through a `Snapshot`, so a seal, rotation or compaction beside it is never tampering.
A torn last journal line (a write in progress or a crash not yet recovered) is a warning.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

from scalple.errors import LedgerError
from scalple.ledger.canonical import GENESIS
from scalple.ledger.checkpoint import (
    Checkpoint,
    CompactedCheckpoint,
    digest,
    file_sha256,
    followers,
    lanes_named,
    read_checkpoint,
)
from scalple.ledger.heads import check_heads, read_heads, wanted
from scalple.ledger.journal import scan
from scalple.ledger.keys import key_id, read_rotation
from scalple.ledger.lanes import LANES, ROOT, Lane, has_lanes, holds_ledger, ledger_lanes
from scalple.ledger.layout import REASON, Layout, SegmentFiles, os_errors
from scalple.ledger.replaced import check_replaced, replaced_checkpoints
from scalple.ledger.snapshot import JournalEntry, Snapshot
from scalple.ledger.trust import KeyChain, key_chain
from scalple.ledger.verified import VerifiedCache

if TYPE_CHECKING:
    import duckdb

Progress = Callable[[int], None]
ATTEMPTS: Final = 6


@dataclass(frozen=True)
class Finding:
    """The first bad entry: `where` (a path inside the ledger), the seq if known, what is wrong."""

    where: str
    seq: int | None
    what: str
    lane: str | None = None  # in a ledger with lanes: the lane (`where` is then inside LEDGER)

    def __str__(self) -> str:
        at = f", seq {self.seq}" if self.seq is not None else ""
        lane = f"lane {self.lane}: " if self.lane is not None else ""
        return f"{lane}{self.where}{at}: {self.what}"


@dataclass
class Report:
    ledger: str
    events: int = 0
    segments: int = 0
    journal_events: int = 0
    last_seq: int = 0
    last_hash: str = GENESIS
    checkpoint_extended: str | None = None
    deep: bool = False
    first_bad: Finding | None = None
    warnings: list[str] = field(default_factory=list)
    checked_segments: int = 0  # segment files hashed and their chain checked now
    cached_segments: int = 0  # unchanged since an earlier check (a cache was given)
    cached_since: int | None = None  # the oldest such check, µs since the epoch
    heads: int = 0  # signed heads that vouch for journal records
    unvouched: int = 0  # journal records after the last signed head
    last_head_at: int | None = None
    lanes_named: list[str] = field(default_factory=list)  # by valid signed checkpoints and heads
    lane: str | None = None  # the lane this report is of, in a ledger with lanes
    lanes: list[Report] = field(default_factory=list)  # a ledger with lanes: one per lane

    @property
    def intact(self) -> bool:
        return self.first_bad is None


class _Tampered(Exception):
    def __init__(self, finding: Finding) -> None:
        self.finding = finding


class _Connection:
    """DuckDB, started on first use: a walk over segments checked before needs none."""

    def __init__(self) -> None:
        self._con: duckdb.DuckDBPyConnection | None = None

    def __call__(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            import duckdb

            self._con = duckdb.connect(config={"threads": 2})
            self._con.execute("SET enable_progress_bar = false")
        return self._con

    def close(self) -> None:
        if self._con is not None:
            self._con.close()


@dataclass
class _Walk:
    """Where the walk through the ledger stands: what the next entry must continue."""

    snap: Snapshot
    keys: KeyChain
    report: Report
    progress: Progress
    con: _Connection
    cache: VerifiedCache | None = None
    checkpoints: list[Checkpoint] = field(default_factory=list)
    deep: bool = False
    prev_digests: tuple[str, ...] = ("",)  # what the next checkpoint's prev_checkpoint may be
    lanes_named: set[str] = field(default_factory=set)
    key_rank: int = -(2**62)  # checkpoints may start with any key of the chain

    @property
    def layout(self) -> Layout:
        return self.snap.layout

    @property
    def next_seq(self) -> int:
        return self.report.last_seq + 1

    def fail(self, path: Path, seq: int | None, what: str) -> _Tampered:
        return _Tampered(Finding(str(path.relative_to(self.layout.root)), seq, what))


def _check_checkpoint(walk: _Walk, seg: SegmentFiles, cp: Checkpoint) -> None:
    where = seg.checkpoint
    if cp.segment != seg.parquet.name or (cp.first_seq, cp.last_seq) != (
        seg.first_seq,
        seg.last_seq,
    ):
        raise walk.fail(where, seg.first_seq, f"checkpoint is for {cp.segment}, not this segment")
    if not cp.signature_valid():
        raise walk.fail(where, seg.first_seq, "checkpoint signature is not valid")
    rank = walk.keys.rank(cp.public_key)
    if rank is None:
        raise walk.fail(
            where, seg.first_seq, f"checkpoint signed by untrusted key {key_id(cp.public_key)}"
        )
    if rank < walk.key_rank:
        raise walk.fail(
            where, seg.first_seq, f"checkpoint signed by retired key {key_id(cp.public_key)}"
        )
    walk.key_rank = rank
    if cp.first_seq != walk.next_seq:
        missing = f"events {walk.next_seq}..{cp.first_seq - 1} are missing"
        what = missing if cp.first_seq > walk.next_seq else "segment overlaps the one before"
        raise walk.fail(seg.parquet, walk.next_seq, what + " (a segment removed or replaced?)")
    if cp.prev_checkpoint not in walk.prev_digests or cp.first_prev_hash != walk.report.last_hash:
        raise walk.fail(where, cp.first_seq, "checkpoint does not follow the previous checkpoint")
    if cp.events != cp.last_seq - cp.first_seq + 1:
        raise walk.fail(where, cp.first_seq, "checkpoint event count disagrees with its seqs")


def _check_rows(walk: _Walk, seg: SegmentFiles, cp: Checkpoint) -> None:
    """The segment's file against its checkpoint: its digest, and its events' seqs and links
    (every event hash too when `deep`, or to find what changed when the digest differs)."""
    import duckdb

    from scalple.ledger.segment import check_links, check_rows

    digest_ok = file_sha256(seg.parquet) == cp.segment_sha256
    # A segment whose bytes are the ones signed was proven event by event when it was sealed.
    check = check_rows if walk.deep or not digest_ok else check_links
    try:
        rows = check(walk.con(), seg.parquet, cp.first_seq, cp.first_prev_hash)
    except duckdb.IOException as exc:
        if not seg.parquet.exists():
            raise FileNotFoundError(seg.parquet) from exc  # compacted away: look again
        raise walk.fail(seg.parquet, None, "segment is not readable Parquet") from None
    except duckdb.Error:
        raise walk.fail(seg.parquet, None, "segment is not readable Parquet") from None
    if rows.problem is not None:
        raise walk.fail(seg.parquet, rows.problem.seq, rows.problem.what)
    if rows.count != cp.events or rows.last_hash != cp.last_hash:
        raise walk.fail(
            seg.parquet,
            cp.first_seq + rows.count,
            "segment does not hold the events its checkpoint lists",
        )
    if not digest_ok:
        raise walk.fail(
            seg.parquet, None, "segment file differs from the digest its checkpoint signed"
        )


def _check_segment(walk: _Walk, seg: SegmentFiles) -> None:
    try:
        cp, data = read_checkpoint(seg.checkpoint)
    except LedgerError as exc:
        if not seg.checkpoint.exists():
            raise FileNotFoundError(seg.checkpoint) from exc  # compacted away: look again
        raise walk.fail(seg.checkpoint, seg.first_seq, str(exc).split(": ", 1)[-1]) from None
    if data != cp.encode():
        raise walk.fail(seg.checkpoint, seg.first_seq, "checkpoint file is not in canonical form")
    _check_checkpoint(walk, seg, cp)
    cp_digest = digest(data)
    report = walk.report
    seen = None if walk.cache is None or walk.deep else walk.cache.fresh(seg.parquet, cp_digest)
    if seen is None:
        _check_rows(walk, seg, cp)
        report.checked_segments += 1
    else:
        report.cached_segments += 1
        report.cached_since = min(report.cached_since or seen.at, seen.at)
    if isinstance(cp, CompactedCheckpoint):
        con = walk.con() if seen is None else None
        if (bad := check_replaced(con, walk.layout, seg, cp, walk.keys)) is not None:
            raise walk.fail(*bad)
        walk.checkpoints.extend(replaced_checkpoints(walk.layout, seg))
    if seen is None and walk.cache is not None:
        walk.cache.note(seg.parquet, cp_digest)
    walk.checkpoints.append(cp)
    walk.prev_digests = followers(cp, cp_digest)
    report.segments += 1
    report.events += cp.events
    report.last_seq, report.last_hash = cp.last_seq, cp.last_hash
    walk.progress(cp.events)


def _journal_of(walk: _Walk, seg: SegmentFiles) -> bool:
    """A segment without checkpoint is fine only while its journal is there (a seal running)."""
    return any(j.first_seq == seg.first_seq and j.file for j in walk.snap.journals)


def _check_segments(walk: _Walk) -> None:
    listing = walk.snap.listing
    for seg in listing.superseded():
        walk.report.warnings.append(
            f"{seg.parquet.name} is left over from a compaction that stopped midway; "
            "the next `scalple index compact` removes it"
        )
    for seg in listing.segments():
        if not listing.signed(seg):
            if _journal_of(walk, seg):
                walk.report.warnings.append(
                    f"{seg.parquet.name} is being sealed; its journal is checked instead"
                )
                continue
            raise walk.fail(seg.parquet, seg.first_seq, "segment has no checkpoint")
        _check_segment(walk, seg)


def _check_journal(walk: _Walk, entry: JournalEntry, live: bool) -> None:
    first, report = entry.first_seq, walk.report
    lines, torn_heads = read_heads(entry.heads or b"")
    result = scan(entry.read(), first, report.last_hash, want=wanted(lines))
    end = result.next_seq - 1
    stopped = result.problem is not None
    heads = check_heads(
        lines, entry.path.name, first, result.hashes, end, walk.keys, walk.key_rank, stopped=stopped
    )
    problem = result.problem
    if heads.seq is not None and (problem is None or heads.seq < problem.seq):
        raise walk.fail(entry.path, heads.seq, heads.what)
    if problem is not None:
        raise walk.fail(entry.path, problem.seq, f"{problem.what} (byte {problem.offset})")
    if heads.what:
        raise walk.fail(entry.heads_path, None, heads.what)
    if result.tail and not live:
        raise walk.fail(entry.path, result.next_seq, "a journal that was closed ends mid-record")
    if result.tail:
        report.warnings.append(
            f"journal/{entry.path.name} ends in a torn write of {len(result.tail)} bytes "
            "(a write in progress, or cut on next start)"
        )
    if torn_heads:
        report.warnings.append(f"journal/{entry.heads_path.name} ends in a torn write")
    if entry.heads is None and result.count:
        report.warnings.append(
            f"journal/{entry.path.name} has no signed heads: its {result.count} events are "
            "vouched for by no signature (a ledger written before signed heads, or its heads "
            "log was removed)"
        )
    walk.key_rank = max(walk.key_rank, heads.key_rank)
    walk.lanes_named |= heads.lanes
    report.heads += heads.heads
    report.unvouched += end - heads.vouched
    report.last_head_at = heads.last_signed_at or report.last_head_at
    report.journal_events += result.count
    report.events += result.count
    report.last_seq, report.last_hash = end, result.last_hash
    walk.progress(result.count)


def _check_journals(walk: _Walk) -> None:
    entries = [j for j in walk.snap.journals if j.first_seq >= walk.next_seq]
    present = [j for j in entries if j.file is not None]
    for entry in entries:
        if entry.file is None:
            what = "its journal is missing, but its signed heads remain"
            raise walk.fail(entry.heads_path, walk.next_seq, what)
        if entry.first_seq != walk.next_seq:
            what = f"events {walk.next_seq}..{entry.first_seq - 1} are missing"
            raise walk.fail(entry.path, walk.next_seq, what)
        _check_journal(walk, entry, live=entry is present[-1])


def _check_extends(walk: _Walk, saved: Checkpoint, name: str) -> None:
    """The ledger holds exactly the saved checkpoint: it was not truncated or rewritten since."""
    if not saved.signature_valid() or walk.keys.rank(saved.public_key) is None:
        raise LedgerError(f"{name} is not a checkpoint signed by a trusted key")
    # A compacted ledger lists the replaced checkpoints too: the saved one may be any of them.
    same_end = [c for c in walk.checkpoints if c.last_seq == saved.last_seq]
    if not same_end:
        sealed = walk.checkpoints[-1].last_seq if walk.checkpoints else 0
        raise _Tampered(
            Finding(
                "segments",
                saved.last_seq,
                f"{name} vouches for events up to seq {saved.last_seq}, but the sealed ledger ends "
                f"at seq {sealed}: its tail was truncated or rolled back",
            )
        )
    if saved not in same_end:
        raise _Tampered(
            Finding(
                f"segments/{same_end[-1].segment}",
                saved.last_seq,
                f"checkpoint differs from {name}: history was rewritten",
            )
        )
    walk.report.checkpoint_extended = name


def _kept(batch: Path) -> list[tuple[Path, str]]:
    """The files kept aside in one quarantine directory, in the order start-up kept them."""
    try:
        lines = (batch / REASON).read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    named = [(batch / name, why) for name, _, why in (line.partition("\t") for line in lines)]
    said = {path for path, _ in named}
    others = [(p, "no REASON line says why") for p in sorted(batch.rglob("*")) if p.is_file()]
    return [*named, *((p, why) for p, why in others if p not in said and p.name != REASON)]


def _check_quarantine(walk: _Walk) -> None:
    """Start-up keeps aside what it cannot explain; the ledger is not intact while it is there."""
    root = walk.layout.quarantine_dir
    batches = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    for batch in batches:
        for path, why in _kept(batch):
            if path.is_file():
                raise walk.fail(path, None, f"kept aside at start-up: {why}")


def _check_orphans(walk: _Walk) -> None:
    for name in walk.snap.listing.orphans():
        what = "checkpoint whose segment file is missing"
        raise walk.fail(walk.layout.segment_dir / name, None, what)


def _walk(walk: _Walk, saved: tuple[Checkpoint, str] | None) -> None:
    try:
        if walk.keys.problems:
            raise _Tampered(Finding("keys", None, walk.keys.problems[0]))
        _check_orphans(walk)
        _check_segments(walk)
        _check_journals(walk)
        if saved is not None:
            _check_extends(walk, *saved)
        _check_quarantine(walk)
    except _Tampered as t:
        walk.report.first_bad = t.finding
    for cp in walk.checkpoints:  # checked, with the replaced ones a merged checkpoint lists
        walk.lanes_named.update(lanes_named(cp))
    walk.report.lanes_named = sorted(walk.lanes_named)


def trusted_chain(layout: Layout, trusted_key: str) -> KeyChain:
    """The keys that may sign for the ledger: `trusted_key` and the rotations in it reach."""
    rotations = [(p.name, read_rotation(p)) for p in layout.rotations()]
    return key_chain(trusted_key, rotations)


def _verify_lane(
    root: Path,
    trusted_key: str,
    *,
    saved: tuple[Checkpoint, str] | None = None,
    progress: Progress | None = None,
    deep: bool = False,
    cache: VerifiedCache | None = None,
) -> Report:
    """One lane (or a ledger without lanes): see `verify_ledger`.

    A finding is reported only if the ledger's directories did not change during the walk, or
    the walk after finds the same: a writer sealing or compacting meanwhile makes it look again.
    """
    layout = Layout(root)
    if not (layout.journal_dir.is_dir() or layout.segment_dir.is_dir()):
        raise LedgerError(f"{root} is not a ledger (no journal/ or segments/ in it)")
    with os_errors(f"verifying {root}"):
        chain = trusted_chain(layout, trusted_key)
    before: Finding | None = None
    for _ in range(ATTEMPTS):
        report = Report(ledger=str(root), deep=deep)
        con = _Connection()
        with os_errors(f"verifying {root}"), Snapshot(layout) as snap:
            walk = _Walk(snap, chain, report, progress or (lambda n: None), con, cache, deep=deep)
            try:
                _walk(walk, saved)
            except FileNotFoundError:
                continue  # sealed or compacted away between listing and reading: look again
            finally:
                con.close()
            found = report.first_bad
            settled = found is None or found == before or not snap.moved()
        if cache is not None:
            cache.save()
        if settled:
            return report
        before = found
    raise LedgerError(f"ledger {root} kept changing while being verified; try again")


def verify_ledger(
    root: Path,
    trusted_key: str,
    *,
    saved: tuple[Checkpoint, str] | None = None,
    progress: Progress | None = None,
    deep: bool = False,
    cache: VerifiedCache | None = None,
) -> Report:
    """Check the whole ledger at `root` against `trusted_key` (raw hex). Raises LedgerError when
    the input is unusable; a tampered ledger gives a Report with `first_bad` set. `deep` also
    recomputes every sealed event's hash from its columns (sealing did so before signing).
    With `cache`, segments it holds as checked and unchanged are not hashed again, and the ones
    checked now are added to it.

    A ledger with lanes (scalple.ledger.lanes) is checked lane by lane, each on its own, and
    every lane that a valid signed checkpoint or head of any lane names must still be there.
    """
    root = Path(root)
    if not has_lanes(root):
        return _verify_lane(
            root, trusted_key, saved=saved, progress=progress, deep=deep, cache=cache
        )
    if saved is not None:
        raise LedgerError(
            f"{root} has lanes, and a saved checkpoint is one lane's: verify that lane's "
            f"directory ({root / LANES}/NAME) with it"
        )
    lanes = ledger_lanes(root)
    if not lanes:
        raise LedgerError(f"{root} is not a ledger (no journal/, segments/ or lanes in it)")
    total = Report(ledger=str(root), deep=deep)
    empty = []
    for lane in lanes:
        if not holds_ledger(lane.root):
            empty.append(lane.name)  # being created, or emptied: judged below
            continue
        report = _lane_report(lane, trusted_key, progress, deep, cache)
        _add(total, report)
        if report.first_bad is not None and total.first_bad is None:
            total.first_bad = report.first_bad
    if total.first_bad is None:
        # A lane that appeared during the walk (a worker starting) and was named meanwhile is
        # not missing: lanes are only ever added, so the listing now counts too.
        now = {lane.name for lane in ledger_lanes(root) if holds_ledger(lane.root)}
        present = {lane.name for lane in lanes if lane.name not in empty} | now
        total.first_bad = _missing_lane(total, present, set(empty))
    for name in empty:
        total.warnings.append(f"lane {name} holds no ledger yet (a writer starting?)")
    return total


def _lane_report(
    lane: Lane,
    trusted_key: str,
    progress: Progress | None,
    deep: bool,
    cache: VerifiedCache | None,
) -> Report:
    where = "." if lane.name == ROOT else f"{LANES}/{lane.name}"
    lane_cache = None if cache is None else cache.of_lane(lane.root)
    report = _verify_lane(lane.root, trusted_key, progress=progress, deep=deep, cache=lane_cache)
    report.lane = lane.name
    report.warnings = [f"lane {lane.name}: {w}" for w in report.warnings]
    if (bad := report.first_bad) is not None:
        inside = bad.where if lane.name == ROOT else f"{where}/{bad.where}"
        report.first_bad = Finding(inside, bad.seq, bad.what, lane=lane.name)
    return report


def _add(total: Report, report: Report) -> None:
    total.lanes.append(report)
    for name in ("events", "segments", "journal_events", "heads", "unvouched"):
        setattr(total, name, getattr(total, name) + getattr(report, name))
    total.checked_segments += report.checked_segments
    total.cached_segments += report.cached_segments
    if report.cached_since is not None:
        total.cached_since = min(total.cached_since or report.cached_since, report.cached_since)
    if report.last_head_at is not None:
        total.last_head_at = max(total.last_head_at or 0, report.last_head_at)
    total.warnings.extend(report.warnings)
    total.lanes_named = sorted({*total.lanes_named, *report.lanes_named})


def _missing_lane(total: Report, present: set[str], empty: set[str]) -> Finding | None:
    """A lane some lane's signatures name that is not there (deleted whole), or is there but
    holds no ledger (emptied): writers name only lanes that hold one."""
    for report in total.lanes:
        for name in report.lanes_named:
            if name not in present:
                where = "." if name == ROOT else f"{LANES}/{name}"
                gone = "holds no ledger" if name in empty else "missing"
                what = (
                    f"{gone}, but lane {report.lane}'s signed checkpoints or heads list it: "
                    "a lane was deleted"
                )
                return Finding(where, None, what, lane=name)
    return None


def total_events(root: Path) -> int:
    """A quick estimate of the events in a ledger, for a progress bar."""
    return sum(_lane_events(lane.root) for lane in ledger_lanes(root))


def _lane_events(root: Path) -> int:
    layout = Layout(root)
    sealed = sum(s.last_seq - s.first_seq + 1 for s in layout.segments())
    size = 0
    for _, path in layout.journals():
        with contextlib.suppress(FileNotFoundError):  # sealed meanwhile: counted above or not
            size += path.stat().st_size
    return sealed + size // 700
