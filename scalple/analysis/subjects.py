"""Data-subject identifiers as keyed hashes, and a capped set to collect them per statement."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from typing import Final

_INTEGER: Final = re.compile(r"[+-]?\d+")


def normalize(value: str) -> str:
    """One spelling per identifier: integers lose leading zeros and signs of +, text is casefolded.

    So `042`, `42` and `+42` are one customer, and `John@Example.com` is `john@example.com`.
    """
    v = value.strip()
    if _INTEGER.fullmatch(v):
        return str(int(v))
    return v.casefold()


def subject_hash(key: bytes, kind: str, value: str) -> str:
    """HMAC-SHA-256(key, kind 0x1f normalized value), hex. The one definition dsar uses too."""
    msg = kind.encode() + b"\x1f" + normalize(value).encode()
    return hmac.digest(key, msg, "sha256").hex()


_IPAD: Final = bytes(x ^ 0x36 for x in range(256))
_OPAD: Final = bytes(x ^ 0x5C for x in range(256))
_BLOCK: Final = 64  # SHA-256's block size


class SubjectHasher:
    """`subject_hash` for one key, with the key's two HMAC pads hashed once (RFC 2104), so each
    value costs two SHA-256 state copies instead of a fresh HMAC: the same hashes, faster."""

    def __init__(self, key: bytes) -> None:
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        padded = key.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(padded.translate(_IPAD))
        self._outer = hashlib.sha256(padded.translate(_OPAD))

    def __call__(self, kind: str, value: str) -> str:
        inner = self._inner.copy()
        inner.update(kind.encode() + b"\x1f" + normalize(value).encode())
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()


class SubjectSet:
    """Distinct subject hashes in first-seen order, up to `cap`; `capped` says some were dropped."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._seen: dict[str, None] = {}
        self.capped = False

    def add(self, hashes: Iterable[str]) -> None:
        for h in hashes:
            self.add_one(h)

    def add_one(self, h: str) -> None:
        if h in self._seen:
            return
        if len(self._seen) >= self.cap:
            self.capped = True
            return
        self._seen[h] = None

    def restore(self, subjects: tuple[str, ...], capped: bool) -> None:
        """Start from a state `subjects` and `capped` once had (an exact-text cache hit)."""
        self._seen = dict.fromkeys(subjects)
        self.capped = capped

    @property
    def subjects(self) -> tuple[str, ...]:
        return tuple(self._seen)
