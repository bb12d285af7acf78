"""Opening a ledger after any stop: finish interrupted seals, cut a torn journal tail, and say so.

What was cut, and every statement left without an outcome, become events in the chain.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from scalple.errors import LedgerError
from scalple.events import AuditEvent
from scalple.ledger.canonical import GENESIS
from scalple.ledger.checkpoint import Checkpoint, digest, read_checkpoint
from scalple.ledger.journal import Scan, scan
from scalple.ledger.layout import Layout

log = logging.getLogger("scalple.ledger")


@dataclass
class Pending:
    """A closed journal awaiting seal: what it must contain."""

    path: Path
    first_seq: int
    count: int
    first_prev_hash: str
    last_hash: str


@dataclass
class State:
    """Where appending resumes, and what is left to seal or to record."""

    next_seq: int = 1
    last_hash: str = GENESIS
    checkpoint: Checkpoint | None = None
    checkpoint_digest: str = ""
    live: Pending | None = None
    to_seal: list[Pending] = field(default_factory=list)
    events: list[AuditEvent] = field(default_factory=list)


def system_event(detail: str) -> AuditEvent:
    return AuditEvent(
        kind="system",
        event_id=uuid.uuid4().hex,
        ts_start=time.time_ns() // 1000,
        status="ok",
        detail=detail,
    )


def _last_checkpoint(layout: Layout, state: State) -> None:
    for tmp in layout.segment_dir.glob("*.tmp"):
        tmp.unlink()  # a seal interrupted mid-write
    for seg in reversed(layout.segments()):
        if not seg.checkpoint.exists():
            # A seal interrupted before its checkpoint: the journal is still there; redo it.
            log.warning("removing unfinished segment %s", seg.parquet.name)
            seg.parquet.unlink()
            continue
        state.checkpoint, data = read_checkpoint(seg.checkpoint)
        state.checkpoint_digest = digest(data)
        state.next_seq = state.checkpoint.last_seq + 1
        state.last_hash = state.checkpoint.last_hash
        return


def _scan_file(path: Path, state: State) -> Scan:
    data = path.read_bytes()
    result = scan(data, state.next_seq, state.last_hash, keep=True)
    if result.problem is not None:
        p = result.problem
        raise LedgerError(
            f"journal {path.name} is damaged at seq {p.seq} (byte {p.offset}): "
            f"{p.what}; run `scalple verify` and keep a copy before repairing"
        )
    return result


def _cut_tail(path: Path, result: Scan, state: State) -> None:
    sha = hashlib.sha256(result.tail).hexdigest()
    with path.open("r+b") as f:
        f.truncate(result.good_bytes)
        os.fsync(f.fileno())
    log.warning("cut a torn write of %d bytes from %s", len(result.tail), path.name)
    state.events.append(
        system_event(
            f"ledger.recovery: cut {len(result.tail)} torn bytes at byte {result.good_bytes} of "
            f"journal/{path.name} (sha256 {sha}); they held no complete record"
        )
    )


def _incomplete(events: list[AuditEvent]) -> list[AuditEvent]:
    answered = {e.event_id for e in events if e.kind == "outcome"}
    now = time.time_ns() // 1000
    return [
        AuditEvent(
            kind="outcome",
            event_id=e.event_id,
            ts_start=e.ts_start,
            ts_end=now,
            actor=e.actor,
            identity_source=e.identity_source,
            db_role=e.db_role,
            database=e.database,
            session_id=e.session_id,
            tx_seq=e.tx_seq,
            status="incomplete",
            detail="ledger.recovery: no outcome was recorded before the proxy stopped",
        )
        for e in events
        if e.kind == "statement" and e.status == "pending" and e.event_id not in answered
    ]


def recover(layout: Layout) -> State:
    """Bring the ledger at `layout` to a consistent state to append to; the lock must be held."""
    state = State()
    _last_checkpoint(layout, state)
    seen: list[AuditEvent] = []
    for first, path in layout.journals():
        if first < state.next_seq:
            path.unlink()  # sealed already; the process stopped before deleting it
            continue
        if first != state.next_seq:
            raise LedgerError(
                f"journal {path.name} starts at seq {first}, but the ledger "
                f"continues at {state.next_seq}; run `scalple verify`"
            )
        result = _scan_file(path, state)
        if result.tail:
            _cut_tail(path, result, state)
        pending = Pending(path, first, result.count, state.last_hash, result.last_hash)
        state.to_seal.append(pending)
        seen.extend(result.events)
        state.next_seq, state.last_hash = result.next_seq, result.last_hash
    if state.to_seal:
        state.live = state.to_seal.pop()
    state.events.extend(_incomplete(seen))
    return state
