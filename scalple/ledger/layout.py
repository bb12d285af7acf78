"""Where a ledger keeps its files. On disk, for a ledger directory LEDGER:

    LEDGER/LOCK                                  held (flock) by the one process appending
    LEDGER/journal/<first seq:020>.jsonl         unsealed events, one canonical record a line;
                                                 the highest-numbered is live, others await seal
    LEDGER/journal/<first seq:020>.heads         signed heads of that journal, one a line
                                                 (scalple.ledger.heads): every few seconds the
                                                 writer signs the last seq and hash it made
                                                 durable; created with the journal, removed
                                                 after it once it is sealed
    LEDGER/segments/<first:020>-<last:020>.parquet      sealed events, read-only (0444)
    LEDGER/segments/<first:020>-<last:020>.checkpoint   signed checkpoint of that segment (0444)
    LEDGER/segments/<first:020>-<last:020>.replaced     of a merged segment (compaction): the
                                                 checkpoints of the segments it replaced
    LEDGER/keys/<n:06>.rotation                  key rotation certificates (old key signs new)
    LEDGER/quarantine/<time>/...                 what start-up found and could not explain, kept
                                                 aside under its own relative path, with REASON;
                                                 `verify` fails while anything is here
    LEDGER/verified.json                         derived: segments already checked, by file
                                                 identity (scalple.ledger.verified); deletable
    LEDGER/index/                                derived: the subject index (scalple.dsar.index)

Sequence numbers start at 1 and have no gaps; a segment's name gives the seqs it holds.

Lanes (scalple.ledger.lanes): with several writers (`serve --workers N`), each appends to a lane
of its own, a complete ledger directory as above (its own LOCK, journal, chain from seq 1,
segments, checkpoints, heads, verified.json and index/):

    LEDGER/lanes/<host>-w<worker>/...            one lane, laid out as LEDGER above
    LEDGER/keys/<n:06>.rotation                  key rotations: one set for every lane

A ledger written before lanes keeps its files in LEDGER itself; readers take them as one more
lane, named ".". Every checkpoint and signed head written in a ledger with lanes lists, in its
`lanes` field, the lanes there when it was signed, so a lane deleted whole is missed by name
(the field is absent, and the bytes signed as before lanes, in a ledger without lanes). Every
function here takes one lane's directory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from scalple.errors import LedgerError

_SEGMENT_RE: Final = re.compile(r"^(\d{20})-(\d{20})\.parquet$")
_JOURNAL_RE: Final = re.compile(r"^(\d{20})\.(jsonl|heads)$")
QUARANTINE: Final = "quarantine"
REASON: Final = "REASON"


@dataclass(frozen=True)
class SegmentFiles:
    first_seq: int
    last_seq: int
    parquet: Path

    @property
    def checkpoint(self) -> Path:
        return self.parquet.with_suffix(".checkpoint")


class Layout:
    """Paths inside one ledger directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.journal_dir = self.root / "journal"
        self.segment_dir = self.root / "segments"
        self.key_dir = self.root / "keys"
        self.lock = self.root / "LOCK"
        self.quarantine_dir = self.root / QUARANTINE
        self.verified = self.root / "verified.json"

    def create(self) -> None:
        for d in (self.journal_dir, self.segment_dir, self.key_dir):
            d.mkdir(parents=True, exist_ok=True)

    def journal(self, first_seq: int) -> Path:
        return self.journal_dir / f"{first_seq:020d}.jsonl"

    def segment(self, first_seq: int, last_seq: int) -> SegmentFiles:
        return SegmentFiles(
            first_seq, last_seq, self.segment_dir / f"{first_seq:020d}-{last_seq:020d}.parquet"
        )

    def heads(self, first_seq: int) -> Path:
        """The signed heads of the journal starting at `first_seq`."""
        return self.journal_dir / f"{first_seq:020d}.heads"

    def journals(self) -> list[tuple[int, Path]]:
        """Journal files by first seq, oldest first."""
        return [(first, p) for first, p in self.journal_files() if p.suffix == ".jsonl"]

    def journal_files(self) -> list[tuple[int, Path]]:
        """Journals and heads logs by first seq (a journal before its heads log)."""
        found = [
            (int(m.group(1)), m.group(2) == "heads", p)
            for p in _list(self.journal_dir)
            if (m := _JOURNAL_RE.match(p.name))
        ]
        return [(first, p) for first, _, p in sorted(found)]

    def list_segments(self) -> SegmentListing:
        """The names in segments/ now, read once: what a reader works from."""
        return SegmentListing(self.segment_dir, frozenset(p.name for p in _list(self.segment_dir)))

    def segments(self) -> list[SegmentFiles]:
        """Segments by first seq, oldest first (a checkpoint file may be missing)."""
        return self.list_segments().segments()

    def sealed(self) -> list[SegmentFiles]:
        """Segments with their checkpoint, by first seq."""
        return self.list_segments().sealed()

    def superseded(self) -> list[SegmentFiles]:
        return self.list_segments().superseded()

    def segment_files(self) -> list[SegmentFiles]:
        return self.list_segments().files

    def replaced(self, seg: SegmentFiles) -> Path:
        """The side file of a merged segment: the checkpoints of the segments it replaces."""
        return seg.parquet.with_suffix(".replaced")

    def rotations(self) -> list[Path]:
        """Key rotation certificates: the ledger's, and for a lane those of its ledger too."""
        dirs = [self.key_dir]
        if self.root.parent.name == "lanes":  # scalple.ledger.lanes: LEDGER/lanes/<name>
            dirs.append(self.root.parent.parent / "keys")
        found = {p.name: p for d in reversed(dirs) for p in _list(d) if p.suffix == ".rotation"}
        return [found[name] for name in sorted(found)]


