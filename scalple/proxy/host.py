"""What a client connection needs from the process that holds it.

`ClientConnection` (connection.py) depends on this protocol, not on `server.Proxy`, which
satisfies it: the connection can be read, type-checked and tested without the server module, and
the two no longer import each other.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from scalple.analysis import Analyzer
    from scalple.events import AuditEvent
    from scalple.proxy.metrics import Counts
    from scalple.proxy.session import Policy, Session

Done = Callable[[BaseException | None], None]


class Reader(Protocol):
    """Runs a job off the event loop; `done(result or exception)` runs back on the loop."""

    def submit(self, job: Callable[[], Any], done: Callable[[Any], None]) -> None: ...


class Host(Protocol):
    # settings, taken by each new connection
    policy: Policy
    analyzer: Analyzer | None
    tls: ssl.SSLContext | None
    upstream: tuple[str, int]
    connect_timeout: float
    stall_timeout: float
    login_timeout: float
    clock: Callable[[], int]
    # shared state
    connections: set[Any]  # the live ClientConnections
    by_key: dict[tuple[int, int], Session]  # the key a client was given -> its session
    counts: Counts

    @property
    def offload(self) -> Reader:
        """Where messages too large to read on the loop are read."""

    def write_ahead(self, events: Sequence[AuditEvent], done: Done) -> None:
        """Make `events` durable, then call `done(None)`, or `done(error)` if they cannot be."""

    def record(self, events: Sequence[AuditEvent]) -> None:
        """Write outcomes with the next batch; nothing waits for them."""

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` as a task the process keeps until it ends."""

    def refresh_catalog(self) -> None:
        """Read the catalog again after DDL (one refresh at a time)."""

    async def cancel(self, key: tuple[int, int]) -> None:
        """Forward a CancelRequest for the session given `key`."""
