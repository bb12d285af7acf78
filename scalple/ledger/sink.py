"""The narrow interface through which the proxy hands audit events to the ledger."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from scalple.events import AuditEvent


class AuditSink(Protocol):
    """Where the proxy writes events. Implementations chain, persist and group-commit them."""

    async def write_ahead(self, events: Sequence[AuditEvent]) -> None:
        """Return only once `events` are durable (per the durability mode).

        Raises `LedgerUnavailable` when they are not; the caller must then refuse the statements.
        """

    def submit(
        self,
        events: Sequence[AuditEvent],
        done: Callable[[BaseException | None], None] | None = None,
    ) -> None:
        """Stage `events` from the running event loop; `done(error)` runs on that loop once
        they are durable (error None) or cannot be (error a `LedgerUnavailable`)."""

    def record(self, event: AuditEvent) -> None:
        """Queue an outcome or system event for the next group commit without waiting for it."""

    async def aclose(self) -> None:
        """Flush what is queued and release the ledger."""
