"""The two questions: every access to one person's data, and everything one actor did.

Sealed data up to the index's end is reached through the subject index; everything after it
(unindexed segments and the live journal) is read directly through the ledger's `events` view.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final

import duckdb

from scalple.dsar.index import (
    Hit,
    IndexState,
    access_file,
    actor_files,
    lookup,
    open_index,
    pending_seq,
    sealed_segments,
    sk_of,
)
from scalple.dsar.proof import Coverage, Verification, combined, coverage, ledger_coverage
from scalple.dsar.subjects import SubjectKey
from scalple.ledger.columns import SELECT_COLUMNS
from scalple.ledger.lanes import LANES, ROOT, ledger_lanes
from scalple.ledger.layout import Layout
from scalple.ledger.query import events_view, quote, read_again
from scalple.watch.alerts import alerts_about

Record = dict[str, Any]
BULK_ROWS: Final = 100


@dataclass
class Access:
    """One statement that touched the subject, statement and outcome records merged."""

    event_id: str
    seq: int
    ts: int
    actor: str | None
    actor_email: str | None
    identity_source: str
    client_addr: str | None
    client_port: int | None
    application_name: str | None
    db_role: str | None
    database: str | None
    audit_class: str | None
    tables: list[str]
    columns: list[str]
    rows: int | None
    status: str
    sqlstate: str | None
    statement: str | None
    seen_in: list[str]  # "statement" (literal or parameter), "result" (rows or COPY)
    matched: list[str]  # which of the asked identifiers
    records: list[Record] = field(default_factory=list)  # the raw ledger records (for proofs)
    segment: str | None = None  # segment of the statement record; None while in the journal
    lane: str = ROOT  # the lane it was recorded in (scalple.ledger.lanes); seq counts per lane


@dataclass
class SubjectAnswer:
    subjects: list[SubjectKey]
    accesses: list[Access]
    coverage: Coverage
    verification: Verification
    since: int | None
    until: int | None
    index: str


_DATABASE: list[duckdb.DuckDBPyConnection] = []


def connect() -> duckdb.DuckDBPyConnection:
    """A connection of its own (temp views are per connection) to the process's one DuckDB
    instance, so Parquet footers read for one answer serve the next: segments and index files
    never change under a name, and DuckDB checks a file's mtime before it trusts its cache."""
    if not _DATABASE:
        db = duckdb.connect(config={"threads": 2})
        db.execute("SET GLOBAL parquet_metadata_cache = true")
        _DATABASE.append(db)
    con = _DATABASE[0].cursor()
    con.execute("SET enable_progress_bar = false")
    return con


def _rows(cur: duckdb.DuckDBPyConnection) -> list[Record]:
    names = [d[0] for d in cur.description or ()]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _in_list(values: Iterable[Any]) -> str:
    return ", ".join(quote(v) if isinstance(v, str) else str(int(v)) for v in values)


def _fetch_sealed(con: duckdb.DuckDBPyConnection, ledger: Path, seqs: set[int]) -> list[Record]:
    """Records at `seqs` from the segments holding them (row groups pruned by seq)."""
    if not seqs:
        return []
    segments = sealed_segments(Layout(ledger))
    firsts = [s.first_seq for s in segments]
    files = set()
    for seq in seqs:
        i = bisect.bisect_right(firsts, seq) - 1
        if i >= 0 and segments[i].last_seq >= seq:
            files.add(segments[i].parquet)
    if not files:
        return []
    paths = ", ".join(quote(p) for p in sorted(files))
    return _rows(
        con.execute(
            f"SELECT {SELECT_COLUMNS} FROM read_parquet([{paths}]) "
            f"WHERE seq IN ({_in_list(sorted(seqs))})"
        )
    )


def _scan_unindexed(
    con: duckdb.DuckDBPyConnection, upto: int, hashes: Sequence[str], event_ids: set[str]
) -> list[Record]:
    cond = [f"list_has_any(subjects, [{_in_list(hashes)}]::VARCHAR[])"]
    if event_ids:
        cond.append(f"event_id IN ({_in_list(sorted(event_ids))})")
    return _rows(con.execute(f"SELECT * FROM events WHERE seq > {upto} AND ({' OR '.join(cond)})"))


