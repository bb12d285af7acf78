"""The supervisor of `scalple serve --workers N`: N complete proxies on one address.

It starts the workers (`python -m scalple.proxy.worker`), each listening on the same address
with SO_REUSEPORT and writing its own ledger lane; restarts one that dies under the same index,
so that it reopens its own lane and start-up recovery marks what it had in flight incomplete;
passes SIGHUP and SIGTERM on; serves one /metrics gathered from every worker; and exits non-zero
when a worker cannot start. Workers log to the supervisor's stderr, each line naming its worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from scalple.config import Config
from scalple.errors import ConfigError, ScalpleError
from scalple.ledger.keys import resolve_key_dir, signing_key, subject_secret
from scalple.ledger.layout import os_errors
from scalple.proxy.logs import setup_logging
from scalple.proxy.workers import WorkerRole, fetch_metrics

log = logging.getLogger("scalple.supervisor")
START_SECONDS = 120.0  # a worker opening a large lane recovers its journal before it listens
STEADY_SECONDS = 30.0  # a worker that lived this long starts its restart count afresh
GIVE_UP = 5  # restarts in a row that fail or die young before the supervisor gives up


class WorkerFailed(ScalpleError):
    """A worker could not start (its own message is on stderr above)."""

    def __init__(self, index: int, code: int) -> None:
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        super().__init__(f"worker {index} could not start: it {how}; its message is above")
        self.index = index
        self.exit_code = code if code > 0 else 1


@dataclass
class Worker:
    """A running worker process and the supervisor's end of its channel."""

    index: int
    process: asyncio.subprocess.Process
    channel: asyncio.StreamWriter
    started: float


def send(process: asyncio.subprocess.Process, sig: int) -> None:
    """Signal a worker not yet known to have exited. Not Popen.send_signal: it reaps a worker
    that has just exited, and asyncio's watcher then reports exit code 255 in place of its own."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, sig)


def probe_listen(listen: str) -> str:
    """Fail now if `listen` is taken (SO_REUSEPORT would let workers share it with a stranger);
    a port 0 becomes the port the kernel picks, so that all workers share one."""
    host, _, port = listen.rpartition(":")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
            chosen = probe.getsockname()[1]
    except OSError as exc:
        raise ConfigError(f"cannot listen on {listen}: {exc.strerror or exc}") from exc
    return f"{host}:{chosen}"


class WorkersCollector(Collector):
    """Every worker's metrics, each sample labelled with its worker, plus the supervisor's."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        sup = self.supervisor
        running = sorted(list(sup.workers))  # a copy: the supervisor's loop changes it
        yield GaugeMetricFamily("scalple_workers", "Worker processes running", len(running))
        yield CounterMetricFamily(
            "scalple_worker_restarts", "Workers restarted after they died", sup.restarts
        )
        families: dict[str, Metric] = {}
        for index in running:
            try:
                text = fetch_metrics(sup.run_dir, index)
            except OSError as exc:  # restarting: its samples are missing from this scrape
                log.debug("metrics of worker %d not read: %s", index, exc)
                continue
            for family in text_string_to_metric_families(text):
                merged = families.get(family.name)
                if merged is None:
                    merged = families[family.name] = Metric(
                        family.name, family.documentation, family.type, family.unit
                    )
                label = str(index)
                merged.samples.extend(
                    s._replace(labels={**s.labels, "worker": label}) for s in family.samples
                )
        yield from families.values()


