"""Sealing: a closed journal becomes a read-only ZSTD Parquet segment and a signed checkpoint.

The segment is checked row by row against the journal's chain before it is signed, so a
checkpoint never vouches for a segment that does not reproduce every event hash.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from msgspec import UNSET, UnsetType

from scalple.errors import LedgerError
from scalple.ledger.checkpoint import Checkpoint, digest, file_sha256
from scalple.ledger.columns import READ_JSON_COLUMNS, SELECT_COLUMNS
from scalple.ledger.keys import SigningKey
from scalple.ledger.lanes import lanes_beside
from scalple.ledger.layout import Layout, fsync_path, write_atomically
from scalple.ledger.recovery import Pending

READ_ONLY = 0o444
ROW_GROUP_ROWS = 122_880


if TYPE_CHECKING:
    import duckdb


@dataclass(frozen=True)
class Sealed:
    checkpoint: Checkpoint
    digest: str


def _write_parquet(con: duckdb.DuckDBPyConnection, journal: Path, out: Path) -> None:
    from scalple.ledger.query import quote

    con.execute(
        f"COPY (SELECT {SELECT_COLUMNS} FROM read_json({quote(journal)}, "
        f"format='newline_delimited', columns={READ_JSON_COLUMNS}, auto_detect=false, "
        f"maximum_object_size=1073741824)) TO {quote(out)} "
        f"(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {ROW_GROUP_ROWS})"
    )


def _check(con: duckdb.DuckDBPyConnection, out: Path, pending: Pending) -> None:
    from scalple.ledger.segment import check_rows

    rows = check_rows(con, out, pending.first_seq, pending.first_prev_hash)
    if rows.problem is not None:
        raise LedgerError(
            f"sealing {pending.path.name}: segment differs from the journal at "
            f"seq {rows.problem.seq}: {rows.problem.what}"
        )
    if rows.count != pending.count or rows.last_hash != pending.last_hash:
        raise LedgerError(
            f"sealing {pending.path.name}: segment holds {rows.count} events, "
            f"the journal {pending.count}"
        )


def _write_checkpoint(path: Path, checkpoint: Checkpoint) -> bytes:
    data = checkpoint.encode()
    write_atomically(path, data, READ_ONLY)
    return data


def _lanes(layout: Layout) -> tuple[str, ...] | UnsetType:
    lanes = lanes_beside(layout.root)
    return UNSET if lanes is None else lanes


def seal(
    layout: Layout, pending: Pending, previous: Sealed | None, key: SigningKey, *, threads: int = 1
) -> Sealed:
    """Seal the closed journal `pending` after `previous`; delete the journal once signed."""
    last_seq = pending.first_seq + pending.count - 1
    files = layout.segment(pending.first_seq, last_seq)
    tmp = files.parquet.with_name(files.parquet.name + ".tmp")
    import duckdb  # here, not at import: the proxy loads DuckDB only when it first seals

    con = duckdb.connect(config={"threads": threads})
    try:
        _write_parquet(con, pending.path, tmp)
        _check(con, tmp, pending)
        os.chmod(tmp, READ_ONLY)
        fsync_path(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a disk full midway: the journal is still the record
        raise
    finally:
        con.close()
    os.replace(tmp, files.parquet)
    checkpoint = Checkpoint(
        segment=files.parquet.name,
        segment_sha256=file_sha256(files.parquet),
        events=pending.count,
        first_seq=pending.first_seq,
        last_seq=last_seq,
        first_prev_hash=pending.first_prev_hash,
        last_hash=pending.last_hash,
        prev_checkpoint=previous.digest if previous else "",
        sealed_at=time.time_ns() // 1000,
        public_key=key.public,
        lanes=_lanes(layout),
    ).signed(key)
    data = _write_checkpoint(files.checkpoint, checkpoint)
    fsync_path(layout.segment_dir)
    pending.path.unlink()
    layout.heads(pending.first_seq).unlink(missing_ok=True)  # the checkpoint vouches now
    return Sealed(checkpoint, digest(data))
