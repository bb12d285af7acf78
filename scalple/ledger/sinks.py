"""Opening the ledger for writing, from the [ledger] settings."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from scalple.ledger.derived import Derived
from scalple.ledger.keys import resolve_key_dir, signing_key, subject_secret
from scalple.ledger.layout import os_errors
from scalple.ledger.writer import LedgerSink

if TYPE_CHECKING:
    from scalple.config import Config

SINK_SETTINGS = ("key_dir", "seal_bytes", "seal_seconds", "head_seconds")
_TIMING = ("seal_bytes", "seal_seconds", "head_seconds")


def open_sink(
    directory: Path, durability: str = "fsync", *, derived: bool = True, **settings: Any
) -> LedgerSink:
    """Open (creating if needed, recovering after a crash) the ledger at `directory`.

    `durability` is "fsync" or "os"; `settings` are the other [ledger] settings by name
    (`ledger_settings(config)` gives them). The signing key is created on first use. Blocks
    while recovering; close with `await sink.aclose()`, which seals the journal. Unless
    `derived` is false, each sealed segment is noted as verified and indexed as it is sealed.
    """
    timing = {k: settings[k] for k in _TIMING if settings.get(k) is not None}
    with os_errors(f"opening ledger {directory}"):
        key_dir = resolve_key_dir(settings.get("key_dir"))
        key = signing_key(key_dir)
        keep = Derived(Path(directory), subject_secret(key_dir)) if derived else None
        return LedgerSink(Path(directory), key, durability=durability, derived=keep, **timing)


def ledger_settings(config: Config) -> dict[str, Any]:
    """The [ledger] settings `open_sink` takes, from effective config."""
    return {name: config[name] for name in SINK_SETTINGS}
