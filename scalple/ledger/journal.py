"""Reading a journal: check each canonical record's hash, seq and link; find a torn tail.

Pure functions over bytes. A torn tail is what follows the last newline: a write the process did
not finish. A complete line that fails its checks is damage, never treated as torn.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

import msgspec

from scalple.events import AuditEvent
from scalple.ledger.canonical import canonical_bytes, canonical_of_line, decode_line, event_hash


@dataclass(frozen=True)
class Problem:
    """The first bad record: where (`seq` expected there, byte offset) and what is wrong."""

    seq: int
    offset: int
    what: str


@dataclass
class Scan:
    """What a journal holds: `good_bytes` of valid records, then `tail` bytes of a torn write."""

    first_seq: int
    count: int = 0
    last_hash: str = ""
    good_bytes: int = 0
    tail: bytes = b""
    problem: Problem | None = None
    events: list[AuditEvent] = field(default_factory=list)
    hashes: dict[int, str] = field(default_factory=dict)  # the hash at each seq asked for
    offsets: dict[int, int] = field(default_factory=dict)  # the byte after each seq asked for

    @property
    def next_seq(self) -> int:
        return self.first_seq + self.count


def _check(line: bytes, seq: int, prev_hash: str) -> tuple[AuditEvent | None, str]:
    try:
        event = decode_line(line)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        return None, f"not a valid audit record ({exc})"
    canonical = canonical_of_line(line)
    if canonical_bytes(event) != canonical:
        return None, "record is not in canonical form"
    if event_hash(canonical) != event.hash:
        return None, "hash does not match the record's content"
    if event.seq != seq:
        return None, f"seq {event.seq} where {seq} was expected"
    if event.prev_hash != prev_hash:
        return None, "prev_hash does not link to the previous event"
    return event, ""


def scan(
    data: bytes,
    first_seq: int,
    prev_hash: str,
    *,
    keep: bool = False,
    want: Collection[int] = (),
) -> Scan:
    """Check records in `data` expecting seq `first_seq` linked to `prev_hash`; stop at the first
    bad one. `keep` keeps the decoded events; the hash and end offset of each seq in `want` are
    noted (a signed head names them)."""
    result = Scan(first_seq=first_seq, last_hash=prev_hash)
    end = data.rfind(b"\n") + 1
    result.tail = data[end:]
    offset = 0
    while offset < end:
        nl = data.index(b"\n", offset)
        event, what = _check(data[offset:nl], result.next_seq, result.last_hash)
        if event is None:
            result.problem = Problem(result.next_seq, offset, what)
            return result
        result.count += 1
        result.last_hash = event.hash
        if keep:
            result.events.append(event)
        offset = nl + 1
        result.good_bytes = offset
        if event.seq in want:
            result.hashes[event.seq] = event.hash
            result.offsets[event.seq] = offset
    return result
