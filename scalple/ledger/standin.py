"""A plain append-only JSON-lines file behind `AuditSink`, used until the chained journal lands."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path

import msgspec

from scalple.errors import LedgerUnavailable
from scalple.events import AuditEvent


class JsonlSink:
    """Group commit: every append waiting when a write starts shares that write (and fsync)."""

    def __init__(self, directory: Path, *, fsync: bool = True) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(
            directory / "events.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600
        )
        self._fsync = fsync
        self._encoder = msgspec.json.Encoder()
        self._pending: list[bytes] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._flushing: asyncio.Task[None] | None = None
        self._seq = 0

    def _stage(self, event: AuditEvent) -> None:
        self._seq += 1
        event = msgspec.structs.replace(event, seq=self._seq)
        self._pending.append(self._encoder.encode(event) + b"\n")

    async def write_ahead(self, events: Sequence[AuditEvent]) -> None:
        for event in events:
            self._stage(event)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(done)
        self._kick()
        await done

    def record(self, event: AuditEvent) -> None:
        self._stage(event)
        self._kick()

    def _kick(self) -> None:
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = b"".join(self._pending), []
            waiters, self._waiters = self._waiters, []
            try:
                await asyncio.to_thread(self._write, batch)
            except OSError as exc:
                for w in waiters:
                    w.set_exception(LedgerUnavailable(f"audit journal write failed: {exc}"))
                continue
            for w in waiters:
                if not w.done():
                    w.set_result(None)

    def _write(self, data: bytes) -> None:
        os.write(self._fd, data)
        if self._fsync:
            os.fsync(self._fd)

    async def aclose(self) -> None:
        while self._flushing is not None and not self._flushing.done():
            await self._flushing
        os.close(self._fd)
