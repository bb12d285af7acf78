"""A merged segment's side file: the checkpoints it replaced, checked as `verify` needs them.

Kept apart from compaction itself so that a reader checking a ledger imports no DuckDB until a
segment really needs reading.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from scalple.ledger.checkpoint import (
    Checkpoint,
    CompactedCheckpoint,
    decode_checkpoint,
    digest,
    followers,
)
from scalple.ledger.layout import Layout, SegmentFiles
from scalple.ledger.trust import KeyChain

if TYPE_CHECKING:
    import duckdb


def boundaries_ok(
    con: duckdb.DuckDBPyConnection, path: Path, olds: list[Checkpoint]
) -> tuple[int, str] | None:
    """Each replaced segment's last hash at its last seq in the merged file (or the first that
    is not)."""
    ends = {o.last_seq: o.last_hash for o in olds}
    seqs = ", ".join(map(str, sorted(ends)))
    from scalple.ledger.query import quote

    rows = dict(
        con.execute(
            f'SELECT "seq", "hash" FROM read_parquet({quote(path)}) WHERE "seq" IN ({seqs})'
        ).fetchall()
    )
    for seq, h in sorted(ends.items()):
        if rows.get(seq) != h:
            return seq, "event hash differs from the one a replaced checkpoint signed"
    return None


def check_replaced(
    con: duckdb.DuckDBPyConnection | None,
    layout: Layout,
    seg: SegmentFiles,
    cp: CompactedCheckpoint,
    keys: KeyChain,
) -> tuple[Path, int | None, str] | None:
    """The first problem (file, seq, what) with a merged segment's side file of replaced
    checkpoints: each one canonical, signed by a trusted key, chained to the one before,
    listed by `cp`, together covering exactly `cp`'s seqs and hashes. Given a connection, each
    one's last hash is also looked up at its seq in the segment."""
    side = layout.replaced(seg)
    try:
        lines = side.read_bytes().splitlines(keepends=True)
    except FileNotFoundError:
        return side, seg.first_seq, "side file of the checkpoints this segment replaced is missing"
    if tuple(digest(line) for line in lines) != cp.replaces:
        return side, seg.first_seq, "replaced checkpoints are not the ones its checkpoint lists"
    prevs: tuple[str, ...] = (cp.prev_checkpoint,)
    last_hash, next_seq, rank = cp.first_prev_hash, cp.first_seq, -1
    olds: list[Checkpoint] = []
    for line in lines:
        try:
            old = decode_checkpoint(line)
        except (msgspec.DecodeError, UnicodeDecodeError):
            return side, next_seq, "a replaced checkpoint is not a checkpoint"
        old_rank = keys.rank(old.public_key)
        problem = (
            "a replaced checkpoint is not in canonical form"
            if line != old.encode()
            else "a replaced checkpoint's signature is not valid"
            if not old.signature_valid()
            else "a replaced checkpoint is signed by an untrusted or retired key"
            if old_rank is None or (olds and old_rank < rank)
            else "replaced checkpoints do not chain"
            if old.prev_checkpoint not in prevs
            or old.first_prev_hash != last_hash
            or old.first_seq != next_seq
            or old.events != old.last_seq - old.first_seq + 1
            else ""
        )
        if problem:
            return side, next_seq, problem
        rank = old_rank or 0
        prevs, last_hash, next_seq = followers(old, digest(line)), old.last_hash, old.last_seq + 1
        olds.append(old)
    if next_seq != cp.last_seq + 1 or last_hash != cp.last_hash:
        return side, cp.first_seq, "replaced checkpoints do not cover the merged segment"
    if con is not None and (bad := boundaries_ok(con, seg.parquet, olds)) is not None:
        return seg.parquet, *bad
    return None


def replaced_checkpoints(layout: Layout, seg: SegmentFiles) -> list[Checkpoint]:
    """The checkpoints a merged segment replaced, from its side file ([] if none)."""
    try:
        lines = layout.replaced(seg).read_bytes().splitlines(keepends=True)
    except FileNotFoundError:
        return []
    return [decode_checkpoint(line) for line in lines]
