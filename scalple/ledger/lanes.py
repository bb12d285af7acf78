"""Ledger lanes: one ledger written by several writers, each appending to its own lane.

A lane is a complete ledger directory (journal, chain from seq 1, segments, checkpoints, signed
heads, its own LOCK) at LEDGER/lanes/<name>/; names are `<host>-w<worker>`. A ledger written
before lanes keeps its files in LEDGER itself: readers take it as one more lane, named ".".
Key rotations stay in LEDGER/keys, one set for every lane.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from scalple.errors import LedgerError

LANES: Final = "lanes"
ROOT: Final = "."
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9._-]+$")


def lane_name(host: str, worker: int) -> str:
    """The lane of worker `worker` on host `host`: `<host>-w<worker>` (e.g. `db1-w0`)."""
    host = re.sub(r"[^A-Za-z0-9._-]", "_", host) or "host"
    return check_lane_name(f"{host}-w{worker}")


def check_lane_name(name: str) -> str:
    if not _NAME_RE.match(name) or name in (".", ".."):
        raise LedgerError(f"lane name {name!r}: use letters, digits, '.', '_' and '-' only")
    return name


def lane_dir(ledger: Path, name: str) -> Path:
    """The directory of lane `name` in ledger `ledger`: LEDGER/lanes/<name>."""
    return Path(ledger) / LANES / check_lane_name(name)


@dataclass(frozen=True)
class Lane:
    name: str  # ROOT for the files directly in the ledger directory
    root: Path


def holds_ledger(directory: Path) -> bool:
    return (directory / "journal").is_dir() or (directory / "segments").is_dir()


def _lane_names(ledger: Path) -> list[str]:
    try:
        return sorted(p.name for p in (ledger / LANES).iterdir() if p.is_dir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def has_lanes(ledger: Path) -> bool:
    return (Path(ledger) / LANES).is_dir()


def ledger_lanes(ledger: Path) -> list[Lane]:
    """The lanes of `ledger`: the root lane first (when files are in LEDGER itself), then each
    directory under LEDGER/lanes by name. A ledger without lanes/ is its one root lane."""
    ledger = Path(ledger)
    found = [Lane(ROOT, ledger)] if holds_ledger(ledger) or not has_lanes(ledger) else []
    return found + [Lane(name, ledger / LANES / name) for name in _lane_names(ledger)]


def parent_ledger(root: Path) -> Path | None:
    """The ledger directory a lane directory belongs to; None for a ledger's own root."""
    root = Path(root)
    return root.parent.parent if root.parent.name == LANES else None


def lanes_beside(root: Path) -> tuple[str, ...] | None:
    """The lanes a writer at `root` lists in what it signs: every lane of its ledger now, so a
    lane later deleted whole is missed by name. Only lanes that hold a ledger already: a lane
    directory being created is named from the next signature on. None for a ledger without
    lanes (what it signs stays as before lanes)."""
    root = Path(root)
    ledger = parent_ledger(root)
    if ledger is None:
        if not has_lanes(root):
            return None
        ledger = root
    return tuple(lane.name for lane in ledger_lanes(ledger) if holds_ledger(lane.root))
