"""A reader's view of one ledger directory that a writer keeps appending to, sealing and compacting.

The writer moves an event only forward: into the live journal, then (sealing) into a segment
whose checkpoint exists before the journal is removed; compaction commits a merged segment's
checkpoint before it removes the originals. So a reader that takes, in this order,

1. the heads logs' contents (every head in them vouches only for records already written),
2. an open handle on every journal (a sealed journal's records stay readable through it),
3. one listing of segments/ (every journal gone by now is sealed, so listed here),

sees every event at least once, and reading a journal later through its handle only adds
records. Everything is judged from these readings, never by asking the directory again midway;
`moved` says whether it changed meanwhile, so a reader can look again before it calls something
missing. A file that vanishes before it is opened (a compaction removing originals) is left to
the reader: it looks again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from scalple.ledger.layout import Layout, SegmentListing


@dataclass
class JournalEntry:
    first_seq: int
    path: Path
    heads_path: Path
    file: BinaryIO | None  # None: the journal was not there when looked for
    heads: bytes | None  # the heads log as read; None when there was none

    def read(self) -> bytes:
        assert self.file is not None
        return self.file.read()


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


class Snapshot:
    """The heads, journals and segment names of a ledger directory, taken as the module says."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        listed = layout.journal_files()
        self.journal_names = frozenset(p.name for _, p in listed)
        self.journals = [self._open(first) for first in sorted({f for f, _ in listed})]
        self.listing: SegmentListing = layout.list_segments()

    def _open(self, first: int) -> JournalEntry:
        heads_path = self.layout.heads(first)
        heads = _read(heads_path)  # before the journal: see the module docstring
        path = self.layout.journal(first)
        try:
            file: BinaryIO | None = path.open("rb")
        except FileNotFoundError:
            file = None
        return JournalEntry(first, path, heads_path, file, heads)

    def moved(self) -> bool:
        """Whether the journal or segment directory lists other names now than when taken."""
        now = frozenset(p.name for _, p in self.layout.journal_files())
        return now != self.journal_names or self.layout.list_segments().names != self.listing.names

    def close(self) -> None:
        for entry in self.journals:
            if entry.file is not None:
                entry.file.close()

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
