"""Shared fixtures: one real PostgreSQL 15 (pgAudit) + PgBouncer (transaction mode) per test run."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from scalple.sandbox import Sandbox
from tests.proxyproc import ProxyProc


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    """PostgreSQL on sandbox.pg_port and PgBouncer on sandbox.bouncer_port; roles in ROLES."""
    # Its own dir under /tmp: pytest's tmp dirs are 0700, closed to the postgres OS user.
    sb = Sandbox()
    try:
        sb.start_postgres()
        sb.start_pgbouncer()
        yield sb
    finally:
        sb.cleanup()


@pytest.fixture
def make_proxy(
    sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., ProxyProc]]:
    """Start `scalple serve` processes (in front of PgBouncer unless told otherwise)."""
    started: list[ProxyProc] = []

    def make(*args: str, upstream: int | None = None, **kw: Any) -> ProxyProc:
        ledger = tmp_path_factory.mktemp("ledger") / "ledger"
        p = ProxyProc(upstream or sandbox.bouncer_port, ledger, args, **kw).start()
        started.append(p)
        return p

    yield make
    for p in started:
        p.stop()


@pytest.fixture
def proxy(make_proxy: Callable[..., ProxyProc]) -> ProxyProc:
    """One `scalple serve` in front of the sandbox's PgBouncer, with its own ledger."""
    return make_proxy()
