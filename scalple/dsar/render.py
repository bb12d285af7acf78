"""Answers as text for people (rich tables), JSON and CSV for machines, HTML to hand over."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Sequence
from typing import Any

from rich.console import Group
from rich.text import Text

from scalple.dsar.proof import Coverage, Verification
from scalple.dsar.query import Access, ActorAnswer, SubjectAnswer
from scalple.ledger.lanes import ROOT
from scalple.tabular import Column, Fields, Rows


def when(ts: int | None) -> str:
    if ts is None:
        return "-"
    return (
        time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts / 1e6))
        + f".{ts % 1_000_000 // 1000:03d}Z"
    )


def _range(c: Coverage) -> str:
    seqs = f"{c.lanes} lanes" if c.lanes > 1 else f"seq {c.first_seq}..{c.last_seq}"
    text = (
        f"{seqs}, {when(c.first_ts)} to {when(c.last_ts)} "
        f"({c.segments} sealed segments + {c.journal_events} journal events)"
    )
    return text if c.last_seq else "empty ledger"


def coverage_json(c: Coverage) -> dict[str, Any]:
    return {
        "first_seq": c.first_seq,
        "last_seq": c.last_seq,
        "first_ts": when(c.first_ts),
        "last_ts": when(c.last_ts),
        "segments": c.segments,
        "journal_events": c.journal_events,
        "indexed_upto": c.indexed_upto,
        "lanes": c.lanes,
    }


def verification_json(v: Verification) -> dict[str, Any]:
    return {
        "result": "intact" if v.intact else "failed",
        "mode": v.mode,
        "first_bad": v.first_bad,
        "summary": v.summary(),
        "warnings": v.warnings,
    }


def proof_of(a: Access) -> list[dict[str, Any]]:
    return [
        {
            "kind": r["kind"],
            "seq": r["seq"],
            "hash": r["hash"],
            "segment": r.get("segment"),
        }
        for r in a.records
    ]


def access_json(a: Access) -> dict[str, Any]:
    return {
        "ts": when(a.ts),
        "event_id": a.event_id,
        "seq": a.seq,
        "lane": a.lane,
        "actor": a.actor,
        "actor_email": a.actor_email,
        "identity_source": a.identity_source,
        "client_addr": a.client_addr,
        "client_port": a.client_port,
        "application_name": a.application_name,
        "db_role": a.db_role,
        "database": a.database,
        "class": a.audit_class,
        "tables": a.tables,
        "columns": a.columns,
        "rows": a.rows,
        "status": a.status,
        "sqlstate": a.sqlstate,
        "statement": a.statement,
        "seen_in": a.seen_in,
        "matched": a.matched,
        "proof": proof_of(a),
    }


def subject_json(ans: SubjectAnswer) -> dict[str, Any]:
    return {
        "query": {
            "subjects": [{"column": k.column, "kind": k.kind} for k in ans.subjects],
            "since": when(ans.since) if ans.since is not None else None,
            "until": when(ans.until) if ans.until is not None else None,
        },
        "ledger": coverage_json(ans.coverage),
        "verification": verification_json(ans.verification),
        "index": ans.index,
        "count": len(ans.accesses),
        "accesses": [access_json(a) for a in ans.accesses],
    }


CSV_FIELDS = (
    "ts", "event_id", "seq", "actor", "identity_source", "client_addr", "application_name",
    "class", "tables", "columns", "rows", "status", "seen_in", "statement",
)  # fmt: skip


def _csv(rows: Sequence[dict[str, Any]], fields: Sequence[str]) -> str:
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: ";".join(v) if isinstance(v, list) else v for k, v in row.items()})
    return out.getvalue()


def subject_csv(ans: SubjectAnswer) -> str:
    return _csv([access_json(a) for a in ans.accesses], CSV_FIELDS)


def _who(actor: str | None, source: str) -> str:
    return f"{actor or '(unknown)'} [{source}]"


SUBJECT_COLUMNS = (
    "when", "who", "from", "class", "tables / columns", "rows", "status", "seen in", "event id",
    Column("statement", long=True),
)  # fmt: skip


def _access_row(a: Access) -> list[str]:
    return [
        when(a.ts),
        _who(a.actor, a.identity_source),
        f"{a.client_addr or '-'} {a.application_name or ''}".strip(),
        a.audit_class or "-",
        ", ".join(a.tables) + ("\n" + ", ".join(a.columns) if a.columns else ""),
        "-" if a.rows is None else str(a.rows),
        a.status + (f" {a.sqlstate}" if a.sqlstate else ""),
        ", ".join(a.seen_in),
        f"{a.event_id} (seq {a.seq})" if a.lane == ROOT else f"{a.event_id} ({a.lane} seq {a.seq})",
        a.statement or "-",
    ]


def subject_table(ans: SubjectAnswer) -> Group:
    """For people: a table when the width allows, one block per access when not."""
    asked = ", ".join(k.label for k in ans.subjects)
    head = Group(
        Text.assemble(("Accesses to ", "bold"), (asked, "bold cyan"), f": {len(ans.accesses)}"),
        Fields(
            [
                ("ledger", _range(ans.coverage)),
                ("verification", ans.verification.summary()),
                ("index", ans.index),
            ]
        ),
    )
    if not ans.accesses:
        return Group(head, Text("no accesses found"))
    return Group(head, Rows(SUBJECT_COLUMNS, [_access_row(a) for a in ans.accesses]))


# -- actor ---------------------------------------------------------------------------------------


def _jsonable(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        row = dict(r)
        if "ts_start" in row:
            row["ts"] = when(row.pop("ts_start"))
        out.append(row)
    return out


def actor_json(ans: ActorAnswer) -> dict[str, Any]:
    return {
        "query": {
            "actor": ans.actor,
            "since": when(ans.since) if ans.since is not None else None,
            "until": when(ans.until) if ans.until is not None else None,
            "limit": ans.limit,
        },
        "ledger": coverage_json(ans.coverage),
        "verification": verification_json(ans.verification),
        "statements_total": ans.total,
        "alerts": _jsonable(ans.alerts),
        "days": ans.days,
        "tables": ans.tables,
        "bulk_reads": _jsonable(ans.bulk_reads),
        "errors": _jsonable(ans.errors),
        "statements": _jsonable(ans.statements),
    }


def _rows_table(title: str, rows: Sequence[dict[str, Any]], cols: Sequence[str]) -> Rows:
    columns = [Column(c, long=c == "statement") for c in cols]
    cells = [[_cell(r.get(c if c != "ts" else "ts_start"), c) for c in cols] for r in rows]
    return Rows(columns, cells, title=title)


def _cell(v: Any, col: str) -> str:
    if v is None:
        return "-"
    if col == "ts":
        return when(int(v))
    if isinstance(v, list):
        return ", ".join(map(str, v))
    return str(v)


def actor_table(ans: ActorAnswer) -> Group:
    head = Group(
        Text.assemble(("Everything ", "bold"), (ans.actor, "bold cyan"),
                      (f" did: {ans.total} statements", "bold")),
        Fields([("ledger", _range(ans.coverage)),
                ("verification", ans.verification.summary())]),
    )  # fmt: skip
    return Group(
        head,
        *([_rows_table("Alerts raised about them", ans.alerts,
                       ("ts", "severity", "rule", "summary", "event_id"))] if ans.alerts else []),
        _rows_table("Per day", ans.days,
                    ("day", "statements", "distinct_subjects", "rows", "errors")),
        _rows_table("Tables", ans.tables, ("table_name", "statements", "rows")),
        _rows_table(f"Bulk reads (newest {ans.limit})", ans.bulk_reads,
                    ("ts", "rows", "subjects", "tables", "event_id", "statement")),
        _rows_table(f"Errors (newest {ans.limit})", ans.errors,
                    ("ts", "status", "sqlstate", "event_id", "statement")),
        _rows_table(f"Statements (newest {ans.limit})", ans.statements,
                    ("ts", "identity_source", "client_addr", "audit_class", "tables", "rows",
                     "status", "subjects", "event_id", "statement")),
    )  # fmt: skip


def actor_csv(ans: ActorAnswer) -> str:
    return _csv(
        _jsonable(ans.statements),
        ("ts", "seq", "event_id", "identity_source", "client_addr", "audit_class", "tables",
         "rows", "status", "sqlstate", "subjects", "statement"),
    )  # fmt: skip


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)