class SegmentListing:
    """One reading of segments/: segment files and which have their checkpoint, as named then.

    Judging everything from one reading (never asking the directory again midway) is what lets
    a reader beside a sealing or compacting writer see one consistent state.
    """

    def __init__(self, directory: Path, names: frozenset[str]) -> None:
        self.names = names
        found = sorted(
            (int(m.group(1)), -int(m.group(2)), name)
            for name in names
            if (m := _SEGMENT_RE.match(name))
        )
        self.files = [SegmentFiles(a, -b, directory / name) for a, b, name in found]

    def signed(self, seg: SegmentFiles) -> bool:
        return seg.checkpoint.name in self.names

    def segments(self) -> list[SegmentFiles]:
        """Where compaction left a merged segment beside the segments it merges, one side is
        listed: the merged one once its checkpoint exists, the originals until then."""
        return self._one_side()[0]

    def sealed(self) -> list[SegmentFiles]:
        return [s for s in self.segments() if self.signed(s)]

    def superseded(self) -> list[SegmentFiles]:
        """Segment files `segments` leaves out: merged ones not yet signed, or originals a
        signed merged segment replaces (both left by a compaction that stopped midway)."""
        return self._one_side()[1]

    def orphans(self) -> list[str]:
        """Checkpoints whose segment file is not here."""
        return sorted(
            n
            for n in self.names
            if n.endswith(".checkpoint") and n[: -len(".checkpoint")] + ".parquet" not in self.names
        )

    def _one_side(self) -> tuple[list[SegmentFiles], list[SegmentFiles]]:
        files = self.files
        listed: list[SegmentFiles] = []
        left_out: list[SegmentFiles] = []
        for i, seg in enumerate(files):
            if listed and seg.first_seq <= listed[-1].last_seq:
                left_out.append(seg)  # inside a signed merged segment listed already
                continue
            nxt = files[i + 1] if i + 1 < len(files) else None
            merged = nxt is not None and nxt.first_seq <= seg.last_seq
            if merged and not self.signed(seg):
                left_out.append(seg)  # a merge not yet signed: its originals are still the ledger
                continue
            listed.append(seg)
        return listed, left_out


def fsync_path(path: Path) -> None:
    """fsync a file or directory by name (a directory, so a new name in it survives a crash)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes, mode: int, *, create_mode: int = 0o600) -> None:
    """Write `path` whole or not at all: a temp file created `create_mode` (never briefly
    readable by others), set to `mode`, fsynced, then renamed over `path`."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, create_mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _list(directory: Path) -> list[Path]:
    try:
        return list(directory.iterdir())
    except FileNotFoundError:
        return []


@contextmanager
def os_errors(doing: str) -> Iterator[None]:
    """Report a file system failure while `doing` something as a LedgerError naming the file."""
    try:
        yield
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        raise LedgerError(f"{doing}: cannot use{where}: {exc.strerror or exc}") from exc
