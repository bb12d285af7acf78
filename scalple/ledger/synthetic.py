"""Synthetic audit events shaped like real proxy traffic, for tests and benchmarks."""

from __future__ import annotations

from scalple.events import AuditEvent

_SQL = 'UPDATE pgbench_accounts SET abalance = abalance + $1\n\tWHERE aid = $2 /* "x" */'


def statement(i: int, *, actor: str = "alice@example.com") -> AuditEvent:
    """The write-ahead record of the `i`th statement."""
    return AuditEvent(
        kind="statement",
        event_id=f"{i:032x}",
        ts_start=1_700_000_000_000_000 + i,
        actor=actor,
        actor_email=actor,
        identity_source="comment",
        db_role="app_user",
        database="app",
        application_name="pgbench",
        client_addr="127.0.0.1",
        client_port=50_000 + i % 1000,
        session_id=f"s{i % 50}",
        tx_seq=i,
        statement=_SQL,
        params=("***", None),
        fingerprint="9f86d081884c7d65",
        audit_class="WRITE",
        tables=("public.pgbench_accounts",),
        columns=("public.pgbench_accounts.abalance", "public.pgbench_accounts.aid"),
        subjects=(f"{i % 997:064x}",),
    )


def outcome(i: int) -> AuditEvent:
    """The outcome record of the `i`th statement."""
    return AuditEvent(
        kind="outcome",
        event_id=f"{i:032x}",
        ts_start=1_700_000_000_000_000 + i,
        ts_end=1_700_000_000_000_100 + i,
        duration_us=100,
        command_tag="UPDATE 1",
        rows=1,
        status="ok",
    )


def pair(i: int) -> tuple[AuditEvent, AuditEvent]:
    return statement(i), outcome(i)
