"""Write a realistic synthetic ledger: many actors, long-tailed subjects, bulk reads, six months.

    python bench/gen_ledger.py OUT --events 10_000_000 [--mode bulk|sink] [--end TIME]

The six months end now (or at --end, an ISO date or time, UTC when no zone is given), so
`scalple dsar --since 1y` finds them.

OUT/ledger is the ledger, OUT/keys its key directory (signing key, subject secret), OUT/meta.json
what was made (and example subjects and actors to ask about). Every event is a real chained
record with a real hash; every segment has a real signed checkpoint, so `scalple verify` passes.

--mode sink appends every event through `LedgerSink` (the proxy's path: chain, journal, seal).
--mode bulk (the fast path for large sizes) renders each segment's canonical records inside
DuckDB with the ledger's own canonical SQL (without the JSON escaping its text never needs),
chains and hashes them in order straight from Arrow buffers while a second thread renders the
next segment, and writes the segment and its signed checkpoint as sealing does; rows of every
segment are rechecked through msgspec, the proxy's own encoder. Subject hashes are HMACs with the
ledger's subject secret of `customer` ids and `email` addresses, exactly as the proxy makes them.
"""

from __future__ import annotations

import argparse
import binascii
import hashlib
import itertools
import json
import os
import random
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import duckdb
import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from scalple.analysis.subjects import subject_hash
from scalple.events import AuditEvent
from scalple.ledger.canonical import EVENT_DOMAIN, GENESIS, canonical_bytes, event_hash
from scalple.ledger.checkpoint import Checkpoint, digest, file_sha256
from scalple.ledger.columns import COLUMN_TYPES, SELECT_COLUMNS, canonical_sql
from scalple.ledger.keys import signing_key, subject_secret
from scalple.ledger.layout import Layout, write_atomically
from scalple.ledger.seal import READ_ONLY, ROW_GROUP_ROWS

SPAN: Final = 182 * 86_400 * 1_000_000  # six months, µs
SERVICES: Final = ("svc-app", "svc-billing", "svc-support", "svc-reporting", "svc-etl")
_SUFFIX: Final = b'","hash":""}'  # canonical form after the prev_hash value
_PLAIN_SQL: Final = canonical_sql(escaped=frozenset())  # see `_render`
SAMPLE_EDGE: Final = 200  # rows at each end of every segment rechecked through msgspec
SAMPLE_RANDOM: Final = 200  # and rows at random

# id, share, class, statement, tables, columns, stmt subjects, result subjects, rows
# subjects: c = customer kind of the drawn id, e = email kind of it.
TEMPLATES: Final = (
    (
        0,
        0.38,
        "READ",
        "SELECT id, name, email, phone FROM customers WHERE id = $1",
        ["public.customers"],
        [
            "public.customers.id",
            "public.customers.name",
            "public.customers.email",
            "public.customers.phone",
        ],
        "c",
        "ce",
        "1",
    ),
    (
        1,
        0.10,
        "READ",
        "SELECT id, name FROM customers WHERE email = '***'",
        ["public.customers"],
        ["public.customers.id", "public.customers.name", "public.customers.email"],
        "e",
        "ce",
        "1",
    ),
    (
        2,
        0.15,
        "READ",
        "SELECT o.id, o.total FROM orders o WHERE o.customer_id = $1",
        ["public.orders"],
        ["public.orders.id", "public.orders.total", "public.orders.customer_id"],
        "c",
        "",
        "r20",
    ),
    (
        3,
        0.10,
        "WRITE",
        "UPDATE customers SET phone = '***' WHERE id = $1",
        ["public.customers"],
        ["public.customers.phone", "public.customers.id"],
        "c",
        "",
        "1",
    ),
    (
        4,
        0.10,
        "WRITE",
        "INSERT INTO orders (customer_id, total) VALUES ($1, $2)",
        ["public.orders"],
        ["public.orders.customer_id", "public.orders.total"],
        "c",
        "",
        "1",
    ),
    (
        5,
        0.10,
        "READ",
        "SELECT region, count(*) FROM customers GROUP BY region",
        ["public.customers"],
        ["public.customers.region"],
        "",
        "",
        "12",
    ),
    (6, 0.068, "MISC", "COMMIT", [], [], "", "", "0"),
    (
        7,
        0.001,
        "READ",
        "SELECT id, name, email FROM customers WHERE region = '***'",
        ["public.customers"],
        [
            "public.customers.id",
            "public.customers.name",
            "public.customers.email",
            "public.customers.region",
        ],
        "",
        "b",
        "bulk",
    ),
    (
        8,
        0.001,
        "READ",
        "COPY (SELECT id, email FROM customers WHERE signup > '***') TO STDOUT",
        ["public.customers"],
        ["public.customers.id", "public.customers.email"],
        "",
        "b",
        "bulk",
    ),
)


