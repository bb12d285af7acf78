"""Per-statement analysis cost, cache hit and cache miss: `python bench/bench_analysis.py`.

`--against REV` also runs the same bench on the analyzer as it was at git revision REV, in
alternating subprocesses on the same machine, and prints both side by side. Each figure is the
best of several rounds, since the machine is shared and the slow rounds are other people's work.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scalple.analysis import Analyzer, Catalog, Policy

STATEMENTS = {
    "django": 'SELECT "users"."id", "users"."email" FROM "users" INNER JOIN "orders" ON '
    '("orders"."customer_id" = "users"."id") WHERE ("users"."email" = \'{v}@example.com\' '
    'AND "orders"."total" > {n}) LIMIT 21 /*traceparent=\'00-{n}\'*/',
    "params": "SELECT users.id, users.email FROM users JOIN orders ON orders.customer_id = "
    "users.id WHERE users.email = $1 AND orders.total > $2 LIMIT 21",
    "pgbench -S": "SELECT abalance FROM pgbench_accounts WHERE aid = {n}",
    "insert": "INSERT INTO users (id, email, phone) VALUES ({n}, '{v}@x.org', '+1 555 {n}')",
}
ROOT = Path(__file__).resolve().parent.parent


def _policy() -> Policy:
    return Policy.build(
        ["users.email", "users.phone"],
        {"users.id": "customer", "orders.customer_id": "customer", "users.email": "email"},
    )


def _catalog() -> Catalog:
    return Catalog.from_tables(
        {
            "public.users": ["id", "email", "phone", "name"],
            "public.orders": ["id", "customer_id", "total"],
            "public.pgbench_accounts": ["aid", "bid", "abalance", "filler"],
        }
    )


def bench(template: str, n: int = 2000, rounds: int = 5) -> tuple[float, float]:
    """(miss, hit) in µs per statement, each the best of `rounds`."""
    params = [b"a@b.com", b"5"] if "$1" in template else []
    sqls = [template.format(v=f"user{i}", n=i) for i in range(n)]
    misses, hits = [], []
    for r in range(rounds):
        miss = Analyzer(_policy(), b"k" * 32, _catalog())
        t0 = time.perf_counter()
        for i, sql in enumerate(sqls[:40]):
            miss._shapes.clear()  # force a miss every time
            miss.analyze(sql + f" -- {r} {i}", params)
        misses.append((time.perf_counter() - t0) / 40 * 1e6)
        hit = Analyzer(_policy(), b"k" * 32, _catalog())
        hit.analyze(sqls[0], params)
        t0 = time.perf_counter()
        for sql in sqls:
            hit.analyze(sql, params)
        hits.append((time.perf_counter() - t0) / n * 1e6)
    return min(misses), min(hits)


def measure() -> dict[str, tuple[float, float]]:
    return {name: bench(template) for name, template in STATEMENTS.items()}


def _run(pythonpath: Path) -> dict[str, list[float]]:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    out = subprocess.run(
        [sys.executable, __file__, "--json"], env=env, check=True, capture_output=True, text=True
    ).stdout
    result: dict[str, list[float]] = json.loads(out)
    return result


def against(rev: str, repeats: int = 3) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", rev, "scalple"], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        before: dict[str, list[float]] = {}
        after: dict[str, list[float]] = {}
        for _ in range(repeats):  # alternate, so both see the same load
            for into, path in ((before, Path(tmp)), (after, ROOT)):
                for name, (miss, hit) in _run(path).items():
                    old = into.get(name, [miss, hit])
                    into[name] = [min(old[0], miss), min(old[1], hit)]
    print(f"{'µs/statement':12} {'miss before':>12} {'miss after':>11} {'hit before':>11} "
          f"{'hit after':>10}")  # fmt: skip
    for name in STATEMENTS:
        (mb, hb), (ma, ha) = before[name], after[name]
        print(f"{name:12} {mb:12.1f} {ma:11.1f} {hb:11.1f} {ha:10.1f}")
    print(f"before = {rev}, after = working tree")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--against", metavar="REV", help="also run the analyzer at git revision REV")
    ap.add_argument("--json", action="store_true", help="print {name: [miss, hit]} as JSON")
    args = ap.parse_args()
    if args.against:
        against(args.against)
    elif args.json:
        print(json.dumps(measure()))
    else:
        for name, (miss, hit) in measure().items():
            print(f"{name:12} miss {miss:8.1f} µs   hit {hit:6.1f} µs")


if __name__ == "__main__":
    main()
