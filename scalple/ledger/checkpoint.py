"""Checkpoints: a signed statement of what one sealed segment holds, chained to the one before."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Final

import msgspec
from msgspec import UNSET, UnsetType

from scalple.errors import LedgerError
from scalple.ledger.keys import SigningKey, verify_signature

CHECKPOINT_DOMAIN: Final = b"scalple/checkpoint/v1\n"


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True):
    """Signed with Ed25519 over CHECKPOINT_DOMAIN + its JSON with `signature` blank."""

    v: int = 1
    segment: str
    segment_sha256: str
    events: int
    first_seq: int
    last_seq: int
    first_prev_hash: str
    last_hash: str
    prev_checkpoint: str
    sealed_at: int
    public_key: str
    signature: str = ""
    # The lanes of the ledger when signed (scalple.ledger.lanes); unset (and not encoded, so
    # checkpoints from before lanes keep their bytes) in a ledger without lanes.
    lanes: tuple[str, ...] | UnsetType = UNSET

    def message(self) -> bytes:
        return CHECKPOINT_DOMAIN + msgspec.json.encode(msgspec.structs.replace(self, signature=""))

    def signed(self, key: SigningKey) -> Checkpoint:
        if key.public != self.public_key:
            raise ValueError("checkpoint names a different public key")
        return msgspec.structs.replace(self, signature=key.sign(self.message()))

    def signature_valid(self) -> bool:
        return verify_signature(self.public_key, self.signature, self.message())

    def encode(self) -> bytes:
        return msgspec.json.encode(self) + b"\n"


class CompactedCheckpoint(Checkpoint, frozen=True, kw_only=True):
    """Signs a segment that merges sealed segments (`scalple index compact`): the same seqs,
    first prev_hash and last hash as theirs together, and `replaces`, the digests of their
    checkpoints in order (kept whole, with their signatures, in the segment's side file). The
    next checkpoint may follow either this one or the last one it replaces."""

    v: int = 2
    replaces: tuple[str, ...] = ()

    def followed_by(self, own_digest: str) -> tuple[str, ...]:
        return (own_digest, self.replaces[-1]) if self.replaces else (own_digest,)


class _Version(msgspec.Struct):
    v: int = 1


def decode_checkpoint(data: bytes) -> Checkpoint:
    """A checkpoint of either kind from its JSON; msgspec errors as they come."""
    version = msgspec.json.decode(data, type=_Version).v
    kind = CompactedCheckpoint if version == 2 else Checkpoint
    return msgspec.json.decode(data, type=kind)


def convert_checkpoint(raw: object) -> Checkpoint:
    """A checkpoint of either kind from decoded JSON (as an export carries it)."""
    version = raw.get("v", 1) if isinstance(raw, dict) else 1
    kind = CompactedCheckpoint if version == 2 else Checkpoint
    return msgspec.convert(raw, kind)


def followers(cp: Checkpoint, own_digest: str) -> tuple[str, ...]:
    """The `prev_checkpoint` values the checkpoint after `cp` may hold."""
    if isinstance(cp, CompactedCheckpoint):
        return cp.followed_by(own_digest)
    return (own_digest,)


def lanes_named(cp: Checkpoint) -> tuple[str, ...]:
    return () if isinstance(cp.lanes, UnsetType) else cp.lanes


def digest(data: bytes) -> str:
    """What the next checkpoint's `prev_checkpoint` holds: SHA-256 of this one's file bytes."""
    return hashlib.sha256(data).hexdigest()


def read_checkpoint(path: Path) -> tuple[Checkpoint, bytes]:
    """The checkpoint in `path` and its exact bytes; LedgerError if unreadable or malformed."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LedgerError(f"cannot read checkpoint {path}: {exc.strerror}") from exc
    try:
        return decode_checkpoint(data), data
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # bad UTF-8 is the latter
        raise LedgerError(f"{path} is not a checkpoint: {exc}") from exc


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
