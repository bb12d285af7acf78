"""The ledger's `AuditSink`: chains events as they arrive and group-commits them to the journal.

Events are staged (seq, prev_hash, hash, canonical line) under one lock, so the chain order is
the order of arrival. On an event loop, the first append of a loop iteration schedules one
flush for the next: everything staged meanwhile goes out in one write(). In "os" mode waiters
return after that write; in "fsync" mode the syncer thread's next fdatasync releases them all.
Every `head_seconds` a thread signs the journal's durable head (scalple.ledger.heads).

When a write or fdatasync fails (a full disk, no inode, an I/O error), every append not yet
durable is looked at again: one with a waiter is dropped, and its waiter told so (the proxy
refuses its statements and records them itself as refused: never twice, never lost); one
without (an outcome, a system event) is chained again from the last durable record and kept.
Until the mender thread has cut what the journal holds past that record, written what was
kept and made it durable (trying again with growing pauses), appends with a waiter are refused
at once and the others kept, up to `MAX_HELD_BYTES`. Then statements are accepted again and a
system event says what happened. A signed head never covers more than was durable, so nothing
it vouches for is ever taken back.
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
from typing import TYPE_CHECKING, Final

from scalple.errors import LedgerError, LedgerUnavailable
from scalple.events import AuditEvent
from scalple.ledger.canonical import chain_into
from scalple.ledger.heads import append_head, create_log, sign_head
from scalple.ledger.keys import SigningKey, key_id
from scalple.ledger.lanes import lanes_beside
from scalple.ledger.layout import Layout, fsync_path
from scalple.ledger.recovery import Pending, State, recover, system_event
from scalple.ledger.seal import Sealed
from scalple.ledger.threads import Follower, Mender, Sealer, Timer, Waiter, notify

if TYPE_CHECKING:
    from scalple.ledger.derived import Derived

log = logging.getLogger("scalple.ledger")

MAX_HELD_BYTES: Final = 64 << 20  # kept in memory while the journal cannot be written
OUTCOME_DELAY: Final = 0.002  # seconds an outcome may wait for a write-ahead to write with


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
        head_seconds: float = 2.0,
        derived: Derived | None = None,
    ) -> None:
        if durability not in ("fsync", "os"):
            raise LedgerError(f"durability must be fsync or os, not {durability!r}")
        self.layout = Layout(root)
        self.layout.create()
        self._lock_fd = _lock(self.layout)
        try:
            state = recover(self.layout, key.public)
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._key = key
        self._durable = durability == "fsync"
        self._seal_bytes, self._seal_seconds = seal_bytes, seal_seconds
        self._init_chain(state)
        self._derived = derived
        hooks = (derived.sealed,) if derived is not None else ()
        self._sealer = Sealer(self.layout, key, self._previous(state), hooks)
        for job in state.to_seal:
            self._sealer.jobs.put(job)
        self._sealer.start()
        if derived is not None:
            derived.start()  # catches up on segments sealed before, off the event loop
        self._syncer = Follower("scalple-fsync", self._sync)
        self._syncer.start()
        self._mender = Mender(self._mend)
        self._mender.start()
        self._timer = Timer(min(1.0, max(0.01, seal_seconds / 4)), self._maybe_rotate)
        self._timer.start()
        self._header = Timer(max(0.01, head_seconds), self.sign_head)
        self._header.start()
        self._note_key(state, key)
        if state.events:  # kept for the mender if the disk is full already
            self.append(state.events)
            self._flush()
        self.sign_head()  # what start-up kept is vouched for from the first moment

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
        self._fd_lock = threading.Lock()  # the descriptor: an fdatasync, a swap, a rewrite
        self._staged: list[bytes] = []
        self._scheduled: set[asyncio.AbstractEventLoop] = set()
        self._later: set[asyncio.AbstractEventLoop] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._seq, self._last_hash = state.next_seq, state.last_hash
        # Appends not yet durable, in chain order, with their waiter (the first `_written` are
        # in the file): what a failure looks at again. Waiters are settled from here only,
        # outside the lock (`_release`): a callback may append again.
        self._unsure: list[tuple[Sequence[AuditEvent], Waiter | None]] = []
        self._written = 0
        self._settle: list[tuple[list[Waiter], BaseException | None]] = []
        self._failed: BaseException | None = None
        self._failures = 0  # failures so far: a sync started before one settles nothing
        self._failed_at = 0.0
        self._held = 0  # bytes staged while failed
        self._refused = 0  # appends with a waiter dropped or refused while failed
        self._closing = False
        self._lost = 0
        self._gen = 0  # changes when the descriptor changes or its file is rewritten
        self._last_head: tuple[str, int] = ("", 0)
        self.writes = 0  # write() calls and fdatasync() calls so far: group commit at work
        self.syncs = 0
        last = state.last_hash
        self._live = state.live or Pending(
            self.layout.journal(state.next_seq), state.next_seq, 0, last, last
        )
        self._fd = -1
        self._size = 0
        self._durable_at = (0, self._live.count, self._live.last_hash)
        self._open_live()

    def _open_live(self) -> None:
        """Open (creating) the live journal and its heads log; lock held or not yet shared."""
        path = self._live.path
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            create_log(self.layout.heads(self._live.first_seq))  # after its journal: see heads
            if self._durable:
                fsync_path(path.parent)  # the new names must survive a power cut too
            size = os.fstat(fd).st_size
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._size = size  # recovery left it whole
        self._durable_at = (size, self._live.count, self._live.last_hash)
        self._opened = time.monotonic()

    # -- appending ----------------------------------------------------------------------------

    def append(self, events: Sequence[AuditEvent], waiter: Waiter | None = None) -> None:
        """Stage `events` for the next flush; `waiter` is settled once they are durable, or
        with an error once they never will be.

        While writes fail, events with a waiter are refused at once (LedgerUnavailable, nothing
        chained: the caller refuses what they describe); others are chained and kept."""
        with self._lock:
            if self._closing:
                raise LedgerUnavailable("the audit ledger is closed")
            failed = self._failed is not None
            if failed and (waiter is not None or self._held >= MAX_HELD_BYTES):
                self._refused += waiter is not None
                self._lost += waiter is None
                if self._lost == 1 and waiter is None:
                    log.error("audit events are being lost: %s", self._why())
                raise LedgerUnavailable(self._why())
            # Chained here, not through `_chain`: the hot path, one call fewer per statement.
            seq, last, lines = self._seq, self._last_hash, list[bytes]()
            for event in events:
                last = chain_into(lines, event, seq, last)
                seq += 1
            self._staged += lines  # only now: an event failing to encode leaves no hole
            self._seq, self._last_hash = seq, last
            self._unsure.append((events, waiter))
            if failed:
                self._held += sum(map(len, lines))

    def _chain(self, events: Sequence[AuditEvent]) -> list[bytes]:
        """Lock held: chain `events` on and stage them (as `append` does)."""
        seq, last, lines = self._seq, self._last_hash, list[bytes]()
        for event in events:
            last = chain_into(lines, event, seq, last)
            seq += 1
        self._staged += lines
        self._seq, self._last_hash = seq, last
        return lines

    def _schedule(self, loop: asyncio.AbstractEventLoop | None) -> None:
        if loop is None:
            self._flush()
        elif loop not in self._scheduled:
            self._scheduled.add(loop)
            loop.call_soon(self._flush_soon, loop)

    def _on_loop(self) -> asyncio.AbstractEventLoop:
        """The proxy's event loop, learned at the first submit: asyncio.get_running_loop() makes
        a getpid() system call each time, three a statement on the hot path."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        return self._loop

    def _flush_soon(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled.discard(loop)
        self._flush()

    def _schedule_later(self, loop: asyncio.AbstractEventLoop) -> None:
        """Write what waits for no one within OUTCOME_DELAY: the next write-ahead usually
        takes it along first, one write() for both."""
        if loop not in self._scheduled and loop not in self._later:
            self._later.add(loop)
            loop.call_later(OUTCOME_DELAY, self._flush_later, loop)

    def _flush_later(self, loop: asyncio.AbstractEventLoop) -> None:
        self._later.discard(loop)
        if self._staged:
            self._flush()

    def submit(
        self,
        events: Sequence[AuditEvent],
        done: Callable[[BaseException | None], None] | None = None,
    ) -> None:
        """Stage `events`; `done(error)` runs on this event loop once they are durable (error
        None) or cannot be, and then never will be. Without a task or future: the proxy's
        hot path."""
        loop = self._loop or self._on_loop()
        try:
            self.append(events, (loop, done) if done is not None else None)
        except LedgerUnavailable as exc:
            if done is not None:
                done(exc)
            return
        if done is None:
            self._schedule_later(loop)  # an outcome: it rides with the next write-ahead
        elif self._durable:
            self._schedule(loop)  # "fsync": one fdatasync for all of this loop pass
        else:
            self._flush()  # "os": durable once written; no loop pass spent waiting

    async def write_ahead(self, events: Sequence[AuditEvent]) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self.append(events, (loop, future))
        self._schedule(loop)
        await future

    def record(self, event: AuditEvent) -> None:
        try:
            self.append((event,))
        except LedgerUnavailable:
            return  # counted in `lost`, logged once
        self._schedule(_running_loop())

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

    def _release(self) -> None:
        """Settle what became durable or was dropped (lock not held: waiters may append)."""
        if not self._settle:
            return  # read without the lock: whoever adds to it calls this afterwards
        with self._lock:
            batches, self._settle = self._settle, []
        current = self._loop if threading.get_ident() == self._loop_thread else None
        for waiters, error in batches:
            notify(waiters, error, current)

    def _flush(self) -> None:
        """Write everything staged with one write(); in "fsync" mode, have it synced."""
        with self._lock:
            if self._failed is None and self._staged:
                staged, self._staged = self._staged, []
                if self._write(staged) and self._due():
                    self._rotate_or_fail()
            wrote = self._written > 0
        if self._durable and wrote:
            self._syncer.poke()
        self._release()

    def _write(self, staged: list[bytes]) -> bool:
        data = b"".join(staged)
        try:
            _write_all(self._fd, data)
        except OSError as exc:
            self._fail(exc, "write")
            return False
        self._size += len(data)
        self.writes += 1
        self._live.count = self._seq - self._live.first_seq  # all staged is written now
        self._live.last_hash = self._last_hash
        self._written = len(self._unsure)
        if not self._durable:
            self._made_durable(self._written)
        return True

    def _made_durable(self, appends: int) -> None:
        """Lock held: the first `appends` unsure appends, and all that was written, are
        durable; their waiters are told so."""
        if appends == len(self._unsure):
            done, self._unsure = self._unsure, []
        else:
            done, self._unsure = self._unsure[:appends], self._unsure[appends:]
        self._written -= appends
        self._durable_at = (self._size, self._live.count, self._live.last_hash)
        if waiters := [w for _, w in done if w is not None]:
            self._settle.append((waiters, None))

    def _fail(self, exc: BaseException, doing: str) -> None:
        """Lock held: back to the last durable record; drop what had a waiter (told so), chain
        again what had none; refuse from now on, and have the mender try again."""
        if self._failed is None:
            self._failures += 1
            self._failed_at = time.time()
            log.error(
                "audit journal %s failed: %s; refusing statements until it works again",
                doing,
                exc,
            )
            _, count, last = self._durable_at
            self._live.count, self._live.last_hash = count, last
            self._seq, self._last_hash = self._live.first_seq + count, last
            unsure, self._unsure, self._staged, self._written = self._unsure, [], [], 0
            error = LedgerUnavailable(f"the audit journal cannot be written: {exc}")
            dropped = [w for _, w in unsure if w is not None]
            self._settle.append((dropped, error))
            self._refused += len(dropped)
            for events, waiter in unsure:
                if waiter is None:
                    self._held += sum(map(len, self._chain(events)))
                    self._unsure.append((events, None))
            self._mender.wake()
        self._failed = exc

    def _sync(self) -> None:
        """fdatasync what was written (syncer thread) and tell its waiters."""
        with self._lock:
            if self._failed is not None or not self._written:
                return
            gen, failures, appends = self._gen, self._failures, self._written
            written = (self._size, self._live.count, self._live.last_hash)
        with self._fd_lock:
            if self._gen != gen:
                return  # a rotation made it durable meanwhile, and told them
            try:
                os.fdatasync(self._fd)
                error: OSError | None = None
                self.syncs += 1
            except OSError as exc:
                error = exc
        with self._lock:
            if self._failures != failures or self._gen != gen:
                pass  # a failure (or rotation) meanwhile settled them already
            elif error is not None:
                self._fail(error, "fsync")
            else:
                done, self._unsure = self._unsure[:appends], self._unsure[appends:]
                self._written -= appends
                self._durable_at = written
                self._settle.append(([w for _, w in done if w is not None], None))
        self._release()

    def _mend(self) -> bool:
        """One attempt to write again (mender thread): cut what the journal holds past the
        last durable record, write what was kept, make it durable. True once it did."""
        with self._lock:
            if self._failed is None:
                return True
            if self._closing:
                return False
            data = b"".join(self._staged)
            try:
                with self._fd_lock:
                    if self._fd < 0:
                        self._open_live()  # a rotation could not start the next journal
                    os.ftruncate(self._fd, self._durable_at[0])
                    _write_all(self._fd, data)
                    if self._durable:
                        os.fdatasync(self._fd)
                    self._gen += 1
            except OSError as exc:
                self._failed = exc
                return False
            self._size = self._durable_at[0] + len(data)
            self._staged = []
            self._live.count = self._seq - self._live.first_seq
            self._live.last_hash = self._last_hash
            self._made_durable(len(self._unsure))
            error, since, refused, lost = self._failed, self._failed_at, self._refused, self._lost
            self._failed, self._held, self._refused, self._lost = None, 0, 0, 0
        self._release()
        took = time.time() - since
        log.warning("audit journal writable again after %.1f s; accepting statements", took)
        detail = (
            f"ledger.recovery: the journal could not be written for {took:.1f} s from "
            f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(since))} ({error}); "
            f"{refused} write-aheads were refused meanwhile (SQLSTATE 58030), recorded by the "
            "proxy as refused; the other records were kept and are written now"
        )
        if lost:
            detail += f"; {lost} records could not be kept while waiting and are missing"
        self.record(system_event(detail))
        return True

    def _why(self) -> str:
        if self._failed is not None:
            return f"the audit journal cannot be written: {self._failed}"
        return "the audit ledger is closed"

    @property
    def failed(self) -> BaseException | None:
        """Why writes fail now, if they do (the mender is trying again)."""
        return self._failed

    # -- signed heads -------------------------------------------------------------------------

    def sign_head(self) -> None:
        """Sign the live journal's last durable seq and hash into its heads log (head thread,
        start and close). In "os" mode an fdatasync first makes what was written durable on
        disk too, so a head never vouches for a record a power cut could take away."""
        with self._lock:
            live, gen = self._live, self._gen
            _, count, last_hash = self._durable_at
            seq = live.first_seq + count - 1
            if self._failed is not None or self._fd < 0 or count == 0:
                return
            if (live.path.name, seq) == self._last_head:
                return
        if not self._durable:
            with self._fd_lock:
                if self._gen != gen:
                    return  # rotated meanwhile: the next tick signs
                try:
                    os.fdatasync(self._fd)
                except OSError as exc:
                    log.error("cannot sync the journal to sign its head: %s", exc)
                    return
        head = sign_head(self._key, live.path, seq, last_hash, lanes_beside(self.layout.root))
        try:
            append_head(self.layout.heads(live.first_seq), head)
        except OSError as exc:
            log.error("cannot sign the journal's head: %s; records stay unvouched", exc)
            return
        self._last_head = (live.path.name, seq)

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
        self._release()

    def _rotate_or_fail(self) -> None:
        try:
            self._rotate()
        except OSError as exc:
            self._fail(exc, "rotation")

    def _rotate(self) -> None:
        """Close the live journal (lock held), hand it to the sealer, start the next one."""
        with self._fd_lock:
            if self._durable:
                os.fdatasync(self._fd)  # the sealer reads it; waiters may still be syncing
            self._made_durable(self._written)
            fd, self._fd = self._fd, -1
            self._gen += 1
            os.close(fd)
            self._sealer.jobs.put(self._live)
            first = self._live.first_seq + self._live.count
            last = self._live.last_hash
            self._live = Pending(self.layout.journal(first), first, 0, last, last)
            self._size, self._durable_at = 0, (0, 0, last)  # if the open fails, the mender's
            self._open_live()

    # -- closing ------------------------------------------------------------------------------

    def close(self, *, seal: bool = True) -> None:
        """Write what is staged, sign the head, seal the journal (unless `seal` is false: the
        next start continues it), wait for sealing to finish, and release the ledger."""
        self._flush()
        if self._failed is not None:
            self._mend()  # one last try: what cannot be written now is lost
        with self._lock:
            if self._closing:
                return
            self._closing = True
            unwritten = len(self._staged)
        if unwritten:
            log.error("closing with %d audit records that could not be written", unwritten // 3)
        self._timer.stop()
        self._header.stop()
        self._mender.stop()
        self._syncer.stop()
        self.sign_head()
        with self._fd_lock, contextlib.suppress(OSError):  # gone already if a rotation failed
            os.close(self._fd)
        if self._failed is None and seal:
            self._sealer.jobs.put(self._live)
        self._sealer.stop()
        if self._derived is not None:
            self._derived.stop()  # after the last seal: its segment is indexed too
        os.close(self._lock_fd)

    async def aclose(self) -> None:
        self._flush()
        await asyncio.to_thread(self.close)

    @property
    def seal_error(self) -> BaseException | None:
        """Why sealing fails, if it does (the sealer is trying again)."""
        return self._sealer.failed
