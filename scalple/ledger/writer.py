"""The ledger's `AuditSink`: chains events as they arrive and group-commits them to the journal.

Callers stage events (seq, prev_hash, hash, canonical line) under a lock, so the chain order is
the order of arrival. One writer thread takes everything staged so far and writes it with one
write() (and one fsync in "fsync" mode); every write_ahead waiting on that batch then returns.
A sealer thread turns full journals into signed segments off the hot path.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scalple.errors import LedgerError, LedgerUnavailable
from scalple.events import AuditEvent
from scalple.ledger.canonical import chain
from scalple.ledger.keys import SigningKey, key_id
from scalple.ledger.layout import Layout
from scalple.ledger.recovery import Pending, State, recover, system_event
from scalple.ledger.seal import Sealed, seal

log = logging.getLogger("scalple.ledger")

# A waiter is a future on some event loop, or (loop None) a plain callback for threads.
Waiter = tuple[asyncio.AbstractEventLoop | None, Any]


def _lock(layout: Layout) -> int:
    fd = os.open(layout.lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LedgerError(f"ledger {layout.root} is in use by another process") from None
    return fd


def _open_journal(path: Path, durable: bool) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    if durable:  # the new name must survive a power cut too
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class _Sealer(threading.Thread):
    """Seals closed journals strictly in order; each checkpoint links to the one before."""

    def __init__(self, layout: Layout, key: SigningKey, previous: Sealed | None) -> None:
        super().__init__(name="scalple-sealer", daemon=True)
        self.layout, self.key, self.previous = layout, key, previous
        self.jobs: queue.Queue[Pending | None] = queue.Queue()
        self.failed: BaseException | None = None

    def run(self) -> None:
        while (job := self.jobs.get()) is not None:
            if self.failed is not None:
                continue  # keep order: nothing seals after a failed seal until restart
            try:
                if job.count == 0:
                    job.path.unlink()
                else:
                    self.previous = seal(self.layout, job, self.previous, self.key)
            except Exception as exc:
                self.failed = exc
                log.error("sealing %s failed: %s; it stays in the journal", job.path.name, exc)


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
        self._sealer = _Sealer(self.layout, key, self._previous(state))
        for job in state.to_seal:
            self._sealer.jobs.put(job)
        self._sealer.start()
        self._writer = threading.Thread(target=self._run, name="scalple-journal", daemon=True)
        self._writer.start()
        self._note_key(state, key)
        for event in state.events:
            self.record(event)

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
        self._cond = threading.Condition()
        self._staged: list[bytes] = []
        self._waiters: list[Waiter] = []
        self._seq, self._last_hash = state.next_seq, state.last_hash
        self._failed: BaseException | None = None
        self._closing = False
        self._lost = 0
        live = state.live or Pending(
            self.layout.journal(state.next_seq), state.next_seq, 0, state.last_hash, state.last_hash
        )
        self._live = live
        self._fd = _open_journal(live.path, self._durable)
        self._size = os.fstat(self._fd).st_size
        self._opened = time.monotonic()

    # -- staging: any thread, under the condition's lock -------------------------------------

    def _stage(self, events: Sequence[AuditEvent]) -> None:
        seq, last = self._seq, self._last_hash
        staged = self._staged
        for event in events:
            line, last = chain(event, seq, last)
            staged.append(line)
            seq += 1
        self._seq, self._last_hash = seq, last

    def append(self, events: Sequence[AuditEvent], waiter: Waiter | None = None) -> None:
        """Stage `events`; `waiter` is settled from the writer thread once they are written."""
        with self._cond:
            if self._failed is not None or self._closing:
                raise LedgerUnavailable(self._why())
            self._stage(events)
            if waiter is not None:
                self._waiters.append(waiter)
            self._cond.notify()

    def append_sync(self, events: Sequence[AuditEvent]) -> None:
        """`append` and wait until written, for callers outside an event loop."""
        done = threading.Event()
        errors: list[BaseException | None] = []

        def settle(error: BaseException | None) -> None:
            errors.append(error)
            done.set()

        self.append(events, (None, settle))
        done.wait()
        if errors[0] is not None:
            raise errors[0]

    def _why(self) -> str:
        if self._closing:
            return "the audit ledger is closed"
        return f"the audit journal cannot be written: {self._failed}"

    async def write_ahead(self, events: Sequence[AuditEvent]) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self.append(events, (loop, future))
        await future

    def record(self, event: AuditEvent) -> None:
        try:
            self.append((event,))
        except LedgerUnavailable as exc:
            if not self._lost:  # once: a broken ledger would otherwise log every statement
                log.error("audit events are being lost: %s", exc)
            self._lost += 1

    # -- the writer thread --------------------------------------------------------------------

    def _take(self) -> tuple[list[bytes], list[Waiter], bool]:
        with self._cond:
            while not self._staged and not self._closing:
                if not self._cond.wait(timeout=self._age_left()):
                    break
            staged, waiters = self._staged, self._waiters
            self._staged, self._waiters = [], []
            return staged, waiters, self._closing

    def _age_left(self) -> float:
        return max(0.05, self._seal_seconds - (time.monotonic() - self._opened))

    def _run(self) -> None:
        while True:
            staged, waiters, closing = self._take()
            if staged and self._failed is None:
                self._commit(staged, waiters)
            else:
                _notify(waiters, LedgerUnavailable(self._why()))
            if closing and not staged:
                return
            if self._failed is None and self._due():
                self._rotate()

    def _commit(self, staged: list[bytes], waiters: list[Waiter]) -> None:
        data = b"".join(staged)
        error: BaseException | None = None
        try:
            _write_all(self._fd, data)
            if self._durable:
                os.fdatasync(self._fd)
        except OSError as exc:
            # Fail closed: later events were chained to these, so nothing more may be written.
            with self._cond:
                self._failed = exc
            error = LedgerUnavailable(f"the audit journal cannot be written: {exc}")
            log.error("audit journal write failed: %s; refusing statements from now on", exc)
        else:
            self._size += len(data)
            self._live.count += len(staged)
            self._live.last_hash = staged[-1][-67:-3].decode()
        _notify(waiters, error)

    def _due(self) -> bool:
        if self._live.count == 0:
            return False
        age = time.monotonic() - self._opened
        return self._size >= self._seal_bytes or age >= self._seal_seconds

    def _rotate(self) -> None:
        """Close the live journal, hand it to the sealer, and start the next one."""
        os.close(self._fd)
        self._sealer.jobs.put(self._live)
        first = self._live.first_seq + self._live.count
        last = self._live.last_hash
        self._live = Pending(self.layout.journal(first), first, 0, last, last)
        self._fd = _open_journal(self._live.path, self._durable)
        self._size, self._opened = 0, time.monotonic()

    # -- closing ------------------------------------------------------------------------------

    def close(self, *, seal: bool = True) -> None:
        """Write what is staged, seal the journal (unless `seal` is false: the next start
        continues it), wait for sealing to finish, and release the ledger. Blocking."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._cond.notify()
        self._writer.join()
        os.close(self._fd)
        if self._failed is None and seal:
            self._sealer.jobs.put(self._live)
        self._sealer.jobs.put(None)
        self._sealer.join()
        os.close(self._lock_fd)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    @property
    def seal_error(self) -> BaseException | None:
        """Why sealing stopped, if it did (the journal then keeps growing until restart)."""
        return self._sealer.failed


def _notify(waiters: list[Waiter], error: BaseException | None) -> None:
    # One wake-up per event loop per batch, not one per waiter.
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for loop, target in waiters:
        if loop is None:
            target(error)
        else:
            by_loop.setdefault(loop, []).append(target)
    for loop, futures in by_loop.items():
        # A closed loop has nobody waiting any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, futures, error)


def _settle(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
