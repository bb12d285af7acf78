"""The asyncio shell: accept clients, connect each to the upstream, pump bytes through its Session.

Nothing here understands the protocol; it moves bytes, waits for the write-ahead, applies
back-pressure, and turns broken peers into a closed connection with an ErrorResponse.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from scalple.analysis import Analyzer, Catalog
from scalple.analysis import Policy as AnalysisPolicy
from scalple.config import Config
from scalple.errors import ConfigError, LedgerUnavailable
from scalple.ledger import AuditSink, ledger_settings, open_sink
from scalple.ledger.keys import resolve_key_dir, subject_secret
from scalple.proxy import codec
from scalple.proxy.logs import setup_logging
from scalple.proxy.session import Policy, Session

log = logging.getLogger("scalple.proxy")
READ_SIZE = 256 * 1024


def now_us() -> int:
    return time.time_ns() // 1000


def parse_upstream(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else f"postgresql://{url}")
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
        raise ConfigError(f"upstream must look like postgresql://HOST:PORT, got {url!r}")
    return parts.hostname, parts.port or 5432


def _fatal(sqlstate: str, text: str) -> bytes:
    return codec.encode_error(sqlstate, text, severity="FATAL")


class Proxy:
    """Per-process state: settings, the ledger, and the live sessions by their cancel key."""

    def __init__(self, config: Config, sink: AuditSink, analyzer: Analyzer | None = None) -> None:
        self.sink = sink
        self.analyzer = analyzer
        self._refreshing: asyncio.Task[None] | None = None
        self.upstream = parse_upstream(config["upstream"])
        self.connect_timeout = float(config["connect_timeout"])
        self.stall_timeout = float(config["stall_timeout"])
        self.policy = Policy(
            require_identity=bool(config["require_identity"]),
            trusted_roles=tuple(config["trusted_roles"]),
            trusted_networks=tuple(config["trusted_networks"]),
            max_message_bytes=int(config["max_message_bytes"]),
        )
        self.by_key: dict[tuple[int, int], Session] = {}
        self.tasks: set[asyncio.Task[Any]] = set()

    async def handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        peer = cwriter.get_extra_info("peername") or ("unknown", None)
        session = Session(self.policy, str(peer[0]), peer[1], now_us, analyzer=self.analyzer)
        uwriter: asyncio.StreamWriter | None = None
        try:
            uwriter = await self._run(session, creader, cwriter)
        except codec.ProtocolViolation as exc:
            log.warning("closing %s:%s: %s", peer[0], peer[1], exc)
            cwriter.write(_fatal(exc.sqlstate, f"scalple: {exc}"))
        except (ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
            log.info("connection %s:%s ended: %s", peer[0], peer[1], exc or type(exc).__name__)
        except Exception:  # the proxy never goes down for one client's sake
            log.exception("internal error on connection %s:%s", peer[0], peer[1])
            cwriter.write(_fatal("XX000", "scalple: internal error; connection closed"))
        finally:
            for event in session.close_out():
                self.sink.record(event)
            self.by_key.pop(session.client_key, None)
            for w in (cwriter, uwriter):
                if w is not None:
                    with contextlib.suppress(Exception):
                        w.close()
            if task is not None:
                self.tasks.discard(task)

    async def _read_client(self, reader: asyncio.StreamReader, session: Session) -> bytes:
        if session.client_pending:
            try:
                return await asyncio.wait_for(reader.read(READ_SIZE), self.stall_timeout)
            except TimeoutError:
                raise codec.ProtocolViolation(
                    f"client stalled for {self.stall_timeout:g}s in the middle of a message",
                    "08P01",
                ) from None
        return await reader.read(READ_SIZE)

    async def _run(
        self, session: Session, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter
    ) -> asyncio.StreamWriter | None:
        while session.phase == "startup":
            data = await self._read_client(creader, session)
            if not data:
                return None
            step = session.client_data(data)
            if step.client:
                cwriter.write(b"".join(step.client))
            if step.cancel is not None:
                await self._cancel(step.cancel)
                return None
            if step.close:
                return None
        ureader, uwriter = await self._connect(cwriter)
        if uwriter is None or ureader is None:
            return None
        uwriter.write(b"".join(step.upstream))
        server_pump = asyncio.create_task(self._pump_server(session, ureader, cwriter))
        client_pump = asyncio.create_task(self._pump_client(session, creader, uwriter, cwriter))
        done, pending = await asyncio.wait(
            {server_pump, client_pump}, return_when=asyncio.FIRST_COMPLETED
        )
        for t in pending:
            t.cancel()
        for t in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for t in done:
            t.result()
        return uwriter

    async def _connect(
        self, cwriter: asyncio.StreamWriter
    ) -> tuple[asyncio.StreamReader | None, asyncio.StreamWriter | None]:
        host, port = self.upstream
        try:
            return await asyncio.wait_for(asyncio.open_connection(host, port), self.connect_timeout)
        except (OSError, TimeoutError) as exc:
            log.error("cannot reach upstream %s:%s: %s", host, port, exc or "timeout")
            cwriter.write(
                _fatal(
                    "08001",
                    f"scalple: cannot reach the upstream database at "
                    f"{host}:{port} ({exc or 'timeout'})",
                )
            )
            return None, None

    async def _pump_client(
        self,
        session: Session,
        creader: asyncio.StreamReader,
        uwriter: asyncio.StreamWriter,
        cwriter: asyncio.StreamWriter,
    ) -> None:
        sink = self.sink
        while True:
            data = await self._read_client(creader, session)
            if not data:
                return
            step = session.client_data(data)
            if step.client:
                cwriter.write(b"".join(step.client))
            if step.write_ahead:
                try:
                    await sink.write_ahead(step.write_ahead)
                except LedgerUnavailable as exc:
                    log.error("write-ahead failed, refusing statements: %s", exc)
                    session.refuse_unwritten(step, str(exc))
            if step.upstream:
                uwriter.write(
                    b"".join(step.upstream) if len(step.upstream) > 1 else step.upstream[0]
                )
            for event in step.records:
                sink.record(event)
            if step.close:
                return
            await uwriter.drain()

    async def _pump_server(
        self, session: Session, ureader: asyncio.StreamReader, cwriter: asyncio.StreamWriter
    ) -> None:
        sink = self.sink
        registered = False
        while True:
            data = await ureader.read(READ_SIZE)
            if not data:
                if session.phase == "ready":
                    cwriter.write(
                        _fatal("08006", "scalple: the upstream database closed the connection")
                    )
                return
            step = session.server_data(data)
            if step.client:
                cwriter.write(b"".join(step.client) if len(step.client) > 1 else step.client[0])
            for event in step.records:
                sink.record(event)
            if session.ddl_done:
                session.ddl_done = False
                self._refresh_catalog()
            if not registered and session.upstream_key is not None:
                self.by_key[session.client_key] = session
                registered = True
            await cwriter.drain()

    def _refresh_catalog(self) -> None:
        """After DDL, read the catalog again (once at a time) so `*` and OIDs stay right."""
        catalog = self.analyzer.catalog if self.analyzer else None
        if catalog is None or (self._refreshing is not None and not self._refreshing.done()):
            return

        async def refresh() -> None:
            try:
                await catalog.refresh()
            except Exception as exc:  # a stale catalog degrades analysis, never traffic
                log.warning("catalog refresh failed: %s", exc)

        self._refreshing = asyncio.create_task(refresh())

    async def _cancel(self, key: tuple[int, int]) -> None:
        session = self.by_key.get(key)
        if session is None or session.upstream_key is None:
            log.info("cancel request for an unknown key ignored")
            return
        host, port = self.upstream
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), self.connect_timeout
            )
        except (OSError, TimeoutError) as exc:
            log.warning("cancel request could not reach upstream: %s", exc)
            return
        writer.write(codec.encode_cancel(*session.upstream_key))
        # As libpq does: wait for the upstream to close, so it has read the request.
        with contextlib.suppress(Exception):
            await writer.drain()
            await asyncio.wait_for(reader.read(), self.connect_timeout)
        writer.close()
        log.info("cancel request forwarded for session %s", session.session_id)


async def build_analyzer(config: Config) -> Analyzer:
    """The statement analyzer: PII policy, the subject secret, and the catalog if reachable."""
    policy = AnalysisPolicy.from_config(config)
    secret = subject_secret(resolve_key_dir(config["key_dir"]))
    catalog = None
    if config["catalog_dsn"]:
        try:
            catalog = await Catalog.load(config["catalog_dsn"])
        except Exception as exc:  # without it, analysis works from the SQL alone
            log.warning("catalog not loaded (%s); columns come from the SQL text alone", exc)
    return Analyzer(policy, secret, catalog)


async def serve(
    config: Config,
    *,
    ready: Callable[[str], Awaitable[None] | None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run the proxy until `stop` is set (or SIGTERM/SIGINT), then drain and close the ledger."""
    host, _, port = config["listen"].rpartition(":")
    analyzer = await build_analyzer(config)
    sink = open_sink(config.ledger_dir, config["durability"], **ledger_settings(config))
    proxy = Proxy(config, sink, analyzer)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    server = await asyncio.start_server(
        proxy.handle, host.strip("[]"), int(port), limit=READ_SIZE * 2, reuse_address=True
    )
    where = ", ".join(f"{s.getsockname()[0]}:{s.getsockname()[1]}" for s in server.sockets)
    log.info(
        "listening on %s, upstream %s:%s, ledger %s (%s)",
        where,
        *proxy.upstream,
        config.ledger_dir,
        config["durability"],
    )
    if ready is not None:
        result = ready(where)
        if result is not None:
            await result
    try:
        await stop.wait()
    finally:
        server.close()
        if proxy.tasks:
            _, still = await asyncio.wait(set(proxy.tasks), timeout=10)
            for t in still:
                t.cancel()
        await sink.aclose()
        log.info("stopped; ledger closed")


def run(config: Config) -> None:
    setup_logging(config["log_format"], config["log_level"])
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        asyncio.run(serve(config))
    else:
        uvloop.run(serve(config))
