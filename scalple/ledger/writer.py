"""The ledger's `AuditSink`: chains events as they arrive and group-commits them to the journal.

Events are staged (seq, prev_hash, hash, canonical line) under one lock, so the chain order is
the order of arrival. On an event loop, the first append of a loop iteration schedules one
flush for the next: everything staged meanwhile goes out in one write(). In "os" mode waiters
return after that write; in "fsync" mode the syncer thread's next fdatasync releases them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from scalple.errors import LedgerError, LedgerUnavailable
from scalple.events import AuditEvent
from scalple.ledger.canonical import chain_into
from scalple.ledger.keys import SigningKey, key_id
from scalple.ledger.layout import Layout, fsync_path
from scalple.ledger.recovery import Pending, State, recover, system_event
from scalple.ledger.seal import Sealed
from scalple.ledger.threads import Sealer, Syncer, Timer, Waiter, notify

log = logging.getLogger("scalple.ledger")


def _lock(layout: Layout) -> int:
    fd = os.open(layout.lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LedgerError(f"ledger {layout.root} is in use by another process") from None
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class LedgerSink:
    """An open ledger: `write_ahead`, `record`, `aclose` as `AuditSink` promises."""

    def __init__(
        self,
        root: Path,
        key: SigningKey,
        *,
        durability: str = "fsync",
        seal_bytes: int = 64 << 20,
        seal_seconds: float = 3600.0,
    ) -> None:
        if durability not in ("fsync", "os"):
            raise LedgerError(f"durability must be fsync or os, not {durability!r}")
        self.layout = Layout(root)
        self.layout.create()
        self._lock_fd = _lock(self.layout)
        try:
            state = recover(self.layout)
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._durable = durability == "fsync"
        self._seal_bytes, self._seal_seconds = seal_bytes, seal_seconds
        self._init_chain(state)
        self._sealer = Sealer(self.layout, key, self._previous(state))
        for job in state.to_seal:
            self._sealer.jobs.put(job)
        self._sealer.start()
        self._syncer = Syncer(self._sync)
        self._syncer.start()
        self._timer = Timer(min(1.0, max(0.01, seal_seconds / 4)), self._maybe_rotate)
        self._timer.start()
        self._note_key(state, key)
        if state.events:
            self.append(state.events)
            self._flush()

    def _note_key(self, state: State, key: SigningKey) -> None:
        if state.checkpoint is None or state.checkpoint.public_key == key.public:
            return
        state.events.append(
            system_event(
                f"ledger.key: checkpoints are now signed by key {key.id} (public {key.public}); "
                f"before by {key_id(state.checkpoint.public_key)}"
            )
        )

    @staticmethod
    def _previous(state: State) -> Sealed | None:
        if state.checkpoint is None:
            return None
        return Sealed(state.checkpoint, state.checkpoint_digest)

    def _init_chain(self, state: State) -> None:
        self._lock = threading.Lock()  # staging, writing and rotating the journal
        self._fd_lock = threading.Lock()  # an fdatasync and the close of its descriptor
        self._staged: list[bytes] = []
        self._waiters: list[Waiter] = []
        self._scheduled: set[asyncio.AbstractEventLoop] = set()
        self._seq, self._last_hash = state.next_seq, state.last_hash
        self._failed: BaseException | None = None
        self._closing = False
        self._lost = 0
        self.writes = 0  # write() calls and fdatasync() calls so far: group commit at work
        self.syncs = 0
        last = state.last_hash
        self._live = state.live or Pending(
            self.layout.journal(state.next_seq), state.next_seq, 0, last, last
        )
        self._open_live()

    def _open_live(self) -> None:
        path = self._live.path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        if self._durable:
            fsync_path(path.parent)  # the new name must survive a power cut too
        self._size = os.fstat(self._fd).st_size
        self._opened = time.monotonic()

    # -- appending ----------------------------------------------------------------------------

    def append(self, events: Sequence[AuditEvent], waiter: Waiter | None = None) -> None:
        """Stage `events` for the next flush; `waiter` is settled once they are durable."""
        with self._lock:
            if self._failed is not None or self._closing:
                raise LedgerUnavailable(self._why())
            seq, last, lines = self._seq, self._last_hash, list[bytes]()
            for event in events:
                last = chain_into(lines, event, seq, last)
                seq += 1
            # Only now: an event that failed to encode must not leave a hole in the chain.
            self._staged += lines
            self._seq, self._last_hash = seq, last
            if waiter is not None:
                self._waiters.append(waiter)

    def _schedule(self, loop: asyncio.AbstractEventLoop | None) -> None:
        if loop is None:
            self._flush()
        elif loop not in self._scheduled:
            self._scheduled.add(loop)
            loop.call_soon(self._flush_soon, loop)

    def _flush_soon(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled.discard(loop)
        self._flush()

    def submit(
        self,
        events: Sequence[AuditEvent],
        done: Callable[[BaseException | None], None] | None = None,
    ) -> None:
        """Stage `events`; `done(error)` runs on this event loop once they are durable (error
        None) or cannot be. Without a task or future: the proxy's hot path."""
        loop = asyncio.get_running_loop()
        try:
            self.append(events, (loop, done) if done is not None else None)
        except LedgerUnavailable as exc:
            if done is None:
                self._lose(exc)
                return
            done(exc)
            return
        self._schedule(loop)

    async def write_ahead(self, events: Sequence[AuditEvent]) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self.append(events, (loop, future))
        self._schedule(loop)
        await future

    def record(self, event: AuditEvent) -> None:
        try:
            self.append((event,))
        except LedgerUnavailable as exc:
            self._lose(exc)
            return
        self._schedule(_running_loop())

    def _lose(self, exc: LedgerUnavailable) -> None:
        if not self._lost:  # once: a broken ledger would otherwise log every statement
            log.error("audit events are being lost: %s", exc)
        self._lost += 1

    def append_sync(self, events: Sequence[AuditEvent]) -> None:
        """Append and return once durable, for callers without an event loop."""
        done = threading.Event()
        errors: list[BaseException | None] = []

        def settled(error: BaseException | None) -> None:
            errors.append(error)
            done.set()

        self.append(events, (None, settled))
        self._flush()
        done.wait()
        if errors[0] is not None:
            raise errors[0]

    # -- writing ------------------------------------------------------------------------------

    def _flush(self) -> None:
        """Write everything staged with one write(); release or hand on its waiters."""
        with self._lock:
            staged, waiters = self._staged, self._waiters
            self._staged, self._waiters = [], []
            error = self._write(staged) if staged else None
            if error is None and self._due():
                self._rotate_or_fail()
        if error is not None or not self._durable:
            notify(waiters, error)
        elif waiters:
            self._syncer.add(waiters)

    def _write(self, staged: list[bytes]) -> BaseException | None:
        if self._failed is not None:
            return LedgerUnavailable(self._why())
        data = b"".join(staged)
        try:
            _write_all(self._fd, data)
        except OSError as exc:
            # Fail closed: later events were chained to these, so nothing more may be written.
            self._failed = exc
            log.error("audit journal write failed: %s; refusing statements from now on", exc)
            return LedgerUnavailable(self._why())
        self._size += len(data)
        self.writes += 1
        self._live.count = self._seq - self._live.first_seq  # all staged is written now
        self._live.last_hash = self._last_hash
        return None

    def _sync(self) -> BaseException | None:
        with self._fd_lock:
            try:
                os.fdatasync(self._fd)
                self.syncs += 1
            except OSError as exc:
                self._failed = exc
                log.error("audit journal fsync failed: %s; refusing statements from now on", exc)
                return LedgerUnavailable(self._why())
        return None

    def _why(self) -> str:
        if self._failed is not None:
            return f"the audit journal cannot be written: {self._failed}"
        return "the audit ledger is closed"

    # -- rotating and sealing -----------------------------------------------------------------

    def _due(self) -> bool:
        if self._live.count == 0:
            return False
        age = time.monotonic() - self._opened
        return self._size >= self._seal_bytes or age >= self._seal_seconds

    def _maybe_rotate(self) -> None:
        with self._lock:
            if self._failed is None and not self._closing and self._due():
                self._rotate_or_fail()

    def _rotate_or_fail(self) -> None:
        try:
            self._rotate()
        except OSError as exc:
            # What was written stays good; with no journal to write next, refuse from now on.
            self._failed = exc
            log.error("cannot start a new audit journal: %s; refusing statements from now on", exc)

    def _rotate(self) -> None:
        """Close the live journal (lock held), hand it to the sealer, start the next one."""
        with self._fd_lock:
            if self._durable:
                os.fdatasync(self._fd)  # the sealer reads it; waiters may still be syncing
            os.close(self._fd)
        self._sealer.jobs.put(self._live)
        first = self._live.first_seq + self._live.count
        last = self._live.last_hash
        self._live = Pending(self.layout.journal(first), first, 0, last, last)
        self._open_live()

    # -- closing ------------------------------------------------------------------------------

    def close(self, *, seal: bool = True) -> None:
        """Write what is staged, seal the journal (unless `seal` is false: the next start
        continues it), wait for sealing to finish, and release the ledger. Blocking."""
        self._flush()
        with self._lock:
            if self._closing:
                return
            self._closing = True
        self._timer.stop()
        self._syncer.stop()
        with self._fd_lock, contextlib.suppress(OSError):  # gone already if a rotation failed
            os.close(self._fd)
        if self._failed is None and seal:
            self._sealer.jobs.put(self._live)
        self._sealer.stop()
        os.close(self._lock_fd)

    async def aclose(self) -> None:
        self._flush()
        await asyncio.to_thread(self.close)

    @property
    def seal_error(self) -> BaseException | None:
        """Why sealing stopped, if it did (the journal then keeps growing until restart)."""
        return self._sealer.failed