def customer_id(i: int) -> str:
    return str(i)


def email_of(i: int) -> str:
    return f"customer{i}@example.com"


def human(i: int) -> str:
    return f"user{i:03d}@corp.example"


class Plan(msgspec.Struct, frozen=True):
    events: int
    subjects: int
    humans: int
    segment_events: int
    end: int  # µs since the epoch; the last statement starts one interval before it
    seed: int = 7

    @property
    def statements(self) -> int:
        return (self.events + 1) // 2

    @property
    def start(self) -> int:
        return self.end - SPAN


def _subject_table(con: duckdb.DuckDBPyConnection, secret: bytes, n: int) -> None:
    t = time.monotonic()
    ids = list(range(1, n + 1))
    cust = [subject_hash(secret, "customer", customer_id(i)) for i in ids]
    mail = [subject_hash(secret, "email", email_of(i)) for i in ids]
    con.register("subj_src", pa.table({"id": ids, "c": cust, "e": mail}))
    con.execute("CREATE TABLE subj AS SELECT * FROM subj_src ORDER BY id")
    con.unregister("subj_src")
    print(f"  {n:,} subjects hashed in {time.monotonic() - t:.1f}s", file=sys.stderr)


def _template_table(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        "CREATE TABLE tpl (t INT, lo DOUBLE, hi DOUBLE, cls VARCHAR, sql VARCHAR, "
        "tabs VARCHAR[], cols VARCHAR[], ss VARCHAR, rs VARCHAR, rowspec VARCHAR)"
    )
    lo = 0.0
    for t, share, cls, sql, tabs, cols, ss, rs, rowspec in TEMPLATES:
        con.execute(
            "INSERT INTO tpl VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (t, lo, lo + share, cls, sql, tabs, cols, ss, rs, rowspec),
        )
        lo += share
    con.execute("UPDATE tpl SET hi = 1.0 WHERE t = 8")


def _u(s: str, salt: int, seed: int) -> str:
    return f"((hash({s} * 131 + {salt * 7919 + seed}) % 1000003) / 1000003.0)"


def _statements_sql(plan: Plan, s_lo: int, s_hi: int) -> str:
    """One row per statement number in [s_lo, s_hi): who, what, whose data, outcome."""
    u = lambda salt: _u("s", salt, plan.seed)  # noqa: E731
    n, h = plan.subjects, plan.humans
    return f"""
    WITH base AS (
      SELECT s,
        {u(1)} AS u_tpl, {u(2)} AS u_actor, {u(3)} AS u_subj, {u(4)} AS u_err,
        {u(5)} AS u_rows, {u(6)} AS u_start, {u(7)} AS u_dur
      FROM range({s_lo}, {s_hi}) r(s)
    ), who AS (
      SELECT *, CASE WHEN u_actor < 0.7 THEN NULL
                     ELSE 1 + CAST(floor({h} * pow((u_actor - 0.7) / 0.3, 2)) AS BIGINT) % {h}
                END AS hum,
        1 + CAST(floor({n} * pow(u_subj, 2.5)) AS BIGINT) % {n} AS sid
      FROM base
    ), pick AS (
      SELECT w.*, p.* EXCLUDE (lo, hi),
        CASE WHEN p.rowspec = 'bulk' THEN 100 + CAST(u_rows * 1900 AS BIGINT) END AS bulk_n
      FROM who w JOIN tpl p ON w.u_tpl >= p.lo AND w.u_tpl < p.hi
    ), bulk AS (
      SELECT s, list(subj.c ORDER BY subj.id) AS bs FROM (
        SELECT s, 1 + (CAST(u_start * {n} AS BIGINT) + g) % {n} AS bid
        FROM pick, range(least(bulk_n, 1000)) t(g) WHERE bulk_n IS NOT NULL
      ) b JOIN subj ON subj.id = b.bid GROUP BY s
    )
    SELECT s,
      CASE WHEN hum IS NULL THEN
        ['{"','".join(SERVICES)}'][1 + (CASE WHEN rowspec = 'bulk' THEN 3 ELSE s % 5 END)]
        ELSE 'user' || lpad(CAST(hum AS VARCHAR), 3, '0') || '@corp.example' END AS actor,
      CASE WHEN hum IS NULL THEN 'comment' ELSE 'proxy_auth' END AS identity_source,
      CASE WHEN hum IS NULL THEN '10.0.1.' || CAST(s % 8 + 10 AS VARCHAR)
           ELSE '10.2.' || CAST(hum // 200 AS VARCHAR) || '.' || CAST(hum % 200 + 20 AS VARCHAR)
      END AS client_addr,
      CASE WHEN hum IS NULL THEN 'app' WHEN hum % 3 = 0 THEN 'DBeaver' ELSE 'psql' END AS app,
      cls, sql, tabs, cols, u_err < 0.01 AS failed,
      CASE WHEN ss = 'c' THEN [subj.c] WHEN ss = 'e' THEN [subj.e] ELSE [] END AS st_subj,
      CASE WHEN u_err < 0.01 THEN []
           WHEN rs = 'ce' THEN [subj.c, subj.e]
           WHEN rowspec = 'r20' AND CAST(u_rows * 20 AS BIGINT) > 0 THEN [subj.c]
           WHEN rs = 'b' THEN coalesce(bulk.bs, []) ELSE [] END AS rs_subj,
      bulk_n > 1000 AS capped,
      CASE WHEN u_err < 0.01 THEN NULL WHEN rowspec = 'bulk' THEN bulk_n
           WHEN rowspec = 'r20' THEN CAST(u_rows * 20 AS BIGINT)
           ELSE CAST(rowspec AS BIGINT) END AS nrows,
      {plan.start} + CAST(s * ({SPAN} / {plan.statements}) AS BIGINT) AS ts,
      CASE WHEN rowspec = 'bulk' THEN 200000 ELSE 200 END + CAST(u_dur * 5000 AS BIGINT) AS dur
    FROM pick JOIN subj ON subj.id = pick.sid LEFT JOIN bulk USING (s)
    ORDER BY s
    """


