"""The journal, group commit, recovery after a torn write, sealing and the events view, on disk."""

from __future__ import annotations

import asyncio
import itertools
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalple.errors import LedgerError, LedgerUnavailable
from scalple.events import AuditEvent
from scalple.ledger import open_sink
from scalple.ledger.canonical import GENESIS, canonical_bytes, chain, decode_line
from scalple.ledger.keys import load_public_key
from scalple.ledger.layout import Layout
from scalple.ledger.query import events_view
from scalple.ledger.seal import _write_parquet
from scalple.ledger.synthetic import outcome, pair, statement
from scalple.ledger.verify import verify_ledger
from scalple.ledger.writer import LedgerSink


def sink(tmp: Path, **kw: object) -> LedgerSink:
    return open_sink(tmp / "ledger", kw.pop("durability", "os"), key_dir=tmp / "keys", **kw)


def events(ledger: Path) -> list[dict[str, object]]:
    con = duckdb.connect()
    events_view(con, ledger)
    cur = con.execute("SELECT * FROM events ORDER BY seq")
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def intact(tmp: Path) -> bool:
    report = verify_ledger(tmp / "ledger", load_public_key(tmp / "keys" / "signing.pub"))
    assert report.first_bad is None, str(report.first_bad)
    return report.intact


def wait_for(condition: Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the sealer"
        time.sleep(0.02)


# -- canonical form ------------------------------------------------------------------------


texts = st.text(max_size=40)
opt = st.none() | texts


@given(
    statement=opt,
    actor=opt,
    tables=st.lists(texts, max_size=3),
    params=st.lists(opt, max_size=3),
    rows=st.none() | st.integers(-(2**63), 2**63 - 1),
)
@settings(max_examples=200, deadline=None)
def test_canonical_round_trip(
    statement: str | None,
    actor: str | None,
    tables: list[str],
    params: list[str | None],
    rows: int | None,
) -> None:
    event = AuditEvent(
        kind="statement",
        event_id="e",
        ts_start=1,
        statement=statement,
        actor=actor,
        tables=tuple(tables),
        params=tuple(params),
        rows=rows,
    )
    line, digest = chain(event, 7, GENESIS)
    back = decode_line(line[:-1])
    assert back.hash == digest and back.seq == 7
    assert canonical_bytes(back) == line[:-67] + b'"}'


def test_canonical_bytes_are_pinned() -> None:
    # Any change to the canonical form breaks every existing ledger: this must stay as it is.
    line, digest = chain(AuditEvent(kind="system", event_id="x", ts_start=0), 1, GENESIS)
    assert line.startswith(b'{"v":1,"kind":"system","event_id":"x","seq":1,"ts_start":0,')
    assert digest == chain(AuditEvent(kind="system", event_id="x", ts_start=0), 1, GENESIS)[1]
    assert len(digest) == 64


# -- appending ----------------------------------------------------------------------------


def test_concurrent_write_ahead_gets_gapless_chained_seqs(tmp_path: Path) -> None:
    s = sink(tmp_path, durability="fsync")

    async def writer(w: int) -> None:
        for i in range(50):
            await s.write_ahead([statement(w * 1000 + i)])
            s.record(outcome(w * 1000 + i))

    async def main() -> None:
        await asyncio.gather(*(writer(w) for w in range(8)))
        await s.aclose()

    asyncio.run(main())
    # 400 statements waited on durability; group commit shares writes and fsyncs among them.
    assert 0 < s.syncs <= s.writes < 400
    rows = events(tmp_path / "ledger")
    assert [r["seq"] for r in rows] == list(range(1, 801))
    assert all(a["hash"] == b["prev_hash"] for a, b in itertools.pairwise(rows))
    assert rows[0]["prev_hash"] == GENESIS
    assert intact(tmp_path)


def test_write_ahead_is_in_the_journal_when_it_returns(tmp_path: Path) -> None:
    s = sink(tmp_path)

    async def main() -> None:
        await s.write_ahead(pair(1))
        journal = Layout(tmp_path / "ledger").journals()[-1][1].read_bytes()
        assert journal.count(b"\n") == 2 and f'"event_id":"{1:032x}"'.encode() in journal
        await s.aclose()

    asyncio.run(main())


def test_write_failure_refuses_the_statement(tmp_path: Path) -> None:
    s = sink(tmp_path)
    os.close(s._fd)  # the journal's file descriptor goes bad under the writer
    s._fd = os.open(os.devnull, os.O_RDONLY)

    async def main() -> None:
        with pytest.raises(LedgerUnavailable):
            await s.write_ahead([statement(1)])
        with pytest.raises(LedgerUnavailable):  # fail closed: nothing more is accepted
            await s.write_ahead([statement(2)])

    asyncio.run(main())
    s.close()


def test_second_process_cannot_open_the_same_ledger(tmp_path: Path) -> None:
    s = sink(tmp_path)
    with pytest.raises(LedgerError, match="in use"):
        sink(tmp_path)
    s.close()


# -- sealing ------------------------------------------------------------------------------


def test_journal_past_size_is_sealed_read_only_and_queryable(tmp_path: Path) -> None:
    s = sink(tmp_path, seal_bytes=20_000)
    for i in range(100):
        s.append_sync(pair(i))
    s.close()
    layout = Layout(tmp_path / "ledger")
    segments = layout.segments()
    assert len(segments) > 3 and layout.journals() == []
    for seg in segments:
        for f in (seg.parquet, seg.checkpoint):
            assert stat.S_IMODE(f.stat().st_mode) == 0o444
    rows = events(tmp_path / "ledger")
    assert len(rows) == 200 and rows[0]["tables"] == ["public.pgbench_accounts"]
    assert rows[0]["params"] == ["***", None] and rows[1]["rows"] == 1
    assert intact(tmp_path)


def test_journal_past_age_is_sealed(tmp_path: Path) -> None:
    s = sink(tmp_path, seal_seconds=0.2)
    s.append_sync(pair(1))
    layout = Layout(tmp_path / "ledger")
    wait_for(lambda: bool(layout.segments()) and layout.segments()[0].checkpoint.exists())
    assert [(g.first_seq, g.last_seq) for g in layout.segments()] == [(1, 2)]
    s.close()


def test_events_view_sees_sealed_and_live_events(tmp_path: Path) -> None:
    s = sink(tmp_path, seal_bytes=5_000)
    for i in range(20):
        s.append_sync(pair(i))
    layout = Layout(tmp_path / "ledger")
    wait_for(lambda: len([g for g in layout.segments() if g.checkpoint.exists()]) >= 2)
    try:
        rows = events(tmp_path / "ledger")  # while open: segments and the live journal together
        assert [r["seq"] for r in rows] == list(range(1, 41))
    finally:
        s.close()


# -- recovery -----------------------------------------------------------------------------


def crash(s: LedgerSink) -> None:
    """Stop like kill -9 would: no seal, the lock dropped with the process."""
    s.close(seal=False)


def test_torn_tail_is_cut_and_recorded_in_the_chain(tmp_path: Path) -> None:
    s = sink(tmp_path)
    for i in range(5):
        s.append_sync([statement(i)])
    crash(s)
    _, journal = Layout(tmp_path / "ledger").journals()[-1]
    whole = journal.read_bytes()
    torn, _ = chain(statement(99), 6, "0" * 64)
    with journal.open("ab") as f:
        f.write(torn[: len(torn) // 2])  # a write cut short by the kill

    s = sink(tmp_path)
    s.close()
    rows = events(tmp_path / "ledger")
    assert [r["kind"] for r in rows[:5]] == ["statement"] * 5  # nothing complete was lost
    cut = [r for r in rows if r["kind"] == "system"]
    assert (
        len(cut) == 1
        and f"cut {len(torn) // 2} torn bytes at byte {len(whole)}" in cut[0]["detail"]
    )
    incomplete = [r for r in rows if r["kind"] == "outcome"]
    assert len(incomplete) == 5 and {r["status"] for r in incomplete} == {"incomplete"}
    assert [r["seq"] for r in rows] == list(range(1, 12))
    assert intact(tmp_path)


def test_seal_interrupted_before_its_checkpoint_is_redone(tmp_path: Path) -> None:
    s = sink(tmp_path)
    for i in range(10):
        s.append_sync(pair(i))
    crash(s)
    layout = Layout(tmp_path / "ledger")
    [(first, journal)] = layout.journals()
    unfinished = layout.segment(first, 20)
    con = duckdb.connect()
    _write_parquet(con, journal, unfinished.parquet)  # the process died right after this
    s = sink(tmp_path)
    s.close()
    assert [(g.first_seq, g.last_seq) for g in layout.segments()] == [(1, 20)]
    assert unfinished.checkpoint.exists() and layout.journals() == []
    assert [r["seq"] for r in events(tmp_path / "ledger")] == list(range(1, 21))
    assert intact(tmp_path)


def test_journal_left_behind_by_a_finished_seal_is_dropped(tmp_path: Path) -> None:
    s = sink(tmp_path)
    for i in range(10):
        s.append_sync(pair(i))
    crash(s)
    [(_, journal)] = Layout(tmp_path / "ledger").journals()
    copy = journal.read_bytes()
    s = sink(tmp_path)
    s.close()
    journal.write_bytes(copy)  # as if the process died between checkpoint and unlink
    s = sink(tmp_path)
    s.close()
    assert Layout(tmp_path / "ledger").journals() == []
    assert [r["seq"] for r in events(tmp_path / "ledger")] == list(range(1, 21))
    assert intact(tmp_path)


def test_events_view_leaves_out_a_torn_last_line(tmp_path: Path) -> None:
    s = sink(tmp_path)
    s.append_sync(pair(1))
    crash(s)
    _, journal = Layout(tmp_path / "ledger").journals()[-1]
    with journal.open("ab") as f:
        f.write(b'{"v":1,"kind":"statement","event_id":"torn')
    assert [r["seq"] for r in events(tmp_path / "ledger")] == [1, 2]


def test_undecodable_client_text_is_recorded_not_refused(tmp_path: Path) -> None:
    s = sink(tmp_path)
    s.append_sync([AuditEvent(kind="statement", event_id="x", ts_start=1, statement="a\udcff")])
    s.append_sync([statement(2)])
    s.close()
    rows = events(tmp_path / "ledger")
    assert rows[0]["statement"] == "a\ufffd" and [r["seq"] for r in rows] == [1, 2]
    assert intact(tmp_path)