def _merge(records: Iterable[Record], keys: Sequence[SubjectKey]) -> list[Access]:
    by_id: dict[tuple[str, str], list[Record]] = {}
    for r in records:
        if r["kind"] in ("statement", "outcome"):
            group = by_id.setdefault((r.get("lane", ROOT), r["event_id"]), [])
            if all(g["seq"] != r["seq"] for g in group):
                group.append(r)
    out = []
    for (lane, event_id), group in by_id.items():
        group.sort(key=lambda r: r["seq"])
        access = _access(event_id, lane, group, keys)
        if access is not None:
            out.append(access)
    return out


def _access(
    event_id: str, lane: str, group: list[Record], keys: Sequence[SubjectKey]
) -> Access | None:
    st = next((r for r in group if r["kind"] == "statement"), None)
    oc = next((r for r in group if r["kind"] == "outcome"), None)
    seen_in, matched = [], []
    for key in keys:
        hit = False
        for r, where in ((st, "statement"), (oc, "result")):
            if r is not None and key.hash in (r["subjects"] or ()):
                hit = True
                if where not in seen_in:
                    seen_in.append(where)
        if hit:
            matched.append(key.label)
    if not matched:
        return None  # a 60-bit index key collision, or a partner fetched for another hit
    base = st or oc
    assert base is not None
    status = (
        oc["status"] if oc else ("incomplete" if base["status"] == "pending" else base["status"])
    )
    return Access(
        event_id=event_id,
        seq=base["seq"],
        ts=base["ts_start"],
        actor=base["actor"],
        actor_email=base["actor_email"],
        identity_source=base["identity_source"],
        client_addr=base["client_addr"],
        client_port=base["client_port"],
        application_name=base["application_name"],
        db_role=base["db_role"],
        database=base["database"],
        audit_class=base["audit_class"],
        tables=list(base["tables"] or ()),
        columns=list(base["columns"] or ()),
        rows=oc["rows"] if oc else None,
        status=status,
        sqlstate=oc["sqlstate"] if oc else None,
        statement=base["statement"],
        seen_in=seen_in,
        matched=matched,
        records=group,
        segment=base.get("segment"),
        lane=lane,
    )


def _window(accesses: list[Access], since: int | None, until: int | None) -> list[Access]:
    kept = [
        a for a in accesses if (since is None or a.ts >= since) and (until is None or a.ts < until)
    ]
    return sorted(kept, key=lambda a: (a.ts, a.lane, a.seq), reverse=True)  # newest first


def _partners_missing(records: Iterable[Record]) -> set[str]:
    """Statements written ahead whose outcome is not at hand, and outcomes without statement."""
    kinds: dict[str, set[str]] = {}
    waits: set[str] = set()
    for r in records:
        kinds.setdefault(r["event_id"], set()).add(r["kind"])
        if r["kind"] == "outcome" or r["status"] == "pending":
            waits.add(r["event_id"])
    return {e for e, k in kinds.items() if k != {"statement", "outcome"} and e in waits}


def find_subject_records(
    con: duckdb.DuckDBPyConnection,
    ledger: Path,
    state: IndexState,
    keys: Sequence[SubjectKey],
    *,
    full: bool = False,
) -> list[Record]:
    """Every record naming one of `keys`, with the other record of each such statement.

    Unless `full`, indexed statements come from the index's access rows (small row groups, only
    what an answer shows); `full` reads every field from the segments, as a proof needs.
    """
    hashes = sorted({k.hash for k in keys})
    by_sk = {sk_of(h): h for h in hashes}
    hits = lookup(con, state, sorted(by_sk))
    records: list[Record] = []
    slow = set()
    if full:
        slow = {h.seq for h in hits} | {h.partner for h in hits if h.partner is not None}
    else:
        fast, rest = _access_rows(con, ledger, state, hits, by_sk)
        records += fast
        slow = rest
    records += _fetch_sealed(con, ledger, slow)
    records += _scan_unindexed(con, state.upto, hashes, set())
    missing = _partners_missing(records)
    if missing:
        # Partners past the index, or statements indexed while their outcome was pending.
        records += _by_event_id(con, f"seq > {state.upto}", missing)
        parked = pending_seq(state)
        records += _fetch_sealed(con, ledger, {parked[e] for e in missing if e in parked})
    if missing := _partners_missing(records):
        events_view(con, ledger)  # not where expected: look everywhere
        records += _by_event_id(con, "true", missing)
    return _with_segments(ledger, records)


