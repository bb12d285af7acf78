"""`verify`: recompute every hash and link of a ledger, check every checkpoint and signature.

Needs only a trusted public key. Stops at the first bad entry and names it: the file, the seq,
and what is wrong. A torn last journal line (a write in progress or a crash not yet recovered)
is a warning, not tampering.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from scalple.errors import LedgerError
from scalple.ledger.canonical import GENESIS
from scalple.ledger.checkpoint import (
    Checkpoint,
    CompactedCheckpoint,
    digest,
    file_sha256,
    followers,
    read_checkpoint,
)
from scalple.ledger.compact import check_replaced, replaced_checkpoints
from scalple.ledger.journal import scan
from scalple.ledger.keys import key_id, read_rotation
from scalple.ledger.layout import Layout, SegmentFiles, os_errors
from scalple.ledger.segment import check_links, check_rows
from scalple.ledger.trust import KeyChain, key_chain

Progress = Callable[[int], None]


@dataclass(frozen=True)
class Finding:
    """The first bad entry: `where` (a path inside the ledger), the seq if known, what is wrong."""

    where: str
    seq: int | None
    what: str

    def __str__(self) -> str:
        at = f", seq {self.seq}" if self.seq is not None else ""
        return f"{self.where}{at}: {self.what}"


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

    @property
    def intact(self) -> bool:
        return self.first_bad is None


class _Tampered(Exception):
    def __init__(self, finding: Finding) -> None:
        self.finding = finding


@dataclass
class _Walk:
    """Where the walk through the ledger stands: what the next entry must continue."""

    layout: Layout
    keys: KeyChain
    report: Report
    progress: Progress
    checkpoints: list[Checkpoint] = field(default_factory=list)
    deep: bool = False
    prev_digests: tuple[str, ...] = ("",)  # what the next checkpoint's prev_checkpoint may be
    key_rank: int = -(2**62)  # checkpoints may start with any key of the chain

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


def _check_segment(walk: _Walk, con: duckdb.DuckDBPyConnection, seg: SegmentFiles) -> None:
    try:
        cp, data = read_checkpoint(seg.checkpoint)
    except LedgerError as exc:
        raise walk.fail(seg.checkpoint, seg.first_seq, str(exc).split(": ", 1)[-1]) from None
    if data != cp.encode():
        raise walk.fail(seg.checkpoint, seg.first_seq, "checkpoint file is not in canonical form")
    _check_checkpoint(walk, seg, cp)
    digest_ok = file_sha256(seg.parquet) == cp.segment_sha256
    # A segment whose bytes are the ones signed was proven event by event when it was sealed;
    # recomputing each event hash again is for --deep, or to find what changed when they differ.
    check = check_rows if walk.deep or not digest_ok else check_links
    try:
        rows = check(con, seg.parquet, cp.first_seq, cp.first_prev_hash)
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
    if isinstance(cp, CompactedCheckpoint):
        if (bad := check_replaced(con, walk.layout, seg, cp, walk.keys)) is not None:
            raise walk.fail(*bad)
        walk.checkpoints.extend(replaced_checkpoints(walk.layout, seg))
    walk.checkpoints.append(cp)
    walk.prev_digests = followers(cp, digest(data))
    walk.report.segments += 1
    walk.report.events += rows.count
    walk.report.last_seq, walk.report.last_hash = cp.last_seq, cp.last_hash
    walk.progress(rows.count)


def _sealing(walk: _Walk, seg: SegmentFiles) -> bool:
    """A segment without checkpoint is fine only while its journal still exists (seal running)."""
    return walk.layout.journal(seg.first_seq).exists()


def _check_segments(walk: _Walk) -> None:
    con = duckdb.connect(config={"threads": 2})
    for seg in walk.layout.superseded():
        walk.report.warnings.append(
            f"{seg.parquet.name} is left over from a compaction that stopped midway; "
            "the next `scalple index compact` removes it"
        )
    try:
        for seg in walk.layout.segments():
            if not seg.checkpoint.exists():
                if _sealing(walk, seg):
                    walk.report.warnings.append(
                        f"{seg.parquet.name} is being sealed; its journal is checked instead"
                    )
                    continue
                raise walk.fail(seg.parquet, seg.first_seq, "segment has no checkpoint")
            _check_segment(walk, con, seg)
    finally:
        con.close()


def _check_journals(walk: _Walk) -> None:
    journals = [(first, p) for first, p in walk.layout.journals() if first >= walk.next_seq]
    for i, (first, path) in enumerate(journals):
        if first != walk.next_seq:
            raise walk.fail(path, walk.next_seq, f"events {walk.next_seq}..{first - 1} are missing")
        result = scan(path.read_bytes(), first, walk.report.last_hash)
        if result.problem is not None:
            p = result.problem
            raise walk.fail(path, p.seq, f"{p.what} (byte {p.offset})")
        if result.tail:
            if i != len(journals) - 1:
                what = "a journal that was closed ends mid-record"
                raise walk.fail(path, result.next_seq, what)
            walk.report.warnings.append(
                f"journal/{path.name} ends in a torn write of {len(result.tail)} bytes "
                "(cut on next start)"
            )
        walk.report.journal_events += result.count
        walk.report.events += result.count
        walk.report.last_seq, walk.report.last_hash = result.next_seq - 1, result.last_hash
        walk.progress(result.count)


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


def verify_ledger(
    root: Path,
    trusted_key: str,
    *,
    saved: tuple[Checkpoint, str] | None = None,
    progress: Progress | None = None,
    deep: bool = False,
) -> Report:
    """Check the whole ledger at `root` against `trusted_key` (raw hex). Raises LedgerError when
    the input is unusable; a tampered ledger gives a Report with `first_bad` set. `deep` also
    recomputes every sealed event's hash from its columns (sealing did so before signing)."""
    layout = Layout(root)
    if not (layout.journal_dir.is_dir() or layout.segment_dir.is_dir()):
        raise LedgerError(f"{root} is not a ledger (no journal/ or segments/ in it)")
    rotations = [(p.name, read_rotation(p)) for p in layout.rotations()]
    chain = key_chain(trusted_key, rotations)
    for _ in range(3):
        report = Report(ledger=str(root), deep=deep)
        walk = _Walk(layout, chain, report, progress or (lambda n: None), deep=deep)
        try:
            with os_errors(f"verifying {root}"):
                _walk(walk, saved)
        except LedgerError as exc:
            if isinstance(exc.__cause__, FileNotFoundError):
                continue  # a journal was sealed and removed under us: walk the new state
            raise
        return report
    raise LedgerError(f"ledger {root} kept changing while being verified; try again")


def _walk(walk: _Walk, saved: tuple[Checkpoint, str] | None) -> None:
    try:
        if walk.keys.problems:
            raise _Tampered(Finding("keys", None, walk.keys.problems[0]))
        _check_orphans(walk)
        _check_segments(walk)
        _check_journals(walk)
        if saved is not None:
            _check_extends(walk, *saved)
    except _Tampered as t:
        walk.report.first_bad = t.finding


def _check_orphans(walk: _Walk) -> None:
    for path in sorted(walk.layout.segment_dir.glob("*.checkpoint")):
        if not path.with_suffix(".parquet").exists():
            raise walk.fail(path, None, "checkpoint whose segment file is missing")


def total_events(root: Path) -> int:
    """A quick estimate of the events in a ledger, for a progress bar."""
    layout = Layout(root)
    sealed = sum(s.last_seq - s.first_seq + 1 for s in layout.segments())
    journal = sum(p.stat().st_size for _, p in layout.journals()) // 700
    return sealed + journal
