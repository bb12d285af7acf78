"""Ledger throughput: append (1 and 8 writers, os and fsync), seal, and verify over many events.

    python bench/bench_ledger.py                  # full run: verify over 10 million events
    python bench/bench_ledger.py --events 1000000 # smaller verify ledger

Targets on the 2-core machine: append >= 100k ev/s (os), >= 50k ev/s (fsync, 8 writers),
verify >= 1M ev/s. Each writer behaves like a proxy connection: write_ahead(statement), then
record(outcome), so one statement is two events.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

try:
    import uvloop
except ImportError:  # not on Windows
    uvloop = None

import duckdb

from scalple.events import AuditEvent
from scalple.ledger import open_sink
from scalple.ledger.checkpoint import read_checkpoint
from scalple.ledger.keys import signing_key
from scalple.ledger.layout import Layout
from scalple.ledger.recovery import Pending
from scalple.ledger.seal import seal
from scalple.ledger.segment import check_rows
from scalple.ledger.synthetic import pair
from scalple.ledger.verify import verify_ledger

TARGETS = {("os", 1): 100_000, ("os", 8): 100_000, ("fsync", 8): 50_000}


def _pairs(n: int) -> list[tuple[AuditEvent, AuditEvent]]:
    return [pair(i) for i in range(n)]


async def _append(root: Path, durability: str, writers: int, statements: int) -> float:
    sink = open_sink(root / "ledger", durability, key_dir=root / "keys", seal_bytes=1 << 40)
    pairs = _pairs(statements // writers)

    async def writer() -> None:
        for stmt, out in pairs:
            await sink.write_ahead((stmt,))
            sink.record(out)

    start = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(writers)))
    sink.close(seal=False)  # counts the final flush, not the seal
    return 2 * len(pairs) * writers / (time.perf_counter() - start)


def _fsync_latency(tmp: Path) -> float:
    """Seconds one small write + fdatasync takes here now: the floor of a durable append."""
    fd = os.open(tmp / "probe", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    start = time.perf_counter()
    for _ in range(100):
        os.write(fd, b"x" * 2000)
        os.fdatasync(fd)
    os.close(fd)
    return (time.perf_counter() - start) / 100


def _run(coro: Coroutine[Any, Any, float]) -> float:
    if uvloop is not None:  # what `scalple serve` runs on
        return uvloop.run(coro)
    return asyncio.run(coro)


def bench_append(tmp: Path, statements: int) -> None:
    loop = "uvloop" if uvloop is not None else "asyncio"
    latency = _fsync_latency(tmp)
    print(
        f"append on {loop}; fdatasync here takes {latency * 1000:.2f} ms now, so w writers "
        f"each waiting on it top out near 2*w/{latency * 1000:.2f}ms events/s in fsync mode"
    )
    for durability, writers in (("os", 1), ("os", 8), ("fsync", 1), ("fsync", 8), ("fsync", 64)):
        n = statements if durability == "os" else statements // 10
        if (durability, writers) == ("fsync", 1):
            n = min(n, 2_000)
        root = tmp / f"append-{durability}-{writers}"
        rate = _run(_append(root, durability, writers, n))
        target = TARGETS.get((durability, writers))
        vs = f"  ({rate / target:.2f}x target {target:,})" if target else ""
        print(f"append {durability:5} {writers:2} writer(s): {rate:12,.0f} events/s{vs}")
        shutil.rmtree(root)


def _fill(root: Path, events: int, seal_bytes: int) -> None:
    sink = open_sink(root / "ledger", "os", key_dir=root / "keys", seal_bytes=seal_bytes)
    step = 10_000
    batch = [e for p in _pairs(step // 2) for e in p]
    for _ in range(events // step):
        sink.append_sync(batch)
    sink.close()


def bench_seal(tmp: Path, events: int) -> None:
    root = tmp / "seal"
    sink = open_sink(root / "ledger", "os", key_dir=root / "keys", seal_bytes=1 << 40)
    sink.append_sync([e for p in _pairs(events // 2) for e in p])
    sink.close(seal=False)
    layout = Layout(root / "ledger")
    [(first, path)] = layout.journals()
    size = path.stat().st_size
    job = Pending(path, first, events, "0" * 64, "")
    job.last_hash = path.read_bytes()[-67:-3].decode()
    start = time.perf_counter()
    seal(layout, job, None, signing_key(root / "keys"), threads=2)
    took = time.perf_counter() - start
    seg = layout.segments()[0].parquet.stat().st_size
    print(
        f"seal: {events / took:12,.0f} events/s ({size / took / 1e6:.0f} MB/s of journal; "
        f"{size / events:.0f} B/event in the journal, {seg / events:.0f} B/event sealed)"
    )
    shutil.rmtree(root)


def bench_verify(tmp: Path, events: int) -> None:
    root = tmp / "verify"
    start = time.perf_counter()
    _fill(root, events, 64 << 20)
    print(f"  (built a {events:,}-event ledger in {time.perf_counter() - start:.0f} s)")
    key = signing_key(root / "keys").public
    start = time.perf_counter()
    report = verify_ledger(root / "ledger", key)
    took = time.perf_counter() - start
    assert report.intact and report.events == events, report
    rate = events / took
    print(
        f"verify: {rate:12,.0f} events/s over {events:,} events in {report.segments} "
        f"segments, {took:.1f} s  ({rate / 1_000_000:.2f}x target 1,000,000)"
    )
    bench_deep(root)
    shutil.rmtree(root)


def bench_deep(root: Path) -> None:
    """--deep's extra work, every event hash recomputed from columns, on the first segment."""
    seg = Layout(root / "ledger").segments()[0]
    cp, _ = read_checkpoint(seg.checkpoint)
    con = duckdb.connect(config={"threads": 2})
    start = time.perf_counter()
    rows = check_rows(con, seg.parquet, cp.first_seq, cp.first_prev_hash)
    took = time.perf_counter() - start
    assert rows.problem is None and rows.count == cp.events
    print(
        f"verify --deep: {rows.count / took:10,.0f} events/s (first segment, {rows.count:,} events)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000, help="events to verify")
    parser.add_argument("--append", type=int, default=200_000, help="statements to append")
    parser.add_argument("--seal", type=int, default=500_000, help="events to seal")
    parser.add_argument("--only", choices=("append", "seal", "verify"))
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default /tmp)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="scalple-bench-", dir=args.dir))
    try:
        if args.only in (None, "append"):
            bench_append(tmp, args.append)
        if args.only in (None, "seal"):
            bench_seal(tmp, args.seal)
        if args.only in (None, "verify"):
            bench_verify(tmp, args.events)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
