"""The tamper-evident ledger: where audit events are chained, persisted, sealed and read back.

Readers (verify, dsar, index) import the modules they need; the writer's side (`open_sink`,
threads, sealing with DuckDB) loads only when asked for by name here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scalple.ledger.sink import AuditSink
    from scalple.ledger.sinks import ledger_settings, open_sink
    from scalple.ledger.writer import LedgerSink

_WHERE = {
    "AuditSink": "scalple.ledger.sink",
    "LedgerSink": "scalple.ledger.writer",
    "ledger_settings": "scalple.ledger.sinks",
    "open_sink": "scalple.ledger.sinks",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(name)
    return getattr(importlib.import_module(_WHERE[name]), name)


__all__ = ["AuditSink", "LedgerSink", "ledger_settings", "open_sink"]
