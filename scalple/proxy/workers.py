"""What a worker of `serve --workers N` is, and how workers reach one another.

Each worker is a complete proxy writing its own ledger lane. It answers on a private Unix socket
in the supervisor's run directory (0700): a CancelRequest that the kernel handed to another
worker is forwarded there, as PgBouncer's peers forward theirs, and the supervisor reads each
worker's metrics through it. The worker holding a connection is named by the low bits of the
cancel key its client was given.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scalple.ledger.lanes import lane_dir, lane_name

log = logging.getLogger("scalple.proxy")
CANCEL = b"C"  # + pid and secret (2 x int32): cancel that key's statement
METRICS = b"M"  # answered with the worker's metrics, Prometheus text format
_KEY = struct.Struct("!ii")
PEER_TIMEOUT = 5.0


def worker_bits(count: int) -> int:
    """How many low bits of a client's cancel secret name its worker (none for one worker)."""
    return (count - 1).bit_length()


@dataclass(frozen=True)
class WorkerRole:
    """Worker `index` of `count`, as the supervisor started it.

    `config` and `flags` are what the supervisor loaded its settings from (each worker loads
    them itself, and again on SIGHUP); `channel` is the worker's end of a socket pair with the
    supervisor: "ready" goes up it, and its end-of-file means the supervisor is gone.
    """

    index: int
    count: int
    run_dir: Path
    config: Path | None = None
    flags: Mapping[str, Any] = field(default_factory=dict)
    channel: int = -1

    @property
    def bits(self) -> int:
        return worker_bits(self.count)

    @property
    def name(self) -> str:
        return f"w{self.index}"

    def lane(self, ledger: Path) -> Path:
        return lane_dir(ledger, lane_name(socket.gethostname(), self.index))

    def owner(self, key: tuple[int, int]) -> int:
        """The worker that gave a client `key` (maybe none that exists: keys come from anyone)."""
        return key[1] & ((1 << self.bits) - 1)

    def to_json(self) -> str:
        return json.dumps(
            {
                "index": self.index,
                "count": self.count,
                "run_dir": str(self.run_dir),
                "config": str(self.config) if self.config is not None else None,
                "flags": dict(self.flags),
                "channel": self.channel,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> WorkerRole:
        data = json.loads(text)
        config = data["config"]
        return cls(
            index=int(data["index"]),
            count=int(data["count"]),
            run_dir=Path(data["run_dir"]),
            config=Path(config) if config is not None else None,
            flags=dict(data["flags"]),
            channel=int(data["channel"]),
        )


def peer_socket(run_dir: Path, index: int) -> Path:
    return run_dir / f"w{index}.sock"


async def serve_peers(
    role: WorkerRole,
    cancel: Callable[[tuple[int, int]], Awaitable[None]],
    metrics: Callable[[], bytes],
) -> asyncio.AbstractServer:
    """Answer forwarded cancel requests and metrics requests on this worker's private socket."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            kind = await asyncio.wait_for(reader.readexactly(1), PEER_TIMEOUT)
            if kind == CANCEL:
                key = _KEY.unpack(await asyncio.wait_for(reader.readexactly(8), PEER_TIMEOUT))
                if role.owner(key) == role.index:  # never forwarded on: no loops
                    await cancel(key)
            elif kind == METRICS:
                writer.write(await asyncio.to_thread(metrics))
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, OSError):
            pass
        finally:
            writer.close()

    path = peer_socket(role.run_dir, role.index)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # left by this worker's previous life
    server = await asyncio.start_unix_server(handle, str(path))
    os.chmod(path, 0o600)
    return server


async def forward_cancel(
    role: WorkerRole, owner: int, key: tuple[int, int], timeout: float
) -> None:
    """Hand a CancelRequest to worker `owner`; return once it has acted on it (or cannot)."""
    if owner >= role.count:
        log.info("cancel request for an unknown key ignored")
        return
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(str(peer_socket(role.run_dir, owner))), timeout
        )
    except (OSError, TimeoutError) as exc:
        log.warning("cancel request could not reach worker %d: %s", owner, exc or "timeout")
        return
    writer.write(CANCEL + _KEY.pack(*key))
    with contextlib.suppress(Exception):
        await writer.drain()
        await asyncio.wait_for(reader.read(), timeout)  # closed once it has forwarded upstream
    writer.close()
    log.info("cancel request passed to worker %d", owner)


def fetch_metrics(run_dir: Path, index: int, timeout: float = PEER_TIMEOUT) -> str:
    """Worker `index`'s metrics in Prometheus text format (blocking: for the scrape thread)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(peer_socket(run_dir, index)))
        sock.sendall(METRICS)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()
