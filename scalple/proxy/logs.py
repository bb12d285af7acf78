"""Log lines for people (text) or for machines (one JSON object per line)."""

from __future__ import annotations

import json
import logging
import sys
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from scalple.proxy.workers import WorkerRole

_TEXT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.worker is not None:
            entry["worker"] = self.worker
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(fmt: str = "text", level: str = "info", worker: WorkerRole | None = None) -> None:
    """Log to stderr; a worker's lines say which worker (all share the supervisor's stderr)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(worker.index if worker else None))
    else:
        tag = f"[{worker.name}] " if worker else ""
        handler.setFormatter(logging.Formatter(_TEXT.replace("%(name)s", tag + "%(name)s")))
    root = logging.getLogger("scalple")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
