"""Per-statement analysis cost, cache hit and cache miss: `python bench/bench_analysis.py`."""

from __future__ import annotations

import time

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


def bench(name: str, template: str, n: int = 3000) -> None:
    params = [b"a@b.com", b"5"] if "$1" in template else []
    sqls = [template.format(v=f"user{i}", n=i) for i in range(n)]
    miss = Analyzer(_policy(), b"k" * 32, _catalog())
    t0 = time.perf_counter()
    for i, sql in enumerate(sqls[:200]):
        miss._shapes.clear()  # force a miss every time
        miss.analyze(sql + f" -- {i}", params)
    miss_us = (time.perf_counter() - t0) / 200 * 1e6
    hit = Analyzer(_policy(), b"k" * 32, _catalog())
    hit.analyze(sqls[0], params)
    t0 = time.perf_counter()
    for sql in sqls:
        hit.analyze(sql, params)
    hit_us = (time.perf_counter() - t0) / n * 1e6
    print(f"{name:12} miss {miss_us:8.1f} µs   hit {hit_us:6.1f} µs")


def main() -> None:
    for name, template in STATEMENTS.items():
        bench(name, template)


if __name__ == "__main__":
    main()
