"""One ledger hand-off per event-loop pass: every connection's events of that pass, together.

Handing each statement to the ledger's writer thread on its own costs a lock, a thread wake-up
and a loop wake-up per statement; gathering them costs one of each per pass, whatever the load.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from scalple.events import AuditEvent
from scalple.ledger.sink import AuditSink

log = logging.getLogger("scalple.proxy")
Done = Callable[[BaseException | None], None]


class LedgerBatcher:
    """Write-ahead events with their continuations, and outcomes, batched per loop pass."""

    def __init__(
        self,
        sink: AuditSink,
        loop: asyncio.AbstractEventLoop,
        observe: Callable[[float], None] | None = None,
    ) -> None:
        self._sink = sink
        self._observe = observe
        self._loop = loop
        self._events: list[AuditEvent] = []
        self._done: list[Done] = []
        self._scheduled = False
        self._inflight: set[asyncio.Future[None]] = set()
        self._lost = False

    def write_ahead(self, events: Sequence[AuditEvent], done: Done) -> None:
        """`done(None)` once `events` are durable, or `done(error)` if they cannot be."""
        self._events.extend(events)
        self._done.append(done)
        self._schedule()

    def record(self, events: Sequence[AuditEvent]) -> None:
        """Outcomes: written with the next batch; nothing waits for them."""
        if events:
            self._events.extend(events)
            self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        events, done = self._events, self._done
        self._events, self._done = [], []
        if not events:
            return
        waiting = self._loop.create_task(self._sink.write_ahead(events))
        self._inflight.add(waiting)
        started = self._loop.time()
        waiting.add_done_callback(lambda f: self._settle(f, done, started))

    def _settle(self, waiting: asyncio.Future[None], done: list[Done], started: float) -> None:
        self._inflight.discard(waiting)
        if self._observe is not None:
            self._observe(self._loop.time() - started)
        error = None if waiting.cancelled() else waiting.exception()
        if error is not None and not done and not self._lost:
            self._lost = True  # said once: a broken ledger would say it for every outcome
            log.error("audit outcomes could not be written: %s", error)
        for callback in done:
            try:
                callback(error)
            except Exception:  # one connection's failure must not stall the others
                log.exception("write-ahead continuation failed")

    async def drain(self) -> None:
        """Wait until everything handed over so far is written (or has failed)."""
        if self._scheduled:
            self._flush()
        while self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
