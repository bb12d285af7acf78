"""DuckDB over a ledger: one `events` view across sealed segments and the unsealed journal."""

from __future__ import annotations

from pathlib import Path

import duckdb

from scalple.ledger.columns import COLUMN_TYPES, READ_JSON_COLUMNS, SELECT_COLUMNS
from scalple.ledger.layout import Layout


def quote(path: Path) -> str:
    """A path as a DuckDB string literal."""
    return "'" + str(path).replace("'", "''") + "'"


def _empty() -> str:
    casts = ", ".join(f'CAST(NULL AS {t}) AS "{n}"' for n, t in COLUMN_TYPES.items())
    return f"SELECT {casts} WHERE false"


def events_view(con: duckdb.DuckDBPyConnection, ledger_dir: Path) -> None:
    """Create (or replace) view `events`: every event in the ledger, one row each, by seq.

    The view lists the files present now; call again to see segments sealed later. Columns are
    the `AuditEvent` fields. A torn last journal line (a write in progress) is left out.
    """
    layout = Layout(Path(ledger_dir))
    segments = [s for s in layout.segments() if s.checkpoint.exists()]
    sealed_upto = segments[-1].last_seq if segments else 0
    # A journal whose events were sealed but not yet deleted is skipped, so nothing shows twice.
    journals = [p for first, p in layout.journals() if first > sealed_upto]
    parts = []
    if segments:
        files = ", ".join(quote(s.parquet) for s in segments)
        parts.append(f"SELECT {SELECT_COLUMNS} FROM read_parquet([{files}])")
    if journals:
        files = ", ".join(quote(p) for p in journals)
        parts.append(
            f"SELECT {SELECT_COLUMNS} FROM read_json([{files}], format='newline_delimited', "
            f"columns={READ_JSON_COLUMNS}, auto_detect=false, ignore_errors=true, "
            f"maximum_object_size=1073741824) WHERE seq > {sealed_upto}"
        )
    body = " UNION ALL ".join(parts) if parts else _empty()
    con.execute(f"CREATE OR REPLACE VIEW events AS {body}")