_ACCESS_COLUMNS: Final = (
    "seq, oseq, event_id, ts_start, actor, actor_email, identity_source, client_addr, "
    "client_port, application_name, db_role, database, audit_class, tables, columns, rows, "
    "status, sqlstate, statement"
)


def _access_rows(
    con: duckdb.DuckDBPyConnection,
    ledger: Path,
    state: IndexState,
    hits: Sequence[Hit],
    by_sk: dict[int, str],
) -> tuple[list[Record], set[int]]:
    """Statement and outcome records rebuilt from access rows (fields an answer shows, plus the
    subject where the index saw it); seqs to read from segments instead, where rows lack it."""
    st_hits: dict[int, list[Hit]] = {}
    slow: set[int] = set()
    for h in hits:
        st = h.statement_seq
        if st is None:
            slow.add(h.seq)
        else:
            st_hits.setdefault(st, []).append(h)
    segments = sealed_segments(Layout(ledger))
    firsts = [s.first_seq for s in segments]
    files = set()
    for seq in st_hits:
        i = bisect.bisect_right(firsts, seq) - 1
        files.add(access_file(state, segments[i].parquet.name))
    if not st_hits or not all(f.exists() for f in files):
        return [], slow | set(st_hits) | {h.partner for h in hits if h.partner is not None}
    paths = ", ".join(quote(p) for p in sorted(files))
    rows = _rows(
        con.execute(
            f"SELECT {_ACCESS_COLUMNS} FROM read_parquet([{paths}]) "
            f"WHERE seq IN ({_in_list(sorted(st_hits))})"
        )
    )
    records: list[Record] = []
    for row in rows:
        group = st_hits[row["seq"]]
        oseq = row.pop("oseq")
        named = {False: [], True: []}  # type: dict[bool, list[str]]
        for h in group:
            named[h.result].append(by_sk[h.sk])
        records.append({**row, "kind": "statement", "subjects": named[False], "hash": None})
        if oseq is None:
            if row["status"] not in ("pending",):
                continue  # a statement that never gets an outcome (refused, skipped)
            slow |= {h.partner for h in group if h.partner is not None}
            continue
        records.append(
            {
                "kind": "outcome",
                "seq": oseq,
                "event_id": row["event_id"],
                "ts_start": row["ts_start"],
                "rows": row["rows"],
                "status": row["status"],
                "sqlstate": row["sqlstate"],
                "subjects": named[True],
                "hash": None,
            }
        )
    return records, slow


def _by_event_id(con: duckdb.DuckDBPyConnection, where: str, event_ids: set[str]) -> list[Record]:
    return _rows(
        con.execute(
            f"SELECT * FROM events WHERE {where} AND event_id IN ({_in_list(sorted(event_ids))})"
        )
    )


def _with_segments(ledger: Path, records: list[Record]) -> list[Record]:
    """Name the sealed segment of each record (None while it is in the journal)."""
    segments = sealed_segments(Layout(ledger))
    firsts = [s.first_seq for s in segments]
    for r in records:
        i = bisect.bisect_right(firsts, r["seq"]) - 1
        inside = i >= 0 and segments[i].last_seq >= r["seq"]
        r["segment"] = segments[i].parquet.name if inside else None
    return records


def _in_lane(r: Record, lane: str) -> Record:
    """A record tagged with its lane; in a lane, its segment named from the ledger directory."""
    seg = r.get("segment")
    inside = f"{LANES}/{lane}/{seg}" if seg and lane != ROOT else seg
    return {**r, "lane": lane, "segment": inside}


def _subject_in_lane(
    con: duckdb.DuckDBPyConnection,
    root: Path,
    state: IndexState,
    keys: Sequence[SubjectKey],
    full: bool,
) -> tuple[list[Record], Coverage]:
    events_view(con, root, since_seq=state.upto)  # the rest: through the index
    found = find_subject_records(con, root, state, keys, full=full)
    return found, coverage(con, root, state.upto)


