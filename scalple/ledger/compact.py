"""Compaction: runs of small sealed segments become one larger segment, re-signed, still provable.

The merged segment holds the same events, byte for byte in every column, and its checkpoint
(`CompactedCheckpoint`) covers exactly the seqs, first prev_hash and last hash of the segments it
replaces and lists their checkpoints' digests. Those checkpoints are kept whole in a side file
(`<segment>.replaced`), so `verify` still checks every original signature, and that each original
segment's last hash sits at its seq in the merged file: nothing can have been dropped or altered.

Crash safety, in this order: the merged parquet and the side file are written (no reader lists
a merged segment before its checkpoint exists), then its checkpoint (the commit: readers switch
to the merged segment), then the originals are removed. `Layout.segments` lists one side of any
overlap, so a stop between any two steps leaves a ledger that verifies and reads every event
once; the next compaction finishes the removal.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import duckdb
from msgspec import UNSET, UnsetType

from scalple.errors import LedgerError
from scalple.ledger.checkpoint import (
    Checkpoint,
    CompactedCheckpoint,
    digest,
    file_sha256,
    followers,
    read_checkpoint,
)
from scalple.ledger.columns import SELECT_COLUMNS
from scalple.ledger.keys import SigningKey
from scalple.ledger.layout import Layout, SegmentFiles, fsync_path, os_errors, write_atomically
from scalple.ledger.query import quote
from scalple.ledger.replaced import boundaries_ok
from scalple.ledger.seal import READ_ONLY, ROW_GROUP_ROWS
from scalple.ledger.segment import check_rows

TARGET_EVENTS: Final = 5_000_000
LOCK: Final = "COMPACT.LOCK"
_PARTIAL: Final = ".compacting"

Progress = Callable[[int], None]


@dataclass(frozen=True)
class Merge:
    """One compaction step done: `merged` (file name) now stands for `replaced` (names)."""

    merged: str
    replaced: tuple[str, ...]
    replaced_digests: tuple[str, ...]
    checkpoint_digest: str
    events: int


@dataclass
class CompactResult:
    segments_before: int
    segments_after: int = 0
    events: int = 0
    merges: list[Merge] | None = None
    cleaned: int = 0


@dataclass(frozen=True)
class Member:
    seg: SegmentFiles
    checkpoint: Checkpoint
    data: bytes


def plan(layout: Layout, key: SigningKey, target: int = TARGET_EVENTS) -> list[list[SegmentFiles]]:
    """Runs of consecutive signed segments to merge, each at most `target` events (two or more
    segments per run). A run is merged only if every checkpoint after it is signed with `key`:
    the merged checkpoint is, and checkpoints may never step back to an older key."""
    segments = [s for s in layout.segments() if s.checkpoint.exists()]
    signers = [read_checkpoint(s.checkpoint)[0].public_key for s in segments]
    tail_current = [True] * (len(segments) + 1)
    for i in range(len(segments) - 1, -1, -1):
        tail_current[i] = tail_current[i + 1] and signers[i] == key.public
    runs: list[list[SegmentFiles]] = []
    run: list[SegmentFiles] = []
    size = 0
    for i, seg in enumerate(segments):
        n = seg.last_seq - seg.first_seq + 1
        if run and size + n > target:
            runs.append(run)
            run, size = [], 0
        run.append(seg)
        size += n
        if not tail_current[i + 1]:
            run, size = [], 0  # an older key signs what follows: this run cannot be re-signed
    runs.append(run)
    return [r for r in runs if len(r) > 1]


def _members(run: list[SegmentFiles]) -> list[Member]:
    """The run's checkpoints, checked to be the ones signed and to chain one to the next, and
    its files to be the bytes they sign: a ledger that fails this is never compacted."""
    members: list[Member] = []
    for seg in run:
        cp, data = read_checkpoint(seg.checkpoint)
        problem = (
            "checkpoint signature is not valid"
            if not cp.signature_valid() or data != cp.encode()
            else "segment file differs from the digest its checkpoint signed"
            if file_sha256(seg.parquet) != cp.segment_sha256
            else "does not follow the segment before"
            if members
            and (
                cp.first_seq != members[-1].checkpoint.last_seq + 1
                or cp.first_prev_hash != members[-1].checkpoint.last_hash
                or cp.prev_checkpoint
                not in followers(members[-1].checkpoint, digest(members[-1].data))
            )
            else ""
        )
        if problem:
            raise LedgerError(
                f"not compacting segments/{seg.parquet.name}: {problem}; run `scalple verify`"
            )
        members.append(Member(seg, cp, data))
    return members


def _remove(layout: Layout, seg: SegmentFiles) -> None:
    # The checkpoint first: a segment file left without one is never listed beside its merge.
    for path in (seg.checkpoint, seg.parquet, layout.replaced(seg)):
        path.unlink(missing_ok=True)


def finish_interrupted(layout: Layout) -> int:
    """Remove what a compaction that stopped midway left: originals of a signed merged segment,
    a merged segment never signed, partial files. Returns the segments removed."""
    for partial in layout.segment_dir.glob(f"*{_PARTIAL}"):
        partial.unlink()
    left = layout.superseded()
    for seg in left:
        _remove(layout, seg)
    if left:
        fsync_path(layout.segment_dir)
    return len(left)


def _merge_file(con: duckdb.DuckDBPyConnection, members: list[Member], out: Path) -> None:
    files = ", ".join(quote(m.seg.parquet) for m in members)
    con.execute(
        f"COPY (SELECT {SELECT_COLUMNS} FROM read_parquet([{files}])) TO {quote(out)} "
        f"(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {ROW_GROUP_ROWS})"
    )


def _lanes_of(olds: list[Checkpoint]) -> tuple[str, ...] | UnsetType:
    """The lanes the merged segments' checkpoints named, all of them (never fewer: a lane
    named once stays named)."""
    named = [cp.lanes for cp in olds if not isinstance(cp.lanes, UnsetType)]
    return tuple(sorted(set().union(*named))) if named else UNSET


def merge(
    con: duckdb.DuckDBPyConnection, layout: Layout, run: list[SegmentFiles], key: SigningKey
) -> Merge:
    """Merge the consecutive signed segments `run` into one, signed with `key`."""
    members = _members(run)
    first, last = members[0].checkpoint, members[-1].checkpoint
    files = layout.segment(first.first_seq, last.last_seq)
    partial = files.parquet.with_name(files.parquet.name + _PARTIAL)
    _merge_file(con, members, partial)
    # As sealing does: every event hash recomputed from the merged columns before signing.
    rows = check_rows(con, partial, first.first_seq, first.first_prev_hash)
    olds = [m.checkpoint for m in members]
    problem = (
        f"at seq {rows.problem.seq}: {rows.problem.what}"
        if rows.problem
        else "it does not hold the events of the segments merged"
        if rows.count != last.last_seq - first.first_seq + 1 or rows.last_hash != last.last_hash
        else "a merged segment's last hash moved"
        if boundaries_ok(con, partial, olds)
        else ""
    )
    if problem:
        partial.unlink()
        raise LedgerError(f"compacting into {files.parquet.name}: merged file is wrong {problem}")
    os.chmod(partial, READ_ONLY)
    fsync_path(partial)
    os.replace(partial, files.parquet)
    write_atomically(layout.replaced(files), b"".join(m.data for m in members), READ_ONLY)
    unsigned = CompactedCheckpoint(
        segment=files.parquet.name,
        segment_sha256=file_sha256(files.parquet),
        events=rows.count,
        first_seq=first.first_seq,
        last_seq=last.last_seq,
        first_prev_hash=first.first_prev_hash,
        last_hash=last.last_hash,
        prev_checkpoint=first.prev_checkpoint,
        sealed_at=time.time_ns() // 1000,
        public_key=key.public,
        replaces=tuple(digest(m.data) for m in members),
        lanes=_lanes_of(olds),
    )
    data = unsigned.signed(key).encode()
    write_atomically(files.checkpoint, data, READ_ONLY)  # the commit
    fsync_path(layout.segment_dir)
    for m in members:
        _remove(layout, m.seg)
    fsync_path(layout.segment_dir)
    return Merge(
        merged=files.parquet.name,
        replaced=tuple(m.seg.parquet.name for m in members),
        replaced_digests=unsigned.replaces,
        checkpoint_digest=digest(data),
        events=rows.count,
    )


@contextmanager
def compaction_lock(layout: Layout) -> Iterator[None]:
    """One compaction at a time per ledger (appending and sealing go on meanwhile)."""
    fd = os.open(layout.root / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LedgerError(f"another compaction of {layout.root} is running") from None
        yield
    finally:
        os.close(fd)


def compact(
    root: Path,
    key: SigningKey,
    *,
    target: int = TARGET_EVENTS,
    progress: Progress | None = None,
    on_merge: Callable[[Merge], None] | None = None,
) -> CompactResult:
    """Merge runs of small segments of the ledger at `root` into segments of up to `target`
    events; `on_merge` is told of each merge once it is committed (derived data follows it)."""
    layout = Layout(root)
    if not layout.segment_dir.is_dir():
        raise LedgerError(f"{root} is not a ledger (no segments/ in it)")
    advance = progress or (lambda n: None)
    with os_errors(f"compacting {root}"), compaction_lock(layout):
        cleaned = finish_interrupted(layout)
        result = CompactResult(len(layout.segments()), merges=[], cleaned=cleaned)
        con = duckdb.connect(config={"threads": 2, "preserve_insertion_order": True})
        con.execute("SET enable_progress_bar = false")
        try:
            for run in plan(layout, key, target):
                done = merge(con, layout, run, key)
                assert result.merges is not None
                result.merges.append(done)
                result.events += done.events
                if on_merge is not None:
                    on_merge(done)
                advance(done.events)
        finally:
            con.close()
        result.segments_after = len(layout.segments())
    return result


def events_to_compact(root: Path, key: SigningKey, target: int = TARGET_EVENTS) -> int:
    """Events in the runs a compaction would merge now (for a progress bar)."""
    runs = plan(Layout(root), key, target)
    return sum(s.last_seq - s.first_seq + 1 for run in runs for s in run)
