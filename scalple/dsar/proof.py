"""What an answer can claim about the ledger it came from: the range covered, and verification.

The quick check (every answer) re-reads every checkpoint now — canonical form, Ed25519 signature
by a trusted key, chain to the one before, seq continuity — recomputes every event hash of the
segments not checked before and of the live journal, and for segments checked before confirms
their files are unchanged since (size, mtime, inode; recorded in index/verified.json). The full
check is the ledger's own `verify_ledger` over everything.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import duckdb
import msgspec

from scalple.dsar.index import index_dir, sealed_segments
from scalple.errors import LedgerError
from scalple.ledger.canonical import GENESIS
from scalple.ledger.checkpoint import (
    Checkpoint,
    CompactedCheckpoint,
    digest,
    file_sha256,
    followers,
    read_checkpoint,
)
from scalple.ledger.compact import Merge, check_replaced
from scalple.ledger.journal import scan
from scalple.ledger.keys import key_id, read_rotation
from scalple.ledger.layout import Layout, SegmentFiles
from scalple.ledger.segment import check_rows
from scalple.ledger.trust import key_chain
from scalple.ledger.verify import verify_ledger

VERIFIED: str = "verified.json"
Mode = Literal["quick", "full"]


class _Seen(msgspec.Struct, frozen=True):
    checkpoint: str
    size: int
    mtime_ns: int
    ino: int
    at: int


@dataclass
class Verification:
    """The outcome over the range: `first_bad` names the first bad entry when not intact."""

    mode: Mode
    intact: bool = True
    first_bad: str | None = None
    checkpoints: int = 0
    rehashed_segments: int = 0
    cached_segments: int = 0
    cached_since: int | None = None
    journal_events: int = 0
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if not self.intact:
            return f"FAILED: {self.first_bad}"
        if self.mode == "full":
            return (
                "intact (full: every hash, link and signature recomputed; "
                f"{self.checkpoints} checkpoints)"
            )
        text = (
            f"intact: {self.checkpoints} checkpoints signed and chained; event hashes recomputed "
            f"now for {self.rehashed_segments} segments and {self.journal_events} journal events"
        )
        if self.cached_segments:
            when = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime((self.cached_since or 0) / 1e6))
            text += f", for {self.cached_segments} segments at {when} (files unchanged since)"
        return text


@dataclass(frozen=True)
class Coverage:
    """The ledger range an answer covers."""

    first_seq: int
    last_seq: int
    first_ts: int | None
    last_ts: int | None
    segments: int
    journal_events: int
    indexed_upto: int


class _Bad(Exception):
    pass


def _stat(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ino


def _load_seen(ledger: Path) -> dict[str, _Seen]:
    try:
        return msgspec.json.decode(
            (index_dir(ledger) / VERIFIED).read_bytes(), type=dict[str, _Seen]
        )
    except (OSError, msgspec.DecodeError):
        return {}


def _save_seen(ledger: Path, seen: dict[str, _Seen]) -> None:
    path = index_dir(ledger) / VERIFIED
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(msgspec.json.encode(seen))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only ledger copy: the next answer rechecks those segments again


class _Chain:
    def __init__(self, ledger: Path, trusted_key: str) -> None:
        layout = Layout(ledger)
        rotations = [(p.name, read_rotation(p)) for p in layout.rotations()]
        self.keys = key_chain(trusted_key, rotations)
        if self.keys.problems:
            raise _Bad(f"keys: {self.keys.problems[0]}")
        self.rank = 0
        self.next_seq = 1
        self.last_hash = GENESIS
        self.prev_digests: tuple[str, ...] = ("",)

    def follow(self, seg: SegmentFiles) -> tuple[Checkpoint, str]:
        where = f"segments/{seg.checkpoint.name}"
        try:
            cp, data = read_checkpoint(seg.checkpoint)
        except LedgerError as exc:
            raise _Bad(f"{where}: {exc}") from None
        rank = self.keys.rank(cp.public_key)
        problem = (
            "checkpoint file is not in canonical form"
            if data != cp.encode()
            else f"checkpoint is for {cp.segment}"
            if cp.segment != seg.parquet.name
            else "checkpoint signature is not valid"
            if not cp.signature_valid()
            else f"signed by untrusted key {key_id(cp.public_key)}"
            if rank is None
            else f"signed by retired key {key_id(cp.public_key)}"
            if rank < self.rank
            else f"events {self.next_seq}..{cp.first_seq - 1} missing or overlapping"
            if cp.first_seq != self.next_seq
            or (cp.first_seq, cp.last_seq) != (seg.first_seq, seg.last_seq)
            else "checkpoint does not follow the previous checkpoint"
            if cp.prev_checkpoint not in self.prev_digests or cp.first_prev_hash != self.last_hash
            else ""
        )
        if problem:
            raise _Bad(f"{where}, seq {seg.first_seq}: {problem}")
        self.rank = rank or 0
        self.next_seq, self.last_hash = cp.last_seq + 1, cp.last_hash
        cp_digest = digest(data)
        self.prev_digests = followers(cp, cp_digest)
        return cp, cp_digest


def _rehash(con: duckdb.DuckDBPyConnection, seg: SegmentFiles, cp: Checkpoint) -> None:
    where = f"segments/{seg.parquet.name}"
    try:
        rows = check_rows(con, seg.parquet, cp.first_seq, cp.first_prev_hash)
    except duckdb.Error:
        raise _Bad(f"{where}: segment is not readable Parquet") from None
    if rows.problem is not None:
        raise _Bad(f"{where}, seq {rows.problem.seq}: {rows.problem.what}")
    if rows.count != cp.events or rows.last_hash != cp.last_hash:
        raise _Bad(f"{where}: segment does not hold the events its checkpoint lists")
    if file_sha256(seg.parquet) != cp.segment_sha256:
        raise _Bad(f"{where}: segment file differs from the digest its checkpoint signed")


def _journals(ledger: Path, chain: _Chain, result: Verification) -> None:
    layout = Layout(ledger)
    journals = [(f, p) for f, p in layout.journals() if f >= chain.next_seq]
    for i, (first, path) in enumerate(journals):
        if first != chain.next_seq:
            raise _Bad(f"journal/{path.name}: events {chain.next_seq}..{first - 1} are missing")
        found = scan(path.read_bytes(), first, chain.last_hash)
        if found.problem is not None:
            raise _Bad(f"journal/{path.name}, seq {found.problem.seq}: {found.problem.what}")
        if found.tail and i != len(journals) - 1:
            raise _Bad(f"journal/{path.name}: a journal that was closed ends mid-record")
        if found.tail:
            result.warnings.append(f"journal/{path.name} ends in a write in progress")
        result.journal_events += found.count
        chain.next_seq, chain.last_hash = found.next_seq, found.last_hash


class _LazyConnection:
    """DuckDB, started on first use: an answer over segments checked before needs none."""

    def __init__(self) -> None:
        self._con: duckdb.DuckDBPyConnection | None = None

    def __call__(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            self._con = duckdb.connect(config={"threads": 2})
            self._con.execute("SET enable_progress_bar = false")
        return self._con

    def close(self) -> None:
        if self._con is not None:
            self._con.close()


def verify_quick(ledger: Path, trusted_key: str) -> Verification:
    """Check the ledger at `ledger` as the module says; remembers segments rehashed."""
    ledger = Path(ledger)
    result = Verification("quick")
    seen = _load_seen(ledger)
    fresh: dict[str, _Seen] = {}
    con = _LazyConnection()
    try:
        chain = _Chain(ledger, trusted_key)
        for seg in sealed_segments(Layout(ledger)):
            cp, cp_digest = chain.follow(seg)
            result.checkpoints += 1
            size, mtime, ino = _stat(seg.parquet)
            old = seen.get(seg.parquet.name)
            cached = old is not None and (old.checkpoint, old.size, old.mtime_ns, old.ino) == (
                cp_digest,
                size,
                mtime,
                ino,
            )
            if isinstance(cp, CompactedCheckpoint):
                layout = Layout(ledger)
                bad = check_replaced(None if cached else con(), layout, seg, cp, chain.keys)
                if bad is not None:
                    path, seq, what = bad
                    at = f", seq {seq}" if seq is not None else ""
                    raise _Bad(f"{path.relative_to(ledger)}{at}: {what}")
            if old and cached:
                fresh[seg.parquet.name] = old
                result.cached_segments += 1
                result.cached_since = min(result.cached_since or old.at, old.at)
                continue
            _rehash(con(), seg, cp)
            result.rehashed_segments += 1
            fresh[seg.parquet.name] = _Seen(cp_digest, size, mtime, ino, time.time_ns() // 1000)
        _journals(ledger, chain, result)
    except _Bad as bad:
        result.intact, result.first_bad = False, str(bad)
    finally:
        con.close()
    if result.intact and fresh != seen:
        _save_seen(ledger, fresh)
    return result


def verify_full(ledger: Path, trusted_key: str) -> Verification:
    """The ledger's own verification over everything (slow on a large ledger)."""
    report = verify_ledger(Path(ledger), trusted_key)
    result = Verification("full", checkpoints=report.segments, journal_events=report.journal_events)
    result.warnings.extend(report.warnings)
    if report.first_bad is not None:
        result.intact, result.first_bad = False, str(report.first_bad)
    return result