def _events_sql(first: int, last: int, st: str = "st") -> str:
    """The AuditEvent columns of seqs [first, last]: seq 2s+1 is statement s, 2s+2 its outcome.

    In seq order without a sort, as long as `st` is in statement order (insertion order kept).
    """
    tag = (
        "CASE WHEN cls = 'READ' THEN 'SELECT ' || CAST(nrows AS VARCHAR) "
        "WHEN sql LIKE 'UPDATE%' THEN 'UPDATE ' || CAST(nrows AS VARCHAR) "
        "WHEN sql LIKE 'INSERT%' THEN 'INSERT 0 1' ELSE 'COMMIT' END"
    )
    cols = {
        "v": "1",
        "kind": "CASE WHEN o THEN 'outcome' ELSE 'statement' END",
        "event_id": "lpad(printf('%x', s), 32, '0')",
        "seq": "seq",
        "ts_start": "ts",
        "ts_end": "CASE WHEN o THEN ts + dur END",
        "duration_us": "CASE WHEN o THEN dur END",
        "actor": "CASE WHEN o THEN NULL ELSE actor END",
        "actor_email": "CASE WHEN o OR actor LIKE 'svc-%' THEN NULL ELSE actor END",
        "identity_source": "CASE WHEN o THEN 'none' ELSE identity_source END",
        "db_role": "CASE WHEN o THEN NULL ELSE 'app_user' END",
        "database": "CASE WHEN o THEN NULL ELSE 'app' END",
        "application_name": "CASE WHEN o THEN NULL ELSE app END",
        "client_addr": "CASE WHEN o THEN NULL ELSE client_addr END",
        "client_port": "CASE WHEN o THEN NULL ELSE 40000 + s % 20000 END",
        "session_id": "CASE WHEN o THEN NULL ELSE 's' || CAST(s // 50 AS VARCHAR) END",
        "tx_seq": "CASE WHEN o THEN NULL ELSE s % 50 END",
        "statement": "CASE WHEN o THEN NULL ELSE sql END",
        "params": "CASE WHEN o OR sql NOT LIKE '%$1%' THEN [] ELSE ['***'] END",
        "fingerprint": "CASE WHEN o THEN NULL ELSE substr(md5(sql), 1, 16) END",
        "audit_class": "CASE WHEN o THEN NULL ELSE cls END",
        "command_tag": f"CASE WHEN o AND NOT failed THEN {tag} END",
        "tables": "CASE WHEN o THEN [] ELSE tabs END",
        "columns": "CASE WHEN o THEN [] ELSE cols END",
        "rows": "CASE WHEN o THEN nrows END",
        "masked_fields": "[]",
        "subjects": "CASE WHEN o THEN rs_subj ELSE st_subj END",
        "subjects_capped": "o AND coalesce(capped, false)",
        "status": "CASE WHEN NOT o THEN 'pending' WHEN failed THEN 'error' ELSE 'ok' END",
        "sqlstate": "CASE WHEN o AND failed THEN '42501' END",
        "error": "CASE WHEN o AND failed THEN 'permission denied for table customers' END",
        "analysis": "CASE WHEN o THEN NULL ELSE 'ok' END",
        "detail": "NULL",
        "prev_hash": "''",
        "hash": "''",
    }
    assert list(cols) == list(COLUMN_TYPES)
    select = ", ".join(f'CAST({expr} AS {COLUMN_TYPES[n]}) AS "{n}"' for n, expr in cols.items())
    return f"""
    SELECT {select} FROM (
      SELECT *, 2 * s + 1 + CAST(o AS BIGINT) AS seq
      FROM (SELECT *, unnest([false, true]) AS o FROM {st})
    ) WHERE seq BETWEEN {first} AND {last}
    """


