"""CPU per statement of the proxy's protocol work alone, without sockets: pgbench -S traffic
(simple and extended protocol) fed through a Session, with and without the analyzer, and the
ledger's encoding and hashing of the records it makes.

    python bench/bench_session.py [--statements 20000] [--profile]

The numbers are µs of this process's CPU per statement (time.process_time), which is steadier
than wall time on a shared machine. What the full proxy adds on top is sockets and the event
loop; bench/bench_proxy.py measures that, beside PgBouncer and a bare relay.
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import pstats
import random
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scalple.analysis import Analyzer
from scalple.analysis import Policy as AnalysisPolicy
from scalple.events import AuditEvent
from scalple.ledger.canonical import chain_into
from scalple.proxy import codec
from scalple.proxy.codec import message
from scalple.proxy.session import Policy, Session

SELECT = "SELECT abalance FROM pgbench_accounts WHERE aid = {};"
ROW_DESCRIPTION = codec.message(
    b"T", b"\x00\x01abalance\x00" + struct.pack("!IhIhih", 16384, 2, 23, 4, -1, 0)
)
ANSWER = (
    ROW_DESCRIPTION
    + message(b"D", b"\x00\x01\x00\x00\x00\x041234")
    + message(b"C", b"SELECT 1\x00")
    + codec.encode_ready("I")
)
SYNC = message(b"S", b"")


def _session(analyzer: Analyzer | None) -> Session:
    clock = itertools.count(1_000_000, 10)
    s = Session(Policy(), "127.0.0.1", 5555, lambda: next(clock), analyzer=analyzer)
    startup = {"user": "app_user", "database": "app", "options": "-c scalple.user=a"}
    s.client_data(codec.encode_startup(startup))
    ok = message(b"R", b"\x00\x00\x00\x00")
    s.server_data(ok + codec.encode_backend_key(7, 9) + codec.encode_ready("I"))
    return s


def _bind(value: bytes) -> bytes:
    body = b"\x00\x00\x00\x00" + struct.pack("!h", 1) + struct.pack("!i", len(value)) + value
    return message(b"B", body + b"\x00\x00")


def simple(s: Session, n: int, rng: random.Random, hash_records: bool) -> None:
    prev = "0" * 64
    for _ in range(n):
        step = s.client_data(codec.encode_query(SELECT.format(rng.randint(1, 1_000_000))))
        answer = s.server_data(ANSWER)
        if hash_records:
            prev = _chain(step.write_ahead + answer.records, prev)


def extended(s: Session, n: int, rng: random.Random, hash_records: bool) -> None:
    parse = codec.encode_parse("", "SELECT abalance FROM pgbench_accounts WHERE aid = $1")
    describe = message(b"D", b"P\x00")
    execute = message(b"E", b"\x00\x00\x00\x00\x00")
    parsed = message(b"1", b"") + message(b"2", b"")
    prev = "0" * 64
    for _ in range(n):
        aid = str(rng.randint(1, 1_000_000)).encode()
        step = s.client_data(parse + _bind(aid) + describe + execute + SYNC)
        answer = s.server_data(parsed + ANSWER)
        if hash_records:
            prev = _chain(step.write_ahead + answer.records, prev)


def _chain(events: list[AuditEvent], prev: str) -> str:
    out: list[bytes] = []
    for i, event in enumerate(events):
        prev = chain_into(out, event, i + 1, prev)
    b"".join(out)
    return prev


def measure(label: str, run: object, n: int) -> float:
    started = time.process_time()
    run()  # type: ignore[operator]
    per = (time.process_time() - started) / n * 1e6
    print(f"{label:48} {per:8.1f} µs/statement")
    return per


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--statements", type=int, default=20_000)
    ap.add_argument("--profile", action="store_true", help="cProfile the full simple path")
    args = ap.parse_args()
    n = args.statements
    analyzer = Analyzer(AnalysisPolicy(), b"k" * 32)
    for proto, fn in (("simple", simple), ("extended", extended)):
        for label, an, hashing in (
            ("session only", None, False),
            ("session + analysis", analyzer, False),
            ("session + analysis + record hashing", analyzer, True),
        ):
            s = _session(an)
            rng = random.Random(1)
            fn(s, 500, rng, hashing)  # warm caches
            measure(f"{proto:9}{label}", lambda s=s, rng=rng, h=hashing, f=fn: f(s, n, rng, h), n)
    if args.profile:
        s = _session(analyzer)
        rng = random.Random(2)
        prof = cProfile.Profile()
        prof.runcall(simple, s, n, rng, True)
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