def verify_range(ledger: Path, trusted_key: str, mode: Mode) -> Verification:
    return verify_full(ledger, trusted_key) if mode == "full" else verify_quick(ledger, trusted_key)


def coverage(con: duckdb.DuckDBPyConnection, ledger: Path, indexed_upto: int) -> Coverage:
    """First/last seq and time of the ledger (reads only its first segment and its tail)."""
    from scalple.ledger.query import quote

    segments = sealed_segments(Layout(ledger))
    sealed_upto = segments[-1].last_seq if segments else 0
    first_ts: int | None = None
    if segments:
        first_ts = con.execute(
            f"SELECT min(ts_start) FROM read_parquet({quote(segments[0].parquet)})"
        ).fetchone()[0]  # type: ignore[index]
    tail = con.execute(
        f"SELECT min(seq), max(seq), max(ts_start), count(*) FILTER (WHERE seq > {sealed_upto}) "
        f"FROM events WHERE seq > {max(sealed_upto - 1, 0)}"
    ).fetchone()
    assert tail is not None
    lo, hi, last_ts, journal = tail
    first_seq = segments[0].first_seq if segments else (lo or 0)
    if first_ts is None and lo is not None:
        first_ts = con.execute(f"SELECT ts_start FROM events WHERE seq = {lo}").fetchone()[0]  # type: ignore[index]
    return Coverage(
        first_seq=first_seq,
        last_seq=hi or 0,
        first_ts=first_ts,
        last_ts=last_ts,
        segments=len(segments),
        journal_events=int(journal or 0),
        indexed_upto=indexed_upto,
    )


def note_compacted(ledger: Path, merge: Merge) -> None:
    """Remember a merged segment as checked: compaction recomputed each of its event hashes
    before signing it, as sealing does, so the next answer need not rehash it."""
    ledger = Path(ledger)
    seen = _load_seen(ledger)
    if not seen:
        return
    for name in merge.replaced:
        seen.pop(name, None)
    seg = Layout(ledger).segment_dir / merge.merged
    size, mtime, ino = _stat(seg)
    seen[merge.merged] = _Seen(merge.checkpoint_digest, size, mtime, ino, time.time_ns() // 1000)
    _save_seen(ledger, seen)
