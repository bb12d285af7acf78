"""The asyncio shell: listen, hold what all connections share, start and stop the proxy.

Nothing here understands the protocol; connections (connection.py) move bytes through their
Session, and the ledger gathers their audit events into one write per loop pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import queue
import signal
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from scalple import _compiled
from scalple.analysis import Analyzer, Catalog
from scalple.analysis import Policy as AnalysisPolicy
from scalple.config import Config
from scalple.errors import ConfigError, ScalpleError
from scalple.events import AuditEvent
from scalple.ledger import AuditSink, ledger_settings, open_sink
from scalple.ledger.keys import resolve_key_dir, subject_secret
from scalple.proxy import codec
from scalple.proxy.connection import ClientConnection
from scalple.proxy.host import Done
from scalple.proxy.logs import setup_logging
from scalple.proxy.metrics import Counts, Metrics
from scalple.proxy.people import Verifier, load_people
from scalple.proxy.session import Policy, Session
from scalple.proxy.workers import WorkerRole, forward_cancel, serve_peers
from scalple.watch.live import attach as attach_watch

log = logging.getLogger("scalple.proxy")
# Settings a running proxy cannot take on SIGHUP: they need a restart.
RESTART_SETTINGS = (
    "listen",
    "workers",
    "upstream",
    "ledger",
    "durability",
    "key_dir",
    "metrics_listen",
)


def now_us() -> int:
    return time.time_ns() // 1000


def parse_upstream(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else f"postgresql://{url}")
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
        raise ConfigError(f"upstream must look like postgresql://HOST:PORT, got {url!r}")
    return parts.hostname, parts.port or 5432


def load_people_of(config: Config) -> dict[str, Verifier]:
    """The people who sign in to scalple themselves (proxy_auth), or none."""
    path, role = config["people_file"], config["people_role"]
    if not path:
        if role:
            raise ConfigError(f"people_role ({config.origin('people_role')}) needs people_file")
        return {}
    if not role:
        raise ConfigError(
            f"people_file ({config.origin('people_file')}) needs people_role: the upstream role "
            "people's statements run as"
        )
    return load_people(Path(path).expanduser())


def tls_context(config: Config) -> ssl.SSLContext | None:
    """The server-side TLS context of tls_cert and tls_key, or None when TLS is not configured."""
    cert, key = config["tls_cert"], config["tls_key"]
    if not cert and not key:
        if config["require_tls"]:
            raise ConfigError(
                f"require_tls ({config.origin('require_tls')}) needs tls_cert and tls_key"
            )
        return None
    if not cert or not key:
        missing = "tls_key" if cert else "tls_cert"
        raise ConfigError(f"{missing} is not set: TLS needs both tls_cert and tls_key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"tls_cert {cert} ({config.origin('tls_cert')}) with tls_key {key} "
            f"({config.origin('tls_key')}) cannot be loaded: {exc}"
        ) from exc
    return context


class Offload:
    """Daemon threads that read messages too large to read on the event loop.

    Daemon, so that SIGTERM's drain bound holds whatever they are doing: a statement still
    being read has not been written ahead nor forwarded, so nothing is lost by stopping it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, threads: int = 2) -> None:
        self._loop = loop
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Callable[[Any], None]]] = (
            queue.SimpleQueue()
        )
        for n in range(threads):
            threading.Thread(target=self._work, name=f"scalple-read-{n}", daemon=True).start()

    def submit(self, job: Callable[[], Any], done: Callable[[Any], None]) -> None:
        """Run `job` in a thread; `done(result or exception)` runs on the loop."""
        self._jobs.put((job, done))

    def _work(self) -> None:
        while True:
            job, done = self._jobs.get()
            try:
                result: Any = job()
            except BaseException as exc:  # handed to `done`, which decides
                result = exc
            try:
                self._loop.call_soon_threadsafe(done, result)
            except RuntimeError:  # the loop is closed: the proxy has stopped
                return
            # An idle thread must not keep the last message it read (it can be hundreds of MB)
            # alive until its next job: the loop holds the only reference now.
            del job, done, result


async def watch_lag(counts: Counts, interval: float = 0.1) -> None:
    """Measure how late the loop runs a timer: what every client waits for beyond its own."""
    loop = asyncio.get_running_loop()
    while True:
        start = loop.time()
        await asyncio.sleep(interval)
        lag = max(0.0, loop.time() - start - interval)
        counts.loop_lag = lag
        counts.loop_lag_max = max(counts.loop_lag_max, lag)


