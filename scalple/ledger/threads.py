"""The ledger's helper threads: the sealer, timers, the mender (writes again after a failure)
and followers (one fdatasync for all written since the last; derived state after each seal).

They keep slow work off the event loop: an fdatasync, a DuckDB seal, a signed head, indexing,
the wait for a journal to age or a disk to have room again. Waiters are futures on an event
loop, or callbacks when the caller has no loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

from scalple.ledger.keys import SigningKey
from scalple.ledger.layout import Layout
from scalple.ledger.recovery import Pending
from scalple.ledger.seal import Sealed, seal

AfterSeal = Callable[[Sealed], None]

log = logging.getLogger("scalple.ledger")

# A future or a callback (taking the error or None) run on some event loop, or (loop None) a
# callback run on whichever thread settles it.
Waiter = tuple[asyncio.AbstractEventLoop | None, Any]


def notify(
    waiters: list[Waiter],
    error: BaseException | None,
    current: asyncio.AbstractEventLoop | bool | None = True,
) -> None:
    """Settle `waiters`: directly on the current loop, one wake-up per other loop. `current`
    is the loop running this thread when the caller knows it (None: none), to save asking:
    asyncio asks the OS for the pid each time."""
    if current is True:
        current = asyncio.events._get_running_loop()
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
    """Seals closed journals strictly in order; each checkpoint links to the one before. A seal
    that fails is tried again, waiting longer each time (the disk may be full for a while);
    nothing after it seals meanwhile. `after` hooks keep derived state current."""

    def __init__(
        self,
        layout: Layout,
        key: SigningKey,
        previous: Sealed | None,
        after: Sequence[AfterSeal] = (),
    ) -> None:
        super().__init__(name="scalple-sealer", daemon=True)
        self.layout, self.key, self.previous = layout, key, previous
        self.jobs: queue.Queue[Pending | None] = queue.Queue()
        self.failed: BaseException | None = None
        self._after = after
        self._giving_up = threading.Event()

    def stop(self) -> None:
        """Seal what is queued, then stop; a seal still failing is left for the next start."""
        self.jobs.put(None)
        self._giving_up.set()
        self.join()

    def run(self) -> None:
        while (job := self.jobs.get()) is not None:
            if not self._seal(job):
                return  # stopping: this journal and those after it stay until the next start

    def _seal(self, job: Pending) -> bool:
        delay = 0.1
        while True:
            try:
                if job.count == 0:
                    job.path.unlink()
                    self.layout.heads(job.first_seq).unlink(missing_ok=True)
                    return True
                self.previous = seal(self.layout, job, self.previous, self.key)
                break
            except Exception as exc:
                if self.failed is None:
                    log.error("sealing %s failed: %s; trying again", job.path.name, exc)
                self.failed = exc
                if self._giving_up.wait(delay):
                    log.error("sealing %s failed; the next start seals it", job.path.name)
                    return False
                delay = min(delay * 2, 5.0)
        if self.failed is not None:
            log.warning("sealed %s after failures", job.path.name)
        self.failed = None
        for hook in self._after:
            try:
                hook(self.previous)
            except Exception:
                log.exception("keeping derived state after sealing %s failed", job.path.name)
        return True


class Mender(threading.Thread):
    """After a failed write, calls `mend` until it returns True, waiting longer each time."""

    def __init__(self, mend: Callable[[], bool], first: float = 0.05, most: float = 2.0) -> None:
        super().__init__(name="scalple-mender", daemon=True)
        self._mend, self._first, self._most = mend, first, most
        self._wake = threading.Event()
        self._stopped = threading.Event()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        self.join()

    def run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            delay = self._first
            while not self._stopped.wait(delay):
                if self._mend():
                    break
                delay = min(delay * 2, self._most)
            if self._stopped.is_set():
                return


class Follower(threading.Thread):
    """Runs `work` after each `poke`, once at a time; pokes made meanwhile make one more run."""

    def __init__(self, name: str, work: Callable[[], None]) -> None:
        super().__init__(name=name, daemon=True)
        self._work = work
        self._poked = threading.Event()
        self._stopping = False

    def poke(self) -> None:
        self._poked.set()

    def stop(self) -> None:
        """Finish the run poked for (if any), then stop."""
        self._stopping = True
        self._poked.set()
        self.join()

    def run(self) -> None:
        while True:
            self._poked.wait()
            self._poked.clear()
            stopping = self._stopping  # read first: a stop during the work asks one more run
            try:
                self._work()
            except Exception:
                log.exception("%s failed; the derived state catches up later", self.name)
            if stopping:
                return