def subject_answer(
    ledger: Path,
    keys: Sequence[SubjectKey],
    verification: Verification,
    *,
    since: int | None = None,
    until: int | None = None,
    full: bool = False,
) -> SubjectAnswer:
    records: list[Record] = []
    covers, notes = [], []
    lanes = ledger_lanes(ledger)
    for lane in lanes:  # each lane is a ledger of its own, with its own index
        state = open_index(lane.root)
        con = connect()
        try:
            found, cover = read_again(partial(_subject_in_lane, con, lane.root, state, keys, full))
        finally:
            con.close()
        covers.append(cover)
        records += (_in_lane(r, lane.name) for r in found)
        note = f"stale ({state.stale}); read directly" if state.stale else f"up to seq {state.upto}"
        notes.append(note if len(lanes) == 1 else f"lane {lane.name}: {note}")
    return SubjectAnswer(
        subjects=list(keys),
        accesses=_window(_merge(records, keys), since, until),
        coverage=combined(covers),
        verification=verification,
        since=since,
        until=until,
        index="; ".join(notes),
    )


# -- actor ---------------------------------------------------------------------------------------


@dataclass
class ActorAnswer:
    actor: str
    statements: list[Record]
    days: list[Record]
    tables: list[Record]
    bulk_reads: list[Record]
    errors: list[Record]
    total: int
    alerts: list[Record]  # what the live rules raised about the actor (kind "alert")
    coverage: Coverage
    verification: Verification
    since: int | None
    until: int | None
    limit: int


_ACTOR_SQL: Final = """
CREATE OR REPLACE TEMP TABLE acts AS
WITH st AS (
  SELECT seq, event_id, ts_start, identity_source, client_addr, application_name, audit_class,
         tables, statement, status, subjects
  FROM events WHERE seq > {upto} AND kind = 'statement'
    AND (actor = $actor OR actor_email = $actor) {window}
), oc AS (
  SELECT event_id, rows, status, sqlstate, subjects
  FROM events WHERE seq > {upto} AND kind = 'outcome' AND event_id IN (SELECT event_id FROM st)
)
SELECT st.seq, st.event_id, st.ts_start, st.identity_source, st.client_addr,
       st.application_name, st.audit_class, st.tables, st.statement,
       coalesce(oc.status, st.status) AS status, oc.sqlstate, oc.rows,
       list_distinct(list_concat(st.subjects, coalesce(oc.subjects, []))) AS subjects
FROM st LEFT JOIN oc USING (event_id)
{indexed}
"""

# Indexed segments: their access rows hold the statement with its outcome merged in already.
_ACTOR_INDEXED: Final = """
UNION ALL
SELECT seq, event_id, ts_start, identity_source, client_addr, application_name, audit_class,
       tables, statement, status, sqlstate, rows, list_transform(sks, lambda k: CAST(k AS VARCHAR))
FROM read_parquet([{files}])
WHERE who = $actor {window}
"""

_LATE_OUTCOMES: Final = """
UPDATE acts SET status = oc.status, sqlstate = oc.sqlstate, rows = oc.rows,
  subjects = list_distinct(list_concat(acts.subjects, oc.subjects))
FROM (SELECT event_id, status, sqlstate, rows,
             list_transform(subjects, lambda h: CAST({sk} AS VARCHAR)) AS subjects
      FROM events WHERE kind = 'outcome' AND seq > $first AND event_id IN ({ids})) oc
WHERE acts.event_id = oc.event_id AND acts.status = 'pending'
"""


def _actor_lanes(con: duckdb.DuckDBPyConnection, ledger: Path, actor: str, window: str) -> None:
    """Table `acts` over every lane (with a `lane` column), as `_actor_rows` makes it of one."""
    lanes = ledger_lanes(ledger)
    for i, lane in enumerate(lanes):
        _actor_rows(con, lane.root, actor, window, as_keys=len(lanes) > 1)
        rows = f"SELECT *, {quote(lane.name)} AS lane FROM acts"
        if i == 0:
            con.execute(f"CREATE OR REPLACE TEMP TABLE acts_lanes AS {rows}")
        else:
            con.execute(f"INSERT INTO acts_lanes {rows}")
    con.execute("CREATE OR REPLACE TEMP TABLE acts AS SELECT * FROM acts_lanes")
    con.execute("DROP TABLE acts_lanes")