def _chain(canon: pa.ChunkedArray, prev: str) -> bytes:
    """The hashes (64 hex bytes each, back to back) of the records `canon` (canonical bytes with
    prev_hash blank), chained on from `prev`. Reads Arrow's buffers in place."""
    domain, suf, hexlify = hashlib.sha256(EVENT_DOMAIN), _SUFFIX, binascii.hexlify
    cut = len(_SUFFIX)  # the record up to the prev_hash value, which goes in between
    last = prev.encode()
    out = bytearray()
    for chunk in canon.chunks:
        _, offsets, data = chunk.buffers()
        ends = np.frombuffer(offsets, np.int32, len(chunk) + 1, chunk.offset * 4).tolist()
        mv = memoryview(data)  # type: ignore[arg-type]
        for a, b in itertools.pairwise(ends):
            h = domain.copy()
            h.update(mv[a : b - cut])
            h.update(last + suf)
            last = hexlify(h.digest())
            out += last
    return bytes(out)


def _hex_column(data: bytes) -> pa.Array:
    """64-byte hex hashes back to back as an Arrow string column (no per-row objects)."""
    n = len(data) // 64
    offsets = pa.py_buffer(np.arange(0, 64 * n + 1, 64, dtype=np.int32))
    return pa.StringArray.from_buffers(n, offsets, pa.py_buffer(data))


class Rendered(msgspec.Struct):
    """One segment's events, built in table `seg<slot>`, and their canonical prefixes."""

    first: int
    last: int
    slot: int
    canon: pa.ChunkedArray


def _render(
    con: duckdb.DuckDBPyConnection, plan: Plan, first: int, last: int, slot: int
) -> Rendered:
    """Build the events of seqs [first, last] and render each one's canonical bytes.

    Rendering skips JSON escaping: every generated string comes from a vocabulary without
    quotes, backslashes or control characters (checked by `_check_vocabulary`), so the bytes
    are those `CANONICAL_SQL` makes; each written segment is also spot-checked through msgspec.
    """
    cur = con.cursor()  # its own connection: renders the next segment while one is written
    try:
        s_lo, s_hi = (first - 1) // 2, (last - 1) // 2 + 1
        st, seg = f"st{slot}", f"seg{slot}"
        cur.execute(f"CREATE OR REPLACE TABLE {st} AS {_statements_sql(plan, s_lo, s_hi)}")
        cur.execute(f"CREATE OR REPLACE TABLE {seg} AS {_events_sql(first, last, st)}")
        cur.execute(f"DROP TABLE {st}")
        rel = cur.sql(f'SELECT "seq", encode({_PLAIN_SQL}) AS c FROM {seg}').to_arrow_table()
    finally:
        cur.close()
    seqs = rel.column("seq").combine_chunks()
    if seqs[0].as_py() != first or not pc.all(pc.equal(pc.pairwise_diff(seqs), 1)).as_py():
        raise SystemExit(f"segment {first}..{last} was not rendered in seq order")
    return Rendered(first, last, slot, rel.column("c"))


