"""A client connection and its upstream connection as asyncio protocols around one Session.

Bytes from the client go through the session; what must be written ahead waits for the ledger
(reading from that client paused meanwhile), then goes upstream. Bytes from the upstream go
through the session to the client. Each side's full write buffer pauses reading on the other, so
a large result streams through in bounded memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from typing import cast

from scalple.proxy import codec
from scalple.proxy.host import Host
from scalple.proxy.session import OFF_LOOP_BYTES, Phase, Session, Step

log = logging.getLogger("scalple.proxy")
LINGER_SECONDS = 1.0
HOLD_LIMIT = 1 << 20


def fatal(sqlstate: str, text: str) -> bytes:
    return codec.encode_error(sqlstate, text, severity="FATAL")


class ClientConnection(asyncio.Protocol):
    """The client side: owns the session and the upstream connection."""

    def __init__(self, proxy: Host) -> None:
        self.proxy = proxy
        self.transport: asyncio.Transport | None = None
        self.upstream: UpstreamConnection | None = None
        self.session: Session | None = None
        self.closed = False
        self.failed = False
        self.draining = False
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._socket_paused = False
        self._pauses: set[str] = set()
        self._stall: asyncio.TimerHandle | None = None
        self._login: asyncio.TimerHandle | None = None
        self._busy = False  # a worker thread is reading this connection's message

    # --- asyncio callbacks ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass of it
        peer = self.transport.get_extra_info("peername") or ("unknown", None)
        self.session = Session(
            self.proxy.policy, str(peer[0]), peer[1], self.proxy.clock, analyzer=self.proxy.analyzer
        )
        self.proxy.connections.add(self)
        self.proxy.counts.connections_total += 1
        # A client that connects and never finishes signing in holds a socket (and perhaps an
        # upstream connection) for nothing: cut it off, as PostgreSQL's authentication_timeout.
        self._login = asyncio.get_running_loop().call_later(
            self.proxy.login_timeout, self._login_expired
        )
        self.proxy.counts.connections_open += 1

    def data_received(self, data: bytes) -> None:
        if self.failed:
            return
        if self._pauses:  # bytes read while waiting: keep them, in order
            self._held.append(data)
            self._held_bytes += len(data)
            if self._held_bytes > HOLD_LIMIT:
                self._pause_socket()
            return
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        session = self.session
        assert session is not None
        if len(data) > OFF_LOOP_BYTES or session.completes_large(len(data), OFF_LOOP_BYTES):
            self._read_off_loop(lambda: session.client_data(data))
            return
        try:
            step = session.client_data(data)
        except Exception as exc:
            self._unreadable(exc)
            return
        self._handle(step)

    def _unreadable(self, exc: BaseException) -> None:
        if isinstance(exc, codec.ProtocolViolation):
            self.fail(exc.sqlstate, f"scalple: {exc}", warn=True)
        else:  # the proxy never goes down for one client's sake
            log.error("internal error on a client connection", exc_info=exc)
            self.fail("XX000", "scalple: internal error; connection closed")

    def _read_off_loop(self, read: Callable[[], Step]) -> None:
        """A large message is read in a worker thread, so other clients are not kept waiting;
        this connection stands still meanwhile (both ways), so the session is the thread's."""
        self.pause("reading")
        self._busy = True
        if self.upstream is not None:
            self.upstream.pause_reading()
        self.proxy.counts.offloaded += 1

        def done(result: Step | BaseException) -> None:
            self._busy = False
            if self.closed:
                self._closed_out()
                return
            if self.upstream is not None:
                self.upstream.resume_reading()
            if isinstance(result, BaseException):
                self._unreadable(result)
                return
            self._handle(result)
            self.resume("reading")

        self.proxy.offload.submit(read, done)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._stall is not None:
            self._stall.cancel()
        if self._login is not None:
            self._login.cancel()
        if self.upstream is not None:
            self.upstream.close()
        if not self._busy:  # else the worker reading for it finishes first
            self._closed_out()

    def _closed_out(self) -> None:
        if self.session is not None:
            self.proxy.record(self.session.close_out())
            if self.session.client_key is not None:
                self.proxy.by_key.pop(self.session.client_key, None)
        self.proxy.connections.discard(self)
        self.proxy.counts.connections_open -= 1

    def pause_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.resume_reading()

    # --- the flow --------------------------------------------------------------------------------

    def _handle(self, step: Step) -> None:
        if step.client and self.transport is not None:
            self.transport.write(step.client[0] if len(step.client) == 1 else b"".join(step.client))
        if step.start_tls:
            self._start_tls()
            return
        if step.cancel is not None:
            self.proxy.spawn(self.proxy.cancel(step.cancel))
            self.close()
            return
        if self.upstream is None:
            if not step.upstream:  # still starting up, or a person still signing in to us
                self.close() if step.close else self._arm_stall()
                return
            self.pause("connect")
            self.proxy.spawn(self._connect(step))
            return
        self._write_ahead(step)

    def _write_ahead(self, step: Step) -> None:
        if not step.write_ahead:
            self._forward(step)
            return
        self.pause("ledger")
        self.proxy.write_ahead(step.write_ahead, lambda error: self._durable(step, error))

    def _durable(self, step: Step, error: BaseException | None) -> None:
        if error is not None:
            log.error("write-ahead failed, refusing statements: %s", error)
            self.proxy.counts.refused += len(step.write_ahead)
            if step.unwritten is not None:
                step.upstream = step.unwritten  # probes in place of every statement
        self._forward(step)
        self.resume("ledger")

    def _forward(self, step: Step) -> None:
        if self.closed or self.upstream is None:
            return
        if step.upstream:
            self.upstream.write(
                step.upstream[0] if len(step.upstream) == 1 else b"".join(step.upstream)
            )
        if step.records:
            self.proxy.record(step.records)
        self._after(step)

    def _after(self, step: Step) -> None:
        """What a step tells the shell besides bytes."""
        session = self.session
        if step.release and session is not None:
            self._read_off_loop(session.release)
        if step.backend_key is not None and session is not None:
            self.proxy.by_key[step.backend_key] = session
        if step.ready and self._login is not None:
            self._login.cancel()
            self._login = None
        if step.catalog_changed:
            self.proxy.refresh_catalog()
        if step.close:
            self.close()
            return
        self._arm_stall()
        if session is not None and session.held_bytes > HOLD_LIMIT:
            self._pause_socket()  # the client runs ahead of the batch in flight
        if self.draining and session is not None and session.idle:
            self.fail("57P01", "scalple: terminating connection because the proxy is shutting down")

    def _start_tls(self) -> None:
        """Hand the socket to TLS: not one more byte may be read in the clear before it."""
        assert self.transport is not None and self.proxy.tls is not None
        # Held until the TLS transport is ours: the client may speak the moment the handshake
        # ends, before start_tls has returned, and answers must not go out in the clear.
        self.pause("tls")
        self.proxy.spawn(self._handshake(self.transport, self.proxy.tls))

    async def _handshake(self, raw: asyncio.Transport, context: ssl.SSLContext) -> None:
        loop = asyncio.get_running_loop()
        try:
            tls = await asyncio.wait_for(
                loop.start_tls(raw, self, context, server_side=True), self.proxy.stall_timeout
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            # The client expects TLS now: a PostgreSQL error in the clear would mean nothing.
            log.warning("TLS handshake with a client failed: %s", exc or "timeout")
            raw.close()
            return
        if tls is None or self.closed:
            raw.close()
            return
        self.transport = tls
        self._socket_paused = False  # the paused socket was the raw one; TLS reads on its own
        self.resume("tls")
        self._arm_stall()

    async def _connect(self, step: Step) -> None:
        loop = asyncio.get_running_loop()
        host, port = self.proxy.upstream
        try:
            _, upstream = await asyncio.wait_for(
                loop.create_connection(lambda: UpstreamConnection(self), host, port),
                self.proxy.connect_timeout,
            )
        except (OSError, TimeoutError) as exc:
            reason = exc or "timeout"
            log.error("cannot reach upstream %s:%s: %s", host, port, reason)
            self.fail(
                "08001", f"scalple: cannot reach the upstream database at {host}:{port} ({reason})"
            )
            return
        if self.closed:
            upstream.close()
            return
        self.upstream = upstream
        self._write_ahead(step)
        self.resume("connect")

    # --- upstream events -------------------------------------------------------------------------

    def from_upstream(self, data: bytes) -> None:
        session = self.session
        if session is None or self.transport is None or self.closed:
            return
        try:
            step = session.server_data(data)
        except codec.ProtocolViolation as exc:
            self.fail(exc.sqlstate, f"scalple: {exc}", warn=True)
            return
        except Exception:
            log.exception("internal error reading from the upstream")
            self.fail("XX000", "scalple: internal error; connection closed")
            return
        if step.client:
            self.transport.write(step.client[0] if len(step.client) == 1 else b"".join(step.client))
        if step.write_ahead:  # statements that waited behind the batch just answered
            self._write_ahead(step)
            return
        if step.upstream and self.upstream is not None:
            self.upstream.write(b"".join(step.upstream))
        if step.records:
            self.proxy.record(step.records)
        self._after(step)
        if self._socket_paused and session.held_bytes <= HOLD_LIMIT and not self._pauses:
            self._socket_paused = False
            self.transport.resume_reading()

    def upstream_lost(self) -> None:
        if self.closed or self.session is None:
            return
        if self.session.phase is Phase.READY:
            self.fail("08006", "scalple: the upstream database closed the connection")
        else:
            self.close()

    # --- control ---------------------------------------------------------------------------------

    def pause(self, reason: str) -> None:
        """Hold the client's bytes until `resume(reason)`.

        Waiting for the ledger only holds them in memory (a client mostly waits for its answer
        anyway, and pausing the socket costs two system calls a statement); the socket itself
        is paused for the other reasons, or once `HOLD_LIMIT` bytes are held.
        """
        if reason != "ledger":
            self._pause_socket()
        self._pauses.add(reason)

    def resume(self, reason: str) -> None:
        self._pauses.discard(reason)
        while self._held and not self._pauses and not self.closed:
            data = self._held.pop(0)
            self._held_bytes -= len(data)
            self.data_received(data)
        if not self._pauses and self._socket_paused and not self.closed:
            self._socket_paused = False
            if self.transport is not None:
                self.transport.resume_reading()

    def _pause_socket(self) -> None:
        if not self._socket_paused and self.transport is not None:
            self._socket_paused = True
            self.transport.pause_reading()

    def _arm_stall(self) -> None:
        if self.session is not None and self.session.client_pending and not self.closed:
            self._stall = asyncio.get_running_loop().call_later(
                self.proxy.stall_timeout, self._stalled
            )

    def _login_expired(self) -> None:
        self._login = None
        if "tls" in self._pauses and self.transport is not None:
            self.transport.close()  # mid-handshake: an error in the clear would mean nothing
            return
        if self.session is not None and self.session.phase is not Phase.READY:
            self.fail(
                "08P01",
                f"scalple: not signed in within login_timeout ({self.proxy.login_timeout:g}s)",
                warn=True,
            )

    def _stalled(self) -> None:
        self.fail(
            "08P01",
            f"scalple: client stalled for {self.proxy.stall_timeout:g}s in the middle of a message",
            warn=True,
        )

    def fail(self, sqlstate: str, message: str, *, warn: bool = False) -> None:
        """End this connection with a FATAL ErrorResponse; nothing else is affected.

        The write side is shut and what the client still sends is read and dropped for a moment
        before closing: closing with unread bytes would reset the connection, and the client
        would never see the error.
        """
        if warn:
            log.warning("closing client connection: %s", message)
        if self.upstream is not None:
            self.upstream.close()
        transport = self.transport
        if transport is None or transport.is_closing() or self.failed:
            return
        self.failed = True
        transport.write(fatal(sqlstate, message))
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._held.clear()
        self._pauses.clear()
        self._socket_paused = False
        with contextlib.suppress(RuntimeError):
            transport.resume_reading()
        asyncio.get_running_loop().call_later(LINGER_SECONDS, transport.close)

    def eof_received(self) -> bool | None:
        self.close()
        return None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if self.upstream is not None:
            self.upstream.close()


class UpstreamConnection(asyncio.Protocol):
    """The upstream side: hands everything to its client connection."""

    def __init__(self, client: ClientConnection) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.client.from_upstream(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.upstream_lost()

    def pause_writing(self) -> None:
        self.client.pause("upstream full")

    def resume_writing(self) -> None:
        self.client.resume("upstream full")

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            with contextlib.suppress(RuntimeError):
                self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            with contextlib.suppress(RuntimeError):
                self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
