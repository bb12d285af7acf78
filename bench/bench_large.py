"""Analysis of large statements: `python bench/bench_large.py [--quick]`.

Prints, for IN lists of 1k/10k/100k elements and for statements of about 100 KB and 1 MB of
several kinds, the time of a first analysis (cache miss), of the same text again (a cache hit
up to 64 KB; above that nothing is cached), of `Analyzer.skipped`, and sqlglot's parse alone
with the Python memory it peaks at (tracemalloc) — the figures to set the size above which the
proxy skips parsing. Each time is the best of a few rounds (the machine is shared). Times per
element show whether a kind of statement grows faster than its size.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import time
import tracemalloc
from collections.abc import Callable

import sqlglot

from scalple.analysis import Analyzer, Catalog, Policy


def _analyzer() -> Analyzer:
    policy = Policy.build(["users.email", "users.phone"], {"users.id": "customer"})
    catalog = Catalog.from_tables({"public.users": ["id", "email", "phone", "name"]})
    return Analyzer(policy, b"k" * 32, catalog)


def in_ids(n: int) -> str:
    return "SELECT name FROM users WHERE id IN (" + ", ".join(map(str, range(n))) + ")"


def in_emails(n: int) -> str:
    values = ", ".join(f"'user{i}@example.com'" for i in range(n))
    return f"SELECT name FROM users WHERE email IN ({values})"


def values_rows(n: int) -> str:
    rows = ", ".join(f"({i}, 'user{i}@example.com', '+1 555 {i:04d}')" for i in range(n))
    return f"INSERT INTO users (id, email, phone) VALUES {rows}"


def or_chain(n: int) -> str:
    return "SELECT name FROM users WHERE " + " OR ".join(f"id = {i}" for i in range(n))


def union_chain(n: int) -> str:
    return " UNION ALL ".join(f"SELECT {i}, 'x{i}'" for i in range(n))


def long_comment(n: int) -> str:
    return "SELECT 1 /* " + "Ann Smith called " * n + "*/"


def long_string(n: int) -> str:
    return "SELECT '" + "x" * (17 * n) + "' AS note"


KINDS: dict[str, Callable[[int], str]] = {
    "IN ids": in_ids,
    "IN e-mails": in_emails,
    "VALUES rows": values_rows,
    "OR chain": or_chain,
    "UNION ALL": union_chain,
    "comment": long_comment,
    "string": long_string,
}


def _size_for(make: Callable[[int], str], target: int) -> int:
    """The element count that makes a statement of about `target` characters."""
    per = len(make(1000)) / 1000
    return max(1, int(target / per))


def _best(fn: Callable[[], object], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _parse_peak(sql: str) -> tuple[float, float]:
    """sqlglot's parse: (seconds, peak MB of Python memory)."""
    gc.collect()
    tracemalloc.start()
    t0 = time.perf_counter()
    with contextlib.suppress(Exception):  # too deep for the parser: that is a figure too
        sqlglot.parse(sql, read="postgres")
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return seconds, peak / 1e6


def row(name: str, sql: str, n: int, rounds: int) -> str:
    def miss() -> object:
        return _analyzer().analyze(sql)

    a = _analyzer()
    first = a.analyze(sql)
    t_miss = _best(miss, rounds)
    t_hit = _best(lambda: a.analyze(sql), rounds)
    t_skip = _best(lambda: a.skipped(sql), rounds)
    t_parse, peak = _parse_peak(sql)
    return (
        f"{name:12} {n:>8} {len(sql) / 1e3:>9.0f} {t_miss * 1e3:>9.1f} {t_miss / n * 1e6:>7.1f}"
        f" {t_hit * 1e3:>8.1f} {t_skip * 1e3:>8.1f} {t_parse * 1e3:>9.1f} {peak:>8.0f}"
        f"  {first.analysis}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="one round, no 1 MB statements")
    args = ap.parse_args()
    rounds = 1 if args.quick else 3
    print(
        f"{'statement':12} {'elements':>8} {'KB':>9} {'miss ms':>9} {'µs/el':>7} {'again ms':>8}"
        f" {'skip ms':>8} {'parse ms':>9} {'parse MB':>8}  analysis"
    )
    for n in (1_000, 10_000, 100_000):
        print(row("IN ids", in_ids(n), n, rounds))
    for target in (100_000,) if args.quick else (100_000, 1_000_000):
        for name, make in KINDS.items():
            n = _size_for(make, target)
            print(row(name, make(n), n, rounds))


if __name__ == "__main__":
    main()