def _actor_rows(
    con: duckdb.DuckDBPyConnection, ledger: Path, actor: str, window: str, *, as_keys: bool
) -> None:
    """Table `acts`: the actor's statements, outcome merged, subjects as distinct keys (or, in
    a lane never indexed, hashes; `as_keys`: keys always, to count alike with other lanes)."""
    state = open_index(ledger)
    files = [f for f in actor_files(state) if f.exists()]
    full = len(files) == len(state.manifest.segments) and not state.stale
    upto = state.upto if full else 0
    indexed = (
        _ACTOR_INDEXED.format(files=_in_list(map(str, files)), window=window)
        if full and files
        else ""
    )

    def read() -> None:
        events_view(con, ledger, since_seq=upto)  # the rest is in the index's actor rows
        con.execute(_ACTOR_SQL.format(window=window, upto=upto, indexed=indexed), {"actor": actor})

    read_again(read)
    if upto or as_keys:
        # Indexed subjects are 60-bit keys; make the directly read ones keys too, to count alike.
        con.execute(
            f"UPDATE acts SET subjects = list_transform(subjects, lambda h: "
            f"CAST({_sk_expr('h')} AS VARCHAR)) WHERE seq > {upto}"
        )
        late = [
            r[0]
            for r in con.execute("SELECT event_id FROM acts WHERE status = 'pending'").fetchall()
        ]
        if late:
            first = con.execute("SELECT min(seq) FROM acts WHERE status = 'pending'").fetchone()[0]  # type: ignore[index]
            if first <= upto:
                events_view(con, ledger, since_seq=first)  # outcomes sealed after a statement
            con.execute(
                _LATE_OUTCOMES.format(ids=_in_list(late), sk=_sk_expr("h")), {"first": first}
            )
    con.execute("UPDATE acts SET status = 'incomplete' WHERE status = 'pending'")


def _sk_expr(x: str) -> str:
    return f"CAST(('0x' || substr({x}, 1, 15)) AS BIGINT)"


def actor_answer(
    ledger: Path,
    actor: str,
    verification: Verification,
    *,
    since: int | None = None,
    until: int | None = None,
    limit: int = 100,
    bulk_rows: int = BULK_ROWS,
) -> ActorAnswer:
    window = "".join(
        [
            f" AND ts_start >= {int(since)}" if since is not None else "",
            f" AND ts_start < {int(until)}" if until is not None else "",
        ]
    )
    con = connect()
    try:
        _actor_lanes(con, ledger, actor, window)
        total = con.execute("SELECT count(*) FROM acts").fetchone()[0]  # type: ignore[index]
        day = "strftime(make_timestamp(ts_start), '%Y-%m-%d')"
        answer = ActorAnswer(
            actor=actor,
            statements=_rows(
                con.execute(
                    "SELECT seq, event_id, ts_start, identity_source, client_addr, audit_class, "
                    "tables, rows, status, sqlstate, len(subjects) AS subjects, statement, lane "
                    f"FROM acts ORDER BY ts_start DESC, lane DESC, seq DESC LIMIT {int(limit)}"
                )
            ),
            days=_rows(
                con.execute(
                    f"SELECT {day} AS day, count(*) AS statements, "
                    "len(list_distinct(flatten(list(subjects)))) AS distinct_subjects, "
                    "sum(coalesce(rows, 0)) AS rows, "
                    "count(*) FILTER (WHERE status = 'error') AS errors "
                    "FROM acts GROUP BY day ORDER BY day DESC"
                )
            ),
            tables=_rows(
                con.execute(
                    "SELECT t AS table_name, count(*) AS statements, "
                    "sum(coalesce(rows, 0)) AS rows FROM (SELECT unnest(tables) AS t, rows "
                    "FROM acts) GROUP BY t ORDER BY statements DESC, t"
                )
            ),
            bulk_reads=_rows(
                con.execute(
                    "SELECT seq, event_id, ts_start, rows, len(subjects) AS subjects, tables, "
                    f"statement, lane FROM acts WHERE audit_class = 'READ' "
                    f"AND rows >= {int(bulk_rows)} "
                    f"ORDER BY ts_start DESC, lane DESC, seq DESC LIMIT {int(limit)}"
                )
            ),
            errors=_rows(
                con.execute(
                    "SELECT seq, event_id, ts_start, status, sqlstate, statement, lane FROM acts "
                    "WHERE status NOT IN ('ok', 'pending') "
                    f"ORDER BY ts_start DESC, lane DESC, seq DESC LIMIT {int(limit)}"
                )
            ),
            total=int(total),
            alerts=alerts_about(con, ledger, actor, window),
            coverage=ledger_coverage(con, ledger),
            verification=verification,
            since=since,
            until=until,
            limit=limit,
        )
    finally:
        con.close()
    return answer