class Supervisor:
    """Starts, watches and stops the workers of one `scalple serve --workers N`."""

    def __init__(self, config: Config, source: Path | None, flags: Mapping[str, Any]) -> None:
        self.config = config
        self.count = int(config["workers"])
        self.source = source
        self.flags = {k: v for k, v in flags.items() if v is not None}
        self.run_dir = Path(tempfile.mkdtemp(prefix="scalple-workers-"))  # 0700, ours
        self.workers: dict[int, Worker] = {}
        self.restarts = 0
        self.stopping = asyncio.Event()
        self.failure: ScalpleError | None = None

    async def start(self, index: int) -> Worker:
        """Start worker `index` and wait until it listens; WorkerFailed if it exits first."""
        ours, theirs = socket.socketpair()
        role = WorkerRole(
            index, self.count, self.run_dir, self.source, self.flags, channel=theirs.fileno()
        )
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "scalple.proxy.worker",
                role.to_json(),
                pass_fds=(theirs.fileno(),),
                start_new_session=True,  # a terminal's ^C reaches the supervisor, which stops all
            )
        finally:
            theirs.close()
        reader, channel = await asyncio.open_unix_connection(sock=ours)
        said: bytes | None
        try:
            said = await asyncio.wait_for(reader.readline(), START_SECONDS)
        except TimeoutError:
            said = None
        if said != b"ready\n":
            channel.close()
            if said is None:  # hung, neither listening nor gone
                send(process, signal.SIGKILL)
            raise WorkerFailed(index, await process.wait())
        log.info("worker %d started (pid %d)", index, process.pid)
        return Worker(index, process, channel, time.monotonic())

    async def keep(self, worker: Worker) -> None:
        """Restart `worker` whenever it dies, until the supervisor stops or gives up."""
        failures = 0
        while True:
            code = await worker.process.wait()
            self.workers.pop(worker.index, None)
            worker.channel.close()
            if code == 0:  # stopped as told: perhaps by a SIGTERM to the whole process group
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), 1.0)
            if self.stopping.is_set():
                return
            how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
            log.error("worker %d (pid %d) %s; restarting it", worker.index, worker.process.pid, how)
            lived = time.monotonic() - worker.started
            failures = 0 if lived > STEADY_SECONDS else failures + 1
            while True:
                if failures >= GIVE_UP:
                    log.error("worker %d keeps failing; stopping every worker", worker.index)
                    self.failure = WorkerFailed(worker.index, code)
                    self.stopping.set()
                    return
                with contextlib.suppress(TimeoutError):
                    backoff = min(30.0, 0.5 * (2**failures - 1))
                    await asyncio.wait_for(self.stopping.wait(), backoff)
                if self.stopping.is_set():
                    return
                try:
                    worker = await self.start(worker.index)
                except WorkerFailed as exc:
                    log.error("%s", exc)
                    code = exc.exit_code
                    failures += 1
                    continue
                break
            if self.stopping.is_set():  # it started as the others were being stopped
                await self.stop_workers([worker])
                return
            self.restarts += 1
            self.workers[worker.index] = worker

    def signal_workers(self, sig: signal.Signals) -> None:
        for worker in list(self.workers.values()):
            send(worker.process, sig)

    async def stop_workers(self, workers: list[Worker]) -> None:
        """SIGTERM: each drains within drain_seconds; one that outlasts that by far is killed."""
        for worker in workers:
            send(worker.process, signal.SIGTERM)
        bound = float(self.config["drain_seconds"]) + 30.0
        for worker in workers:
            try:
                await asyncio.wait_for(worker.process.wait(), bound)
            except TimeoutError:
                log.error("worker %d did not stop; killing it", worker.index)
                send(worker.process, signal.SIGKILL)
                await worker.process.wait()
            worker.channel.close()

    def serve_metrics(self) -> None:
        listen = self.config["metrics_listen"]
        if not listen:
            return
        registry = CollectorRegistry()
        registry.register(WorkersCollector(self))
        host, _, port = listen.rpartition(":")
        try:
            start_http_server(int(port), addr=host.strip("[]"), registry=registry)
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on {listen}: {exc.strerror}") from exc

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.signal_workers, signal.SIGHUP)
        self.flags["listen"] = probe_listen(self.config["listen"])
        with os_errors("preparing the signing key"):
            # Made once here, not raced for by N workers opening their lanes.
            key_dir = resolve_key_dir(self.config["key_dir"])
            signing_key(key_dir)
            subject_secret(key_dir)
        self.serve_metrics()
        started = await asyncio.gather(
            *(self.start(i) for i in range(self.count)), return_exceptions=True
        )
        failed = [r for r in started if isinstance(r, BaseException)]
        running = [r for r in started if isinstance(r, Worker)]
        if failed:
            await self.stop_workers(running)
            raise failed[0]
        log.info(
            "%d workers listening on %s, ledger lanes under %s",
            self.count,
            self.flags["listen"],
            self.config.ledger_dir / "lanes",
        )
        keepers = []
        for worker in running:
            self.workers[worker.index] = worker
            keepers.append(loop.create_task(self.keep(worker)))
        await self.stopping.wait()
        log.info("stopping %d workers", len(self.workers))
        await self.stop_workers(list(self.workers.values()))
        await asyncio.wait(keepers, timeout=START_SECONDS)  # a worker starting is stopped too
        if self.failure is not None:
            raise self.failure
        log.info("stopped")


def supervise(config: Config, source: Path | None, flags: Mapping[str, Any]) -> None:
    """Run `scalple serve` as config["workers"] worker processes until SIGTERM/SIGINT.

    `source` and `flags` are where the settings came from: each worker loads them itself."""
    setup_logging(config["log_format"], config["log_level"])
    supervisor = Supervisor(config, source, flags)
    try:
        asyncio.run(supervisor.run())
    finally:
        shutil.rmtree(supervisor.run_dir, ignore_errors=True)
