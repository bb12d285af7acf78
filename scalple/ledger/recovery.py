"""Opening a ledger after any stop: finish interrupted seals, cut a torn journal tail, and say so.

Start-up removes only what it can explain (a half-written segment whose journal is still there,
a journal whose segment is signed, a torn last line that holds no record) and keeps aside in
LEDGER/quarantine/<time>/ whatever it cannot: a segment without checkpoint or journal, a journal
that does not continue the chain, records that differ from what a signed head vouches for.
Nothing kept aside is sealed or signed; `verify` fails while it is there. What was cut or kept
aside, and every statement left without an outcome, become events in the chain.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from scalple.errors import LedgerError
from scalple.events import AuditEvent
from scalple.ledger.canonical import GENESIS
from scalple.ledger.checkpoint import Checkpoint, digest, read_checkpoint
from scalple.ledger.heads import HeadCheck, HeadLine, check_heads, read_heads, wanted
from scalple.ledger.journal import Scan, scan
from scalple.ledger.keys import read_rotation
from scalple.ledger.layout import REASON, Layout, fsync_path, write_atomically
from scalple.ledger.replaced import replaced_checkpoints
from scalple.ledger.trust import KeyChain, key_chain

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
    broken: bool = False  # records were kept aside: later journals cannot continue the chain
    seen: list[AuditEvent] = field(default_factory=list)  # the unsealed records, in order


def system_event(detail: str) -> AuditEvent:
    return AuditEvent(
        kind="system",
        event_id=uuid.uuid4().hex,
        ts_start=time.time_ns() // 1000,
        status="ok",
        detail=detail,
    )


class Aside:
    """Files start-up cannot explain, moved (or copied, when part must stay) to one quarantine
    directory for this start, each with its reason in REASON."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.batch: Path | None = None
        self.notes: list[str] = []

    def _dir(self) -> Path:
        if self.batch is None:
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            batch = self.layout.quarantine_dir / stamp
            n = 1
            while batch.exists():
                n += 1
                batch = self.layout.quarantine_dir / f"{stamp}-{n}"
            batch.mkdir(parents=True)
            self.batch = batch
        return self.batch

    def keep(self, path: Path, why: str, *, copy: bool = False) -> None:
        batch = self._dir()
        rel = path.relative_to(self.layout.root)
        dest = batch / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if copy:
            shutil.copy2(path, dest)
            fsync_path(dest)
        else:
            os.replace(path, dest)
            fsync_path(path.parent)
        with (batch / REASON).open("a") as f:
            f.write(f"{rel}\t{why}\n")
            f.flush()
            os.fsync(f.fileno())
        fsync_path(dest.parent)
        where = dest.relative_to(self.layout.root)
        self.notes.append(f"{rel} ({where}): {why}")
        log.error("kept aside %s as %s: %s", rel, where, why)

    def event(self) -> AuditEvent | None:
        if not self.notes:
            return None
        return system_event(
            "ledger.recovery: start-up kept aside what it could not explain; `scalple verify` "
            "fails until someone has looked at it: " + "; ".join(self.notes)
        )


def _last_checkpoint(layout: Layout, state: State, aside: Aside) -> None:
    for tmp in layout.segment_dir.glob("*.tmp"):
        tmp.unlink()  # a seal interrupted mid-write; never part of the ledger
    listing = layout.list_segments()
    for seg in reversed(listing.segments()):
        if not listing.signed(seg):
            if layout.journal(seg.first_seq).exists():
                # A seal interrupted before its checkpoint: the journal holds every event.
                name = seg.parquet.name
                log.warning("removing unfinished segment %s; its journal is sealed again", name)
                seg.parquet.unlink()
            else:
                aside.keep(
                    seg.parquet,
                    "segment without checkpoint and without journal: its checkpoint was "
                    "removed, or it was put here",
                )
            continue
        try:
            state.checkpoint, data = read_checkpoint(seg.checkpoint)
        except LedgerError as exc:
            aside.keep(seg.checkpoint, f"unreadable checkpoint ({exc})")
            aside.keep(seg.parquet, "its checkpoint is unreadable")
            continue
        state.checkpoint_digest = digest(data)
        state.next_seq = state.checkpoint.last_seq + 1
        state.last_hash = state.checkpoint.last_hash
        return


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


def _signed_ranges(layout: Layout) -> dict[int, Checkpoint]:
    """Every checkpoint by first seq, those a merged segment replaced included."""
    found: dict[int, Checkpoint] = {}
    for seg in layout.sealed():
        try:
            cp, _ = read_checkpoint(seg.checkpoint)
        except LedgerError:
            continue
        found[cp.first_seq] = cp
        for old in replaced_checkpoints(layout, seg):
            found.setdefault(old.first_seq, old)
    return found


def _sealed_leftover(
    layout: Layout, first: int, signed: dict[int, Checkpoint], aside: Aside
) -> None:
    """A journal (or its heads) of seqs sealed already: the process stopped before removing it."""
    journal, heads = layout.journal(first), layout.heads(first)
    cp = signed.get(first)
    if journal.exists():
        found = scan(journal.read_bytes(), first, cp.first_prev_hash) if cp else None
        same = (
            cp is not None
            and found is not None
            and found.problem is None
            and (found.count, found.last_hash) == (cp.events, cp.last_hash)
        )
        if not same:
            aside.keep(journal, "a journal of seqs sealed already, but not the events sealed")
            if heads.exists():
                aside.keep(heads, "the signed heads of that journal")
            return
        journal.unlink()
    if heads.exists():
        heads.unlink()


