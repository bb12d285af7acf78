"""Ledger lanes: one ledger written by several writers, each appending to its own lane.

A lane is a complete ledger directory (journal, chain from seq 1, segments, checkpoints, signed
heads, its own LOCK) at LEDGER/lanes/<name>/; names are `<host>-w<worker>`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from scalple.errors import LedgerError

LANES: Final = "lanes"
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
