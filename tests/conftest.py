"""Shared fixtures: one real PostgreSQL 15 (pgAudit) + PgBouncer (transaction mode) per test run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scalple.sandbox import Sandbox


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