class Proxy:
    """Per-process state: settings, the ledger, the analyzer, and the live connections."""

    def __init__(
        self,
        config: Config,
        sink: AuditSink,
        analyzer: Analyzer | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        worker: WorkerRole | None = None,
    ) -> None:
        self.analyzer = analyzer
        self.worker = worker
        self.metrics = Metrics(worker.lane(config.ledger_dir) if worker else config.ledger_dir)
        self.metrics.collector.sink = sink
        self.counts = self.metrics.counts
        self.sink = sink
        self._loop = loop or asyncio.get_running_loop()
        self.clock = now_us
        self.config = config
        self.upstream = parse_upstream(config["upstream"])
        self.apply(config, tls_context(config), load_people_of(config))
        self.connections: set[ClientConnection] = set()
        self.by_key: dict[tuple[int, int], Session] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._refreshing: asyncio.Task[None] | None = None
        self.offload = Offload(self._loop)
        self.spawn(watch_lag(self.counts))

    def apply(
        self,
        config: Config,
        tls: ssl.SSLContext | None = None,
        people: Mapping[str, Verifier] | None = None,
    ) -> None:
        """Take the settings a running proxy can change; new connections get them."""
        self.connect_timeout = float(config["connect_timeout"])
        self.stall_timeout = float(config["stall_timeout"])
        self.login_timeout = float(config["login_timeout"])
        self.tls = tls
        self.policy = Policy(
            require_identity=bool(config["require_identity"]),
            trusted_roles=tuple(config["trusted_roles"]),
            trusted_networks=tuple(config["trusted_networks"]),
            max_message_bytes=int(config["max_message_bytes"]),
            tls=tls is not None,
            require_tls=bool(config["require_tls"]),
            people=people or {},
            people_role=str(config["people_role"]),
            people_password=str(config["people_password"]),
            pool_mode=str(config["pool_mode"]),
            analysis_max_bytes=int(config["analysis_max_bytes"]),
            worker=self.worker.index if self.worker else 0,
            worker_bits=self.worker.bits if self.worker else 0,
        )

    async def reload(self, load: Callable[[], Config]) -> None:
        """SIGHUP: read the configuration again. A bad file changes nothing and is logged."""
        try:
            config = load()
            tls = tls_context(config)  # a renewed certificate is taken here
            people = load_people_of(config)  # and the people file as it is now
            analyzer = await build_analyzer(config)
        except ScalpleError as exc:
            log.error("configuration not reloaded: %s", exc)
            return
        fixed = [name for name in RESTART_SETTINGS if config[name] != self.config[name]]
        if fixed:
            log.warning("reloaded; %s change only on restart", ", ".join(fixed))
        self.apply(config, tls, people)
        self.analyzer = analyzer
        self.config = config
        setup_logging(config["log_format"], config["log_level"], self.worker)
        log.info("configuration reloaded from %s; new connections use it", config.path)

    def write_ahead(self, events: Sequence[AuditEvent], done: Done) -> None:
        """Hand `events` to the ledger; `done(error)` runs once they are durable, or not.

        The ledger gathers every connection's events of one loop pass into one write, and
        calls back on this loop: no task, future or thread hop per statement.
        """
        self.count(events)
        started = self._loop.time()
        observe = self.metrics.write_latency.observe

        def durable(error: BaseException | None) -> None:
            observe(self._loop.time() - started)
            done(error)

        self.sink.submit(events, durable)

    def record(self, events: Sequence[AuditEvent]) -> None:
        """Outcomes: written with the next batch; nothing waits for them."""
        if events:
            self.sink.submit(events)

    def count(self, events: Sequence[AuditEvent]) -> None:
        counts = self.counts
        counts.statements += len(events)
        for event in events:
            if event.actor is None:
                counts.unattributed += 1
            if event.status == "refused":
                counts.refused += 1

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def refresh_catalog(self) -> None:
        """After DDL, read the catalog again (once at a time) so `*` and OIDs stay right."""
        catalog = self.analyzer.catalog if self.analyzer else None
        if catalog is None or (self._refreshing is not None and not self._refreshing.done()):
            return

        async def refresh() -> None:
            try:
                await catalog.refresh()
            except Exception as exc:  # a stale catalog degrades analysis, never traffic
                log.warning("catalog refresh failed: %s", exc)

        self._refreshing = asyncio.get_running_loop().create_task(refresh())

    async def cancel(self, key: tuple[int, int]) -> None:
        """Forward a CancelRequest to the worker that gave out `key`, or upstream if it is us."""
        worker = self.worker
        if worker is not None and (owner := worker.owner(key)) != worker.index:
            await forward_cancel(worker, owner, key, self.connect_timeout)
            return
        await self.cancel_here(key)

    async def cancel_here(self, key: tuple[int, int]) -> None:
        """Send the upstream a CancelRequest with its own key for the session that owns `key`."""
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

    async def drain(self, bound: float) -> None:
        """Let in-flight statements finish (within `bound` s), then close every connection."""
        for conn in list(self.connections):
            conn.draining = True
            if conn.session is None or conn.session.idle:
                conn.fail(
                    "57P01", "scalple: terminating connection because the proxy is shutting down"
                )
        deadline = asyncio.get_running_loop().time() + bound
        while self.connections and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.fail("57P01", "scalple: terminating connection because the proxy is shutting down")
        await asyncio.sleep(0)


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
    load: Callable[[], Config] | None = None,
    worker: WorkerRole | None = None,
) -> None:
    """Run the proxy until `stop` is set (or SIGTERM/SIGINT), then drain and close the ledger.

    As one `worker` of several, it writes its own lane of the ledger, shares the listening
    address with the others (SO_REUSEPORT), answers them on its peer socket, leaves metrics
    to the supervisor, and stops when the supervisor is gone.
    """
    host, _, port = config["listen"].rpartition(":")
    analyzer = await build_analyzer(config)
    ledger = worker.lane(config.ledger_dir) if worker else config.ledger_dir
    sink = open_sink(ledger, config["durability"], **ledger_settings(config))
    watch = attach_watch(config, sink)  # live alerts: sees committed records, writes alerts
    proxy = Proxy(config, watch.sink if watch else sink, analyzer, worker=worker)
    proxy.metrics.collector.sink = sink  # the ledger's own write and fdatasync counts
    if watch:
        proxy.metrics.registry.register(watch.collector())
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    if load is not None:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, lambda: proxy.spawn(proxy.reload(load)))
    if config["metrics_listen"] and worker is None:
        try:
            proxy.metrics.serve(config["metrics_listen"])
        except OSError as exc:
            await sink.aclose()
            raise ConfigError(
                f"cannot serve metrics on {config['metrics_listen']}: {exc.strerror}"
            ) from exc
    try:
        server = await loop.create_server(
            lambda: ClientConnection(proxy),
            host.strip("[]"),
            int(port),
            reuse_address=True,
            reuse_port=worker is not None,  # the other workers listen on it too
        )
    except OSError as exc:
        await sink.aclose()
        raise ConfigError(f"cannot listen on {config['listen']}: {exc.strerror}") from exc
    peers = None
    if worker is not None:
        try:
            peers = await serve_peers(worker, proxy.cancel_here, proxy.metrics.exposition)
        except OSError as exc:
            server.close()
            await sink.aclose()
            raise ConfigError(f"cannot answer the other workers: {exc}") from exc
    where = ", ".join(f"{s.getsockname()[0]}:{s.getsockname()[1]}" for s in server.sockets)
    log.info(
        "listening on %s, upstream %s:%s, ledger %s (%s), hot path %s",
        where,
        *proxy.upstream,
        ledger,
        config["durability"],
        _build_note(),
    )
    if worker is not None:
        follow_supervisor(loop, worker, stop)
    if ready is not None:
        result = ready(where)
        if result is not None:
            await result
    try:
        await stop.wait()
    finally:
        server.close()
        if peers is not None:
            peers.close()
        log.info("draining %d connection(s)", len(proxy.connections))
        await proxy.drain(float(config["drain_seconds"]))
        if watch:
            await asyncio.to_thread(watch.close)
        await sink.aclose()
        log.info("stopped; ledger closed")


