"""The audit event: the one record the proxy produces, the ledger chains and `dsar` reads.

A statement yields two records sharing `event_id`: a `statement` record written ahead of
forwarding (who, what, when) and an `outcome` record when the upstream answers (rows, status,
duration, subjects seen in results). A `statement` without an `outcome` is incomplete.
`system` records describe the ledger and proxy themselves (recovery, key rotation, start, stop).
`alert` records are what the live rules raised about `actor` (`detail` holds the finding as JSON),
so the alert history is chained like everything else and `dsar --actor` shows it.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

SCHEMA_VERSION: Final = 1

Kind = Literal["statement", "outcome", "system", "alert"]
IdentitySource = Literal["proxy_auth", "comment", "set", "startup", "none"]
# pending: written ahead, no answer yet; skipped: never ran because an earlier message of the
# same batch failed; refused: Scalple did not forward it (no identity, or untrusted claim).
Status = Literal["pending", "ok", "error", "cancelled", "skipped", "refused", "incomplete"]
AuditClass = Literal["READ", "WRITE", "FUNCTION", "ROLE", "DDL", "MISC"]


class AuditEvent(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One ledger record. Field order is the canonical order; append new fields at the end."""

    v: int = SCHEMA_VERSION
    kind: Kind
    event_id: str
    seq: int = 0
    ts_start: int
    ts_end: int | None = None
    duration_us: int | None = None
    actor: str | None = None
    actor_email: str | None = None
    identity_source: IdentitySource = "none"
    db_role: str | None = None
    database: str | None = None
    application_name: str | None = None
    client_addr: str | None = None
    client_port: int | None = None
    session_id: str | None = None
    tx_seq: int | None = None
    statement: str | None = None
    params: tuple[str | None, ...] = ()
    fingerprint: str | None = None
    audit_class: AuditClass | None = None
    command_tag: str | None = None
    tables: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    rows: int | None = None
    masked_fields: tuple[str, ...] = ()
    subjects: tuple[str, ...] = ()
    subjects_capped: bool = False
    status: Status = "pending"
    sqlstate: str | None = None
    error: str | None = None
    # ok: analysed; failed: would not parse; skipped: not parsed (too big or past the time
    # budget). Both of the latter record every literal, parameter and comment masked.
    analysis: Literal["ok", "failed", "skipped"] | None = None
    detail: str | None = None
    prev_hash: str = ""
    hash: str = ""
