"""The tamper-evident ledger: where audit events are chained, persisted, sealed and read back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scalple.ledger.sink import AuditSink


def open_sink(directory: Path, durability: str = "fsync", **settings: Any) -> AuditSink:
    """Open (creating if needed) the ledger at `directory` for appending; call from any thread.

    `durability` is "fsync" or "os". Extra `settings` are the [ledger] settings by name.
    Close with `await sink.aclose()`, which seals the journal.
    """
    from scalple.ledger.standin import JsonlSink

    return JsonlSink(Path(directory), fsync=durability == "fsync")


__all__ = ["AuditSink", "open_sink"]
