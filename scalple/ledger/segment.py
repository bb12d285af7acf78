"""Checking a sealed segment's events from its columns: seq run, links, and every event hash."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import pyarrow as pa

from scalple.events import AuditEvent
from scalple.ledger.canonical import EVENT_DOMAIN, canonical_bytes, event_hash
from scalple.ledger.columns import CANONICAL_SQL, COLUMN_TYPES
from scalple.ledger.journal import Problem
from scalple.ledger.query import quote

BATCH_ROWS = 1 << 16


class RowCheck:
    """Running state across batches: the seq and hash the next row must carry."""

    def __init__(self, first_seq: int, prev_hash: str) -> None:
        self.next_seq = first_seq
        self.last_hash = prev_hash
        self.count = 0
        self.problem: Problem | None = None


def _exact_hash(con: duckdb.DuckDBPyConnection, path: Path, row: int) -> str:
    # The fast SQL rendering differs from msgspec only for rare control characters: decide
    # such a row exactly, from its values, through the one canonical encoder.
    rel = con.cursor().execute(f"SELECT * FROM read_parquet({quote(path)}) LIMIT 1 OFFSET {row}")
    names = [d[0] for d in rel.description]
    values: dict[str, Any] = dict(zip(names, rel.fetchone() or (), strict=False))
    try:
        event = msgspec.convert(values, AuditEvent)
    except msgspec.ValidationError:
        return ""
    return event_hash(canonical_bytes(event))


def _first_bad(
    seqs: list[int], prevs: list[str], hashes: list[str], state: RowCheck, bad_hash: set[int]
) -> tuple[int, str] | None:
    last = state.last_hash
    for i, (seq, prev, h) in enumerate(zip(seqs, prevs, hashes, strict=True)):
        if seq != state.next_seq + i:
            return i, f"seq {seq} where {state.next_seq + i} was expected"
        if prev != last:
            return i, "prev_hash does not link to the previous event"
        if i in bad_hash:
            return i, "hash does not match the event's content"
        last = h
    return None


def _check_batch(batch: pa.RecordBatch, state: RowCheck, exact: Any) -> None:
    seqs = batch.column(0).to_pylist()
    prevs = batch.column(1).to_pylist()
    hashes = batch.column(2).to_pylist()
    sha, domain = hashlib.sha256, EVENT_DOMAIN
    bad = {
        i
        for i, (c, h) in enumerate(zip(batch.column(3).to_pylist(), hashes, strict=True))
        if sha(domain + c).hexdigest() != h
    }
    bad = {i for i in bad if exact(state.count + i) != hashes[i]}
    in_order = seqs == list(range(state.next_seq, state.next_seq + len(seqs)))
    linked = prevs[:1] == [state.last_hash] and prevs[1:] == hashes[:-1]
    if bad or not in_order or not linked:
        found = _first_bad(seqs, prevs, hashes, state, bad)
        if found is not None:
            i, what = found
            state.problem = Problem(state.next_seq + i, i + state.count, what)
            return
    state.count += len(seqs)
    state.next_seq += len(seqs)
    state.last_hash = hashes[-1] if hashes else state.last_hash


def check_rows(
    con: duckdb.DuckDBPyConnection, path: Path, first_seq: int, prev_hash: str
) -> RowCheck:
    """Recompute every event hash in the Parquet file `path` from its columns and check the seq
    run and links from (`first_seq`, `prev_hash`). Stops at the first bad row."""
    state = RowCheck(first_seq, prev_hash)
    schema = con.execute(f"DESCRIBE SELECT * FROM read_parquet({quote(path)})").fetchall()
    found = {name: str(t) for name, t, *_ in schema}
    if found != COLUMN_TYPES:
        state.problem = Problem(first_seq, 0, "columns are not the audit event's fields")
        return state
    sql = (
        f'SELECT "seq", "prev_hash", "hash", encode({CANONICAL_SQL}) '
        f"FROM read_parquet({quote(path)})"
    )
    reader = con.sql(sql).to_arrow_reader(BATCH_ROWS)
    for batch in reader:
        _check_batch(batch, state, lambda row: _exact_hash(con, path, row))
        if state.problem is not None:
            break
    return state
