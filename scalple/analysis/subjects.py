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
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


class SubjectSet:
    """Distinct subject hashes in first-seen order, up to `cap`; `capped` says some were dropped."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._seen: dict[str, None] = {}
        self.capped = False

    def add(self, hashes: Iterable[str]) -> None:
        for h in hashes:
            if h in self._seen:
                continue
            if len(self._seen) >= self.cap:
                self.capped = True
                return
            self._seen[h] = None

    @property
    def subjects(self) -> tuple[str, ...]:
        return tuple(self._seen)