class BulkWriter:
    """Writes sealed segments directly: real chain, real hashes, real signed checkpoints."""

    def __init__(self, ledger: Path, key_dir: Path) -> None:
        self.layout = Layout(ledger)
        self.layout.create()
        self.key = signing_key(key_dir)
        self.last_hash, self.prev_cp = GENESIS, ""

    def segment(self, con: duckdb.DuckDBPyConnection, seg: Rendered) -> None:
        first_prev = self.last_hash
        hashes = _chain(seg.canon, first_prev)
        last_hash = hashes[-64:].decode()
        prevs = first_prev.encode() + hashes[:-64]
        chain = pa.table({"prev_hash": _hex_column(prevs), "hash": _hex_column(hashes)})
        con.register("chain_src", chain)
        files = self.layout.segment(seg.first, seg.last)
        tmp = files.parquet.with_name(files.parquet.name + ".tmp")
        cols = SELECT_COLUMNS.replace('"prev_hash", "hash"', "c.prev_hash, c.hash")
        con.execute(
            f"COPY (SELECT {cols} FROM (SELECT * EXCLUDE (prev_hash, hash) FROM seg{seg.slot}) s "
            f"POSITIONAL JOIN chain_src c) TO '{tmp}' "
            f"(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {ROW_GROUP_ROWS})"
        )
        con.unregister("chain_src")
        con.execute(f"DROP TABLE seg{seg.slot}")
        _check_sample(con, tmp, seg.first, seg.last)
        os.chmod(tmp, READ_ONLY)
        os.replace(tmp, files.parquet)
        cp = Checkpoint(
            segment=files.parquet.name,
            segment_sha256=file_sha256(files.parquet),
            events=seg.last - seg.first + 1,
            first_seq=seg.first,
            last_seq=seg.last,
            first_prev_hash=first_prev,
            last_hash=last_hash,
            prev_checkpoint=self.prev_cp,
            sealed_at=time.time_ns() // 1000,
            public_key=self.key.public,
        ).signed(self.key)
        data = cp.encode()
        write_atomically(files.checkpoint, data, READ_ONLY)
        self.last_hash, self.prev_cp = last_hash, digest(data)


def _check_sample(con: duckdb.DuckDBPyConnection, path: Path, first: int, last: int) -> None:
    """Rows of the written segment, rebuilt through msgspec, hash as their hash column says:
    the fast rendering, the chain and the row order agree with the ledger's own encoder."""
    n = last - first + 1
    rng = random.Random(first)
    picks = {first + i for i in range(min(n, SAMPLE_EDGE))}
    picks |= {last - i for i in range(min(n, SAMPLE_EDGE))}
    picks |= {first + rng.randrange(n) for _ in range(SAMPLE_RANDOM)}
    seqs = ", ".join(map(str, sorted(picks)))
    cur = con.execute(f"SELECT * FROM read_parquet('{path}') WHERE seq IN ({seqs})")
    names = [d[0] for d in cur.description or ()]
    for row in cur.fetchall():
        values = dict(zip(names, row, strict=True))
        event = msgspec.convert({**values, "hash": ""}, AuditEvent)
        if event_hash(canonical_bytes(event)) != values["hash"]:
            raise SystemExit(f"segment row at seq {values['seq']} does not hash as msgspec does")


def _check_vocabulary() -> None:
    """Every string the generator can write is free of what JSON escapes (see `_render`)."""
    texts = [*SERVICES, "permission denied for table customers", "***", "app_user", "app"]
    texts += [x for t in TEMPLATES for x in (t[3], *t[4], *t[5])]
    bad = [t for t in texts if any(c in t for c in '"\\') or any(ord(c) < 0x20 for c in t)]
    if bad:
        raise SystemExit(f"generator text needs JSON escaping, which the fast path skips: {bad}")


def _sink_write(con: duckdb.DuckDBPyConnection, first: int, last: int, sink: Any) -> None:
    con.execute(f"CREATE OR REPLACE TEMP TABLE seg AS {_events_sql(first, last)}")
    cur = con.execute("SELECT * EXCLUDE (seq, prev_hash, hash) FROM seg ORDER BY seq")
    names = [d[0] for d in cur.description or ()]
    while batch := cur.fetchmany(10_000):
        events = [msgspec.convert(dict(zip(names, r, strict=True)), AuditEvent) for r in batch]
        sink.append_sync(events)


def _report(last: int, started: float) -> None:
    done = time.monotonic() - started
    print(f"  {last:,} events  {done:.0f}s  ({last / done:,.0f}/s)", file=sys.stderr)


