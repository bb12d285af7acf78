"""Signed heads: the writer's signature over the last seq and hash of a journal, every few seconds.

A journal's records carry only hashes, so without the key anyone could rewrite them and
recompute the chain. Each head (Ed25519 over HEAD_DOMAIN + its JSON with `signature` blank) fixes
every record up to its seq; the heads of one journal are lines of `<first seq>.heads` beside it.
`check_heads` is the one judgment of a journal against its heads, used by `verify` and start-up.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import msgspec
from msgspec import UNSET, UnsetType

from scalple.ledger.keys import SigningKey, key_id, verify_signature
from scalple.ledger.trust import KeyChain

HEAD_DOMAIN: Final = b"scalple/head/v1\n"


class Head(msgspec.Struct, frozen=True, kw_only=True):
    v: int = 1
    journal: str
    last_seq: int
    last_hash: str
    signed_at: int
    public_key: str
    signature: str = ""
    lanes: tuple[str, ...] | UnsetType = UNSET  # as in a checkpoint (scalple.ledger.lanes)

    def message(self) -> bytes:
        return HEAD_DOMAIN + msgspec.json.encode(msgspec.structs.replace(self, signature=""))

    def with_signature(self, key: SigningKey) -> Head:
        return msgspec.structs.replace(self, signature=key.sign(self.message()))

    def signature_valid(self) -> bool:
        return verify_signature(self.public_key, self.signature, self.message())

    def encode(self) -> bytes:
        return msgspec.json.encode(self) + b"\n"


def sign_head(
    key: SigningKey,
    journal: Path,
    last_seq: int,
    last_hash: str,
    lanes: tuple[str, ...] | None = None,
) -> Head:
    unsigned = Head(
        journal=journal.name,
        last_seq=last_seq,
        last_hash=last_hash,
        signed_at=time.time_ns() // 1000,
        public_key=key.public,
        lanes=UNSET if lanes is None else lanes,
    )
    return unsigned.with_signature(key)


def create_log(path: Path) -> None:
    """An empty heads log, made with its journal (a log that is missing later was removed)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))


def append_head(path: Path, head: Head) -> bool:
    """Add `head` to the log at `path` and fsync it; False when the log is gone (its journal was
    sealed meanwhile: the checkpoint vouches for it now)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)  # never O_CREAT: see the docstring
    except FileNotFoundError:
        return False
    try:
        data = head.encode()
        if os.write(fd, data) != len(data):
            raise OSError(f"short write to {path}")
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


@dataclass(frozen=True)
class HeadLine:
    """One line of a heads log: the head if it is a canonical head, else why not."""

    number: int
    head: Head | None
    raw: bytes
    problem: str = ""


def read_heads(data: bytes) -> tuple[list[HeadLine], int]:
    """The lines of a heads log and the length of a torn last line (a write cut short)."""
    end = data.rfind(b"\n") + 1
    lines: list[HeadLine] = []
    for number, raw in enumerate(data[:end].splitlines(keepends=True), 1):
        try:
            head = msgspec.json.decode(raw, type=Head)
        except (msgspec.DecodeError, UnicodeDecodeError):
            lines.append(HeadLine(number, None, raw, "is not a signed head"))
            continue
        if head.encode() != raw:
            lines.append(HeadLine(number, None, raw, "is not in canonical form"))
            continue
        lines.append(HeadLine(number, head, raw))
    return lines, len(data) - end


def wanted(lines: list[HeadLine]) -> set[int]:
    """The seqs whose hash a journal scan must note for `check_heads`."""
    return {line.head.last_seq for line in lines if line.head is not None}


def _when(us: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(us / 1e6))


@dataclass
class HeadCheck:
    """A journal judged against its heads: the first problem (seq, what, the line it is on),
    and the last seq every valid head agrees with so far (`vouched`, the journal's first seq - 1
    if none)."""

    vouched: int
    heads: int = 0
    last_signed_at: int | None = None
    key_rank: int = -(2**62)
    seq: int | None = None
    what: str = ""
    line: int = 0
    forged: list[int] = field(default_factory=list)  # lines that are not valid heads
    lanes: set[str] = field(default_factory=set)  # named by the valid heads checked

    @property
    def ok(self) -> bool:
        return not self.what and not self.forged


def _line_problem(line: HeadLine, journal: str, keys: KeyChain, rank: int) -> str:
    head = line.head
    if head is None:
        return line.problem
    if head.journal != journal:
        return f"is a head of {head.journal}"
    if not head.signature_valid():
        return "has a signature that is not valid"
    key_rank = keys.rank(head.public_key)
    if key_rank is None:
        return f"is signed by untrusted key {key_id(head.public_key)}"
    if key_rank < rank:
        return f"is signed by retired key {key_id(head.public_key)}"
    return ""


def check_heads(
    lines: list[HeadLine],
    journal: str,
    first_seq: int,
    hashes: Mapping[int, str],
    end_seq: int,
    keys: KeyChain,
    key_rank: int,
    *,
    stopped: bool = False,
) -> HeadCheck:
    """Judge a journal holding seqs `first_seq`..`end_seq` (with the hash at each seq a head names
    in `hashes`) against its heads, in order. Lines that are not valid heads are listed in
    `forged` and ignored otherwise: they prove tampering with the log, not with the records.
    `stopped`: reading stopped at a bad record after `end_seq`, so heads past it say nothing."""
    result = HeadCheck(vouched=first_seq - 1, key_rank=key_rank)
    for line in lines:
        if stopped and line.head is not None and line.head.last_seq > end_seq:
            break
        problem = _line_problem(line, journal, keys, result.key_rank)
        if problem:
            result.forged.append(line.number)
            if not result.what:
                result.seq, result.what, result.line = None, f"line {line.number} {problem}", 0
            continue
        head = line.head
        assert head is not None
        result.key_rank = keys.rank(head.public_key) or 0
        signed = f"signed at {_when(head.signed_at)} (line {line.number})"
        if head.last_seq < max(result.vouched, first_seq):
            what = f"head {signed} goes back to seq {head.last_seq}"
            return _bad(result, head.last_seq, what, line.number)
        low = result.vouched + 1
        if head.last_seq > end_seq:
            what = (
                f"the journal ends at seq {end_seq}, but a head {signed} vouches for events "
                f"{low}..{head.last_seq}: events were removed"
            )
            return _bad(result, low, what, line.number)
        if hashes.get(head.last_seq) != head.last_hash:
            what = (
                f"events {low}..{head.last_seq} differ from the ones a head {signed} vouches "
                "for: rewritten, removed or reordered"
            )
            return _bad(result, low, what, line.number)
        result.vouched = head.last_seq
        result.heads += 1
        if not isinstance(head.lanes, UnsetType):
            result.lanes.update(head.lanes)
        result.last_signed_at = head.signed_at
    return result


def _bad(result: HeadCheck, seq: int, what: str, line: int) -> HeadCheck:
    if not result.what or result.seq is None:
        result.seq, result.what, result.line = seq, what, line
    return result
