"""DuckDB over a ledger: one `events` view across sealed segments and the unsealed journal, of one
lane (`events_view`) or of every lane of a ledger (`ledger_view`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import duckdb

from scalple.errors import LedgerError
from scalple.ledger.columns import COLUMN_TYPES, READ_JSON_COLUMNS, SELECT_COLUMNS
from scalple.ledger.lanes import Lane, ledger_lanes
from scalple.ledger.layout import Layout

JOURNAL_TABLE = "scalple_journal_snapshot"
_ATTEMPTS = 5
T = TypeVar("T")


def quote(path: Path | str) -> str:
    """A path (or any text) as a DuckDB string literal."""
    return "'" + str(path).replace("'", "''") + "'"


def _empty() -> str:
    casts = ", ".join(f'CAST(NULL AS {t}) AS "{n}"' for n, t in COLUMN_TYPES.items())
    return f"SELECT {casts} WHERE false"


def _snapshot(
    con: duckdb.DuckDBPyConnection, layout: Layout, since_seq: int, table: str = JOURNAL_TABLE
) -> str:
    # Journals listed (and opened, through DuckDB's read below) before segments: a journal
    # sealed meanwhile is then in the segment listing, and one removed before DuckDB reads it
    # makes the read fail and the view look again.
    journals_listed = layout.journals()
    segments = layout.sealed()
    sealed_upto = segments[-1].last_seq if segments else 0
    # Segments wholly before `since_seq` are left out: DuckDB would open each file to prune it.
    segments = [s for s in segments if s.last_seq >= min(since_seq, sealed_upto)]
    # A journal sealed but not yet deleted is skipped, so nothing shows twice.
    journals = [p for first, p in journals_listed if first > sealed_upto]
    source = _empty()
    if journals:
        files = ", ".join(quote(p) for p in journals)
        source = (
            f"SELECT {SELECT_COLUMNS} FROM read_json([{files}], format='newline_delimited', "
            f"columns={READ_JSON_COLUMNS}, auto_detect=false, ignore_errors=true, "
            f"maximum_object_size=1073741824) WHERE seq > {sealed_upto}"
        )
    # Journals are deleted once sealed, so their rows are copied now; segments never go away.
    con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS {source}")
    if not segments:
        return f"SELECT * FROM {table}"
    files = ", ".join(quote(s.parquet) for s in segments)
    return f"SELECT {SELECT_COLUMNS} FROM read_parquet([{files}]) UNION ALL SELECT * FROM {table}"


def events_view(
    con: duckdb.DuckDBPyConnection,
    ledger_dir: Path,
    *,
    since_seq: int = 0,
    name: str = "events",
    table: str = JOURNAL_TABLE,
) -> None:
    """Create (or replace) temp view `name`: every event in the ledger now, one row each.

    Columns are the `AuditEvent` fields (tuples as lists). It is a snapshot: sealed segments
    plus a copy of the unsealed journal as of this call; call again to see later events. A torn
    last journal line (a write in progress) is left out. Order by `seq` when order matters.
    With `since_seq`, sealed segments that end before it are left out of the view (so are
    their events; the last sealed segment and the journal are always in it). One directory
    only: in a ledger with lanes, one lane (`ledger_view` reads them all).
    """
    layout = Layout(Path(ledger_dir))
    for _ in range(_ATTEMPTS):
        try:
            body = _snapshot(con, layout, since_seq, table)
        except duckdb.IOException:
            continue  # a journal was sealed and removed while we read it: look again
        con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {body}")
        return
    raise LedgerError(f"ledger {ledger_dir} kept changing while being read; try again")


def ledger_view(
    con: duckdb.DuckDBPyConnection, ledger: Path, *, name: str = "events"
) -> list[tuple[Lane, str]]:
    """Create (or replace) temp view `name` over every lane of `ledger` (scalple.ledger.lanes):
    the `events_view` of each lane, taken one after another, with a `lane` column (".", the
    ledger's own files, for a ledger without lanes). Seqs count per lane: order the stream by
    `ts_start, lane, seq`. Returns each lane with the name of its own view."""
    parts, views = [], []
    for i, lane in enumerate(ledger_lanes(Path(ledger))):
        view = f"{name}_lane_{i}"
        events_view(con, lane.root, name=view, table=f"{JOURNAL_TABLE}_{i}")
        parts.append(f"SELECT *, {quote(lane.name)} AS lane FROM {view}")
        views.append((lane, view))
    con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {' UNION ALL '.join(parts)}")
    return views


def read_again(read: Callable[[], T], attempts: int = 8) -> T:
    """`read()`, which takes a view and queries it, asked again while a file it named vanishes
    (a compaction replaced segments, or the index merged its files, between the view and the
    query): both keep every event, so a new view finds them. The view and its query are taken
    together each time, so the window a compaction can fall into is one query long."""
    for attempt in range(attempts - 1):
        try:
            return read()
        except duckdb.IOException:
            time.sleep(0.02 * 2**attempt)
    return read()