def _bulk(
    con: duckdb.DuckDBPyConnection,
    plan: Plan,
    spans: list[tuple[int, int]],
    writer: BulkWriter,
    started: float,
) -> None:
    """Render segment k+1 in a second thread (DuckDB, GIL released) while segment k is chained
    and written: the chain is the one step that cannot be split, so it never waits."""
    _check_vocabulary()
    with ThreadPoolExecutor(1) as pool:
        ahead: Future[Rendered] = pool.submit(_render, con, plan, *spans[0], 0)
        for k in range(len(spans)):
            seg = ahead.result()
            if k + 1 < len(spans):
                ahead = pool.submit(_render, con, plan, *spans[k + 1], (k + 1) % 2)
            writer.segment(con, seg)
            _report(seg.last, started)


def generate(out: Path, plan: Plan, mode: str) -> dict[str, Any]:
    ledger, key_dir = out / "ledger", out / "keys"
    if ledger.exists():
        raise SystemExit(f"{ledger} exists; remove it first")
    started = time.monotonic()
    secret = subject_secret(key_dir)
    con = duckdb.connect(config={"threads": 2, "preserve_insertion_order": True})
    con.execute("SET enable_progress_bar = false")
    _subject_table(con, secret, plan.subjects)
    _template_table(con)
    step = plan.segment_events
    spans = [
        (first, min(first + step - 1, plan.events)) for first in range(1, plan.events + 1, step)
    ]
    if mode == "sink":
        from scalple.ledger import open_sink

        sink = open_sink(ledger, "os", key_dir=str(key_dir), seal_bytes=step * 700)
        for first, last in spans:
            s_lo, s_hi = (first - 1) // 2, (last - 1) // 2 + 1
            con.execute(f"CREATE OR REPLACE TEMP TABLE st AS {_statements_sql(plan, s_lo, s_hi)}")
            _sink_write(con, first, last, sink)
            _report(last, started)
        sink.close()
    else:
        _bulk(con, plan, spans, BulkWriter(ledger, key_dir), started)
    con.close()
    elapsed = time.monotonic() - started
    meta = {
        "plan": msgspec.to_builtins(plan),
        "mode": mode,
        "seconds": round(elapsed, 1),
        "history": {"from": _iso(plan.start), "to": _iso(plan.end)},
        "ledger": str(ledger),
        "key_dir": str(key_dir),
        "subject_columns": {
            "customers.id": "customer",
            "orders.customer_id": "customer",
            "customers.email": "email",
        },
        # a customer in the long tail, one in the middle, one at the head of the distribution
        "examples": {
            "subjects": {
                "tail": f"customers.id={customer_id(plan.subjects - 3)}",
                "middle": f"customers.id={customer_id(plan.subjects // 10)}",
                "head": f"customers.id={customer_id(2)}",
                "email": f"customers.email={email_of(plan.subjects // 10)}",
            },
            "actors": {"human": human(plan.humans // 2), "service": SERVICES[3]},
        },
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    (out / "scalple.toml").write_text(
        f'[ledger]\nledger = "{ledger}"\nkey_dir = "{key_dir}"\n\n[analysis]\nsubject_columns = '
        + "{ "
        + ", ".join(f'"{k}" = "{v}"' for k, v in meta["subject_columns"].items())
        + " }\n"
    )
    return meta


def _end_time(text: str) -> int:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date or time: {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp()) * 1_000_000 + when.microsecond


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).isoformat(timespec="seconds")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--events", type=lambda s: int(s.replace("_", "")), default=1_000_000)
    p.add_argument("--mode", choices=("bulk", "sink"), default="bulk")
    p.add_argument(
        "--segment-events",
        type=int,
        default=499_999,
        help="events per segment (odd: some statements and outcomes straddle two)",
    )
    p.add_argument("--subjects", type=int, default=0, help="customers [default: events/40]")
    p.add_argument("--humans", type=int, default=300)
    p.add_argument(
        "--end",
        type=_end_time,
        default=None,
        help="the history ends at this ISO date or time (UTC unless it has a zone) [default: now]",
    )
    a = p.parse_args(argv)
    plan = Plan(
        a.events,
        a.subjects or max(1000, min(a.events // 40, 2_000_000)),
        a.humans,
        a.segment_events,
        end=a.end if a.end is not None else time.time_ns() // 1000,
    )
    a.out.mkdir(parents=True, exist_ok=True)
    meta = generate(a.out, plan, a.mode)
    print(json.dumps({k: meta[k] for k in ("plan", "mode", "seconds", "history")}))


if __name__ == "__main__":
    main()
