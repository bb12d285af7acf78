"""The ledger's helper threads: the syncer (one fdatasync for many waiters), the sealer, the timer.

They keep slow work off the event loop: an fdatasync, a DuckDB seal, the wait for a journal to
age. Waiters are futures on an event loop, or callbacks when the caller has no loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from scalple.ledger.keys import SigningKey
from scalple.ledger.layout import Layout
from scalple.ledger.recovery import Pending
from scalple.ledger.seal import Sealed, seal

log = logging.getLogger("scalple.ledger")

# A future or a callback (taking the error or None) run on some event loop, or (loop None) a
# callback run on whichever thread settles it.
Waiter = tuple[asyncio.AbstractEventLoop | None, Any]


def notify(waiters: list[Waiter], error: BaseException | None) -> None:
    """Settle `waiters`: directly on the current loop, one wake-up per other loop."""
    try:
        current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        current = None
    by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
    for loop, target in waiters:
        if loop is None:
            target(error)
        elif loop is current:
            settle([target], error)
        else:
            by_loop.setdefault(loop, []).append(target)
    for loop, futures in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop has nobody waiting any more
            loop.call_soon_threadsafe(settle, futures, error)


def settle(targets: list[Any], error: BaseException | None) -> None:
    """Settle futures, or call callbacks, with `error` (None when durable)."""
    for target in targets:
        if not isinstance(target, asyncio.Future):
            target(error)
        elif target.done():
            continue
        elif error is None:
            target.set_result(None)
        else:
            target.set_exception(error)


class Syncer(threading.Thread):
    """Runs fdatasync for every waiter whose bytes were written before it started."""

    def __init__(self, sync: Callable[[], BaseException | None]) -> None:
        super().__init__(name="scalple-fsync", daemon=True)
        self._sync = sync
        self._cond = threading.Condition()
        self._waiters: list[Waiter] = []
        self._stopping = False

    def add(self, waiters: list[Waiter]) -> None:
        with self._cond:
            self._waiters.extend(waiters)
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self.join()

    def run(self) -> None:
        while True:
            with self._cond:
                while not self._waiters and not self._stopping:
                    self._cond.wait()
                waiters, self._waiters = self._waiters, []
                if not waiters and self._stopping:
                    return
            notify(waiters, self._sync())


class Timer(threading.Thread):
    """Calls `tick` every `interval` seconds until stopped: journals age while idle too."""

    def __init__(self, interval: float, tick: Callable[[], None]) -> None:
        super().__init__(name="scalple-ledger-timer", daemon=True)
        self._interval, self._tick = interval, tick
        self._stopped = threading.Event()

    def stop(self) -> None:
        self._stopped.set()
        self.join()

    def run(self) -> None:
        while not self._stopped.wait(self._interval):
            self._tick()


class Sealer(threading.Thread):
    """Seals closed journals strictly in order; each checkpoint links to the one before."""

    def __init__(self, layout: Layout, key: SigningKey, previous: Sealed | None) -> None:
        super().__init__(name="scalple-sealer", daemon=True)
        self.layout, self.key, self.previous = layout, key, previous
        self.jobs: queue.Queue[Pending | None] = queue.Queue()
        self.failed: BaseException | None = None

    def stop(self) -> None:
        self.jobs.put(None)
        self.join()

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
                # The journal stays where it is; the next start seals it.
                self.failed = exc
                log.error("sealing %s failed: %s; it stays in the journal", job.path.name, exc)