@dataclass
class _Judged:
    """One journal against its heads: how many of its records to keep, and why not the rest."""

    result: Scan
    heads: HeadCheck
    lines: list[HeadLine]
    keep_to: int
    why: list[str]


def _judge(path: Path, data: bytes, heads_data: bytes, state: State, keys: KeyChain) -> _Judged:
    first = int(path.stem)
    lines, _ = read_heads(heads_data)
    result = scan(data, first, state.last_hash, keep=True, want=wanted(lines))
    end = result.next_seq - 1
    heads = check_heads(
        lines,
        path.name,
        first,
        result.hashes,
        end,
        keys,
        -(2**62),
        stopped=result.problem is not None,
    )
    keep_to, why = end, []
    if result.problem is not None:
        p = result.problem
        keep_to = p.seq - 1
        why.append(f"damaged at seq {p.seq} (byte {p.offset}): {p.what}")
    if heads.seq is not None:
        # A valid head the records do not match: they were changed after it was signed. Only
        # what an earlier head vouches for stays; the rest is kept aside, never sealed.
        keep_to = min(keep_to, heads.vouched)
        why.append(heads.what)
    if heads.forged:
        why.append(f"heads log lines {heads.forged} are not valid signed heads")
    return _Judged(result, heads, lines, keep_to, why)


def _keep_prefix(layout: Layout, path: Path, data: bytes, judged: _Judged, aside: Aside) -> bytes:
    """Keep a copy of the journal and its heads aside, then leave only the records up to
    `keep_to` in the ledger, with the valid heads that vouch for them."""
    first = int(path.stem)
    heads = layout.heads(first)
    reason = "; ".join(judged.why)
    aside.keep(path, f"{reason}; records after seq {judged.keep_to} were not sealed", copy=True)
    if heads.exists():
        aside.keep(heads, "the signed heads that journal was checked against", copy=True)
    result = judged.result
    if judged.keep_to < first:
        cut = 0
    elif judged.keep_to == result.next_seq - 1:
        cut = result.good_bytes  # up to a damaged record, or all but a torn tail
    else:
        cut = result.offsets[judged.keep_to]  # the seq of a head that holds
    with path.open("r+b") as f:
        f.truncate(cut)
        os.fsync(f.fileno())
    kept = [
        line.raw
        for line in judged.lines
        if line.head is not None
        and line.number not in judged.heads.forged
        and line.head.last_seq <= judged.keep_to
    ]
    write_atomically(heads, b"".join(kept), 0o600)
    return data[:cut]


def _trim_heads(path: Path) -> None:
    """Cut a torn last line from a heads log (a head whose write a crash cut short)."""
    data = path.read_bytes()
    _, torn = read_heads(data)
    if torn:
        with path.open("r+b") as f:
            f.truncate(len(data) - torn)
            os.fsync(f.fileno())


def _journal(layout: Layout, path: Path, state: State, keys: KeyChain, aside: Aside) -> None:
    first = int(path.stem)
    heads_path = layout.heads(first)
    has_heads = heads_path.exists()
    if has_heads:
        _trim_heads(heads_path)
    data = path.read_bytes()
    judged = _judge(path, data, heads_path.read_bytes() if has_heads else b"", state, keys)
    if judged.why:
        data = _keep_prefix(layout, path, data, judged, aside)
        if judged.keep_to < judged.result.next_seq - 1 or judged.result.problem is not None:
            state.broken = True
        judged = _judge(path, data, heads_path.read_bytes(), state, keys)
    result = judged.result
    if result.tail:
        _cut_tail(path, result, state)
    if not has_heads and result.count:
        state.events.append(
            system_event(
                f"ledger.recovery: journal/{path.name} had no signed heads: its {result.count} "
                "events were taken as found (a ledger written before signed heads, or its "
                "heads log was removed)"
            )
        )
    state.to_seal.append(Pending(path, first, result.count, state.last_hash, result.last_hash))
    state.seen.extend(result.events)
    state.next_seq, state.last_hash = result.next_seq, result.last_hash


def recover(layout: Layout, trusted_key: str) -> State:
    """Bring the ledger at `layout` to a consistent state to append to; the lock must be held.
    `trusted_key` (hex) and the rotations recorded in the ledger say who may sign its heads."""
    state = State()
    aside = Aside(layout)
    _last_checkpoint(layout, state, aside)
    keys = key_chain(trusted_key, [(p.name, read_rotation(p)) for p in layout.rotations()])
    signed: dict[int, Checkpoint] | None = None
    for first in sorted({f for f, _ in layout.journal_files()}):
        path = layout.journal(first)
        if first < state.next_seq:
            signed = _signed_ranges(layout) if signed is None else signed
            _sealed_leftover(layout, first, signed, aside)
        elif not path.exists():
            aside.keep(layout.heads(first), "signed heads of a journal that is missing")
        elif first != state.next_seq or state.broken:
            why = f"starts at seq {first}, but the ledger continues at seq {state.next_seq}"
            aside.keep(path, why + "; it cannot be chained on")
            if layout.heads(first).exists():
                aside.keep(layout.heads(first), "the signed heads of that journal")
        else:
            _journal(layout, path, state, keys, aside)
    if state.to_seal:
        state.live = state.to_seal.pop()
    state.events.extend(_incomplete(state.seen))
    state.seen = []
    if (event := aside.event()) is not None:
        state.events.append(event)
    return state
