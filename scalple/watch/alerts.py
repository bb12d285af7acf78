"""Alerts read back from the ledger (for `dsar --actor`): what the live rules raised about one
actor, newest first."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scalple.ledger.query import ledger_view, read_again

if TYPE_CHECKING:
    import duckdb


def alerts_about(
    con: duckdb.DuckDBPyConnection, ledger: Path, actor: str, window: str = ""
) -> list[dict[str, Any]]:
    """Alert records about `actor` in the whole ledger (`window`: extra ts_start conditions).
    Replaces the connection's `events` view with one over every segment of every lane."""

    def read() -> list[tuple[Any, ...]]:
        ledger_view(con, ledger)
        return con.execute(
            "SELECT seq, event_id, ts_start, detail, lane FROM events WHERE kind = 'alert' "
            f"AND (actor = $actor OR actor_email = $actor) {window} "
            "ORDER BY ts_start DESC, lane DESC, seq DESC",
            {"actor": actor},
        ).fetchall()

    out = []
    for seq, event_id, ts, detail, lane in read_again(read):
        try:
            d = json.loads(detail or "{}")
        except ValueError:
            d = {}
        out.append(
            {
                "seq": seq,
                "lane": lane,
                "event_id": event_id,
                "ts_start": ts,
                "rule": d.get("rule"),
                "severity": d.get("severity"),
                "score": d.get("score"),
                "summary": d.get("summary"),
            }
        )
    return out
