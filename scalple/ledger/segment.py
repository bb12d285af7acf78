"""Checking a sealed segment's events from its columns: the seq run and links (`check_links`,
columnar and fast), and every event hash recomputed from the event's values (`check_rows`)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import pyarrow as pa
import pyarrow.compute as pc

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


def _links_ok(batch: pa.RecordBatch, state: RowCheck) -> bool:
    """Seqs run on from `state` and each prev_hash is the hash before: Arrow kernels, no rows."""
    seq, prev, hashes = batch.column(0), batch.column(1), batch.column(2)
    n = len(batch)
    if n == 0:
        return True
    if seq[0].as_py() != state.next_seq or prev[0].as_py() != state.last_hash:
        return False
    if n > 1 and not pc.all(pc.equal(pc.pairwise_diff(seq), 1)).as_py():
        return False
    return n == 1 or bool(pc.all(pc.equal(prev.slice(1), hashes.slice(0, n - 1))).as_py())


def _check_batch(batch: pa.RecordBatch, state: RowCheck, exact: Any | None) -> None:
    hashes = batch.column(2)
    bad: set[int] = set()
    if exact is not None:
        sha, domain = hashlib.sha256, EVENT_DOMAIN
        listed = hashes.to_pylist()
        canon = batch.column(3).to_pylist()
        bad = {
            i
            for i, (c, h) in enumerate(zip(canon, listed, strict=True))
            if sha(domain + c).hexdigest() != h
        }
        bad = {i for i in bad if exact(state.count + i) != listed[i]}
    if bad or not _links_ok(batch, state):
        found = _first_bad(
            batch.column(0).to_pylist(), batch.column(1).to_pylist(), hashes.to_pylist(), state, bad
        )
        if found is not None:
            i, what = found
            state.problem = Problem(state.next_seq + i, i + state.count, what)
            return
    n = len(batch)
    state.count += n
    state.next_seq += n
    state.last_hash = hashes[n - 1].as_py() if n else state.last_hash


def _schema_ok(con: duckdb.DuckDBPyConnection, path: Path) -> bool:
    schema = con.execute(f"DESCRIBE SELECT * FROM read_parquet({quote(path)})").fetchall()
    return {name: str(t) for name, t, *_ in schema} == COLUMN_TYPES


def check_links(
    con: duckdb.DuckDBPyConnection, path: Path, first_seq: int, prev_hash: str
) -> RowCheck:
    """Check the seq run and hash links of the Parquet file `path` from its three chain columns,
    without recomputing event hashes. Stops at the first bad row."""
    state = RowCheck(first_seq, prev_hash)
    if not _schema_ok(con, path):
        state.problem = Problem(first_seq, 0, "columns are not the audit event's fields")
        return state
    sql = f'SELECT "seq", "prev_hash", "hash" FROM read_parquet({quote(path)})'
    for batch in con.sql(sql).to_arrow_reader(BATCH_ROWS * 4):
        _check_batch(batch, state, None)
        if state.problem is not None:
            break
    return state


def check_rows(
    con: duckdb.DuckDBPyConnection, path: Path, first_seq: int, prev_hash: str
) -> RowCheck:
    """Recompute every event hash in the Parquet file `path` from its columns and check the seq
    run and links from (`first_seq`, `prev_hash`). Stops at the first bad row."""
    state = RowCheck(first_seq, prev_hash)
    if not _schema_ok(con, path):
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
