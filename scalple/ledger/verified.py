"""What was verified before: sealed segments already checked, remembered by cheap file identity.

`LEDGER/verified.json` maps a segment's name to the digest of the checkpoint it was checked
against and the identity of its file then (size, mtime, ctime, inode). A reader that finds both
unchanged need not hash the file again: any write to it changes its ctime, which no one can set
back. The sealer notes each segment it sealed (it checked every row against the journal before
signing), compaction each merged segment, `verify_ledger` each segment it checked.

The file is derived (delete it and the next reader checks everything once) and authenticated:
an HMAC keyed from the subject secret, which the proxy and `dsar` hold and a ledger copy does
not, so whoever can write the ledger but holds no key cannot vouch for a changed segment here.
Writers merge under a lock, so the proxy and a reader noting at once lose nothing.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import msgspec

from scalple.ledger.layout import Layout

CACHE_DOMAIN: Final = b"scalple/verified/v1"


class Seen(msgspec.Struct, frozen=True, array_like=True):
    checkpoint: str  # digest of the checkpoint file the segment was checked against
    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    at: int  # when it was checked, µs since the epoch


class _File(msgspec.Struct):
    v: int = 1
    seen: dict[str, Seen] = {}
    mac: str = ""


def cache_key(secret: bytes) -> bytes:
    """The key the cache is authenticated with, derived from the 32-byte subject secret."""
    return hmac.new(secret, CACHE_DOMAIN, hashlib.sha256).digest()


def _mac(key: bytes, seen: dict[str, Seen]) -> str:
    body = msgspec.json.encode(dict(sorted(seen.items())))
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def identity(path: Path) -> tuple[int, int, int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


class VerifiedCache:
    """The cache of one ledger directory, as read once; `note` and `save` add to it."""

    def __init__(self, root: Path, key: bytes) -> None:
        layout = Layout(root)
        self.path, self._segments = layout.verified, layout.segment_dir
        self._key = key
        self.seen = self._load()
        self._noted: dict[str, Seen] = {}

    def of_lane(self, root: Path) -> VerifiedCache:
        """The cache of another lane of the same ledger (each lane keeps its own)."""
        return VerifiedCache(root, self._key)

    def _load(self) -> dict[str, Seen]:
        try:
            found = msgspec.json.decode(self.path.read_bytes(), type=_File)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError):
            return {}  # derived: unreadable means check again, never an error
        if not hmac.compare_digest(found.mac, _mac(self._key, found.seen)):
            return {}  # not written by a holder of the key: trust none of it
        return found.seen

    def fresh(self, seg: Path, checkpoint_digest: str) -> Seen | None:
        """The earlier check of `seg` if its file and checkpoint are still the ones checked."""
        old = self.seen.get(seg.name)
        if old is None or old.checkpoint != checkpoint_digest:
            return None
        try:
            now = identity(seg)
        except FileNotFoundError:
            return None
        return old if (old.size, old.mtime_ns, old.ctime_ns, old.ino) == now else None

    def note(self, seg: Path, checkpoint_digest: str) -> None:
        """Remember `seg` as checked now against the checkpoint with `checkpoint_digest`."""
        size, mtime, ctime, ino = identity(seg)
        seen = Seen(checkpoint_digest, size, mtime, ctime, ino, time.time_ns() // 1000)
        self._noted[seg.name] = seen
        self.seen[seg.name] = seen

    def forget(self, names: Iterable[str]) -> None:
        for name in names:
            self.seen.pop(name, None)
            self._noted[name] = Seen("", 0, 0, 0, 0, 0)  # a tombstone for `save`

    def save(self) -> None:
        """Merge what was noted into the file (as it is now: another process may have added to
        it). A read-only ledger copy keeps nothing; the next reader checks again."""
        if not self._noted:
            return
        try:
            with _locked(self.path.with_name(self.path.name + ".lock")):
                merged = self._load()
                for name, seen in self._noted.items():
                    if seen.checkpoint:
                        merged[name] = seen
                    else:
                        merged.pop(name, None)
                merged = {n: s for n, s in merged.items() if (self._segments / n).exists()}
                body = _File(seen=merged, mac=_mac(self._key, merged))
                tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
                tmp.write_bytes(msgspec.json.encode(body))
                os.replace(tmp, self.path)
        except OSError:
            return
        self._noted.clear()


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