def _build_note() -> str:
    running = _compiled.running()
    fast = sum(running.values())
    if not running or not fast:
        return "uncompiled" + (" (SCALPLE_PURE=1)" if _compiled.built() else "")
    return "compiled" if fast == len(running) else f"compiled in part ({fast}/{len(running)})"


def follow_supervisor(
    loop: asyncio.AbstractEventLoop, worker: WorkerRole, stop: asyncio.Event
) -> None:
    """Tell the supervisor this worker is listening; stop when its end of the channel closes."""
    channel = socket.socket(fileno=worker.channel)
    channel.sendall(b"ready\n")
    channel.setblocking(False)

    def readable() -> None:
        try:
            data = channel.recv(64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            log.warning("the supervisor is gone; stopping")
            loop.remove_reader(channel)
            stop.set()

    loop.add_reader(channel, readable)


def run(
    config: Config, load: Callable[[], Config] | None = None, worker: WorkerRole | None = None
) -> None:
    """Run `scalple serve` until SIGTERM/SIGINT; `load` re-reads the configuration on SIGHUP."""
    setup_logging(config["log_format"], config["log_level"], worker)
    # A server makes many short-lived objects per statement and few long-lived ones: collect
    # the young generation less often, and keep what startup built out of full collections.
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 50)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        asyncio.run(serve(config, load=load, worker=worker))
    else:
        uvloop.run(serve(config, load=load, worker=worker))
