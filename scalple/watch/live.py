"""Live alerts inside `scalple serve`: a thread that follows what the ledger commits.

The proxy's loop only appends committed records to a bounded queue (`observe`); a watcher
thread feeds them into today's counters, judges the actors they touched every second, writes
each alert to the ledger as an `alert` event (the alert history is chained like the rest) and
then hands it to the outputs. Past the bound, records are left unwatched, counted and logged;
statements never wait for any of this. Baselines are read from the ledger (DuckDB, the same
SQL as `scalple anomalies`) at start and again each new day, in a thread of their own.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from scalple.config import Config
from scalple.errors import LedgerError
from scalple.events import AuditEvent
from scalple.ledger.sink import AuditSink
from scalple.watch.delivery import Delivery, outputs_of
from scalple.watch.findings import Finding, iso
from scalple.watch.rules import METRICS
from scalple.watch.settings import SEVERITIES, WatchSettings
from scalple.watch.today import Baselines, Feed, Today, load, replay

log = logging.getLogger("scalple.watch")
EVALUATE_SECONDS: Final = 1.0
IDLE_SECONDS: Final = 0.2
Write = Callable[[Sequence[AuditEvent]], None]


def now_us() -> int:
    return time.time_ns() // 1000


def alert_event(alert: dict[str, Any], ts: int) -> AuditEvent:
    actor = str(alert["actor"])
    return AuditEvent(
        kind="alert",
        event_id=str(alert["alert_id"]),
        ts_start=ts,
        actor=actor,
        actor_email=actor if "@" in actor else None,
        status="ok",
        detail=json.dumps(alert, separators=(",", ":")),
    )


class Watcher:
    """The live rules over one ledger. `observe` is the only method the proxy's loop calls."""

    def __init__(
        self,
        settings: WatchSettings,
        ledger: Path,
        write: Write,
        delivery: Delivery,
        *,
        bound: int = 100_000,
        clock: Callable[[], int] = now_us,
    ) -> None:
        self.settings, self.ledger, self.write, self.delivery = settings, ledger, write, delivery
        self.bound, self.clock = bound, clock
        self.feed = Feed(settings)
        self.queue: collections.deque[Sequence[AuditEvent]] = collections.deque()
        self._in = 0  # written by the loop only
        self._out = 0  # written by the watcher thread only
        self.unwatched = 0
        self.alerts: collections.Counter[str] = collections.Counter()
        self.raised: dict[tuple[str, str], int] = {}
        self.today: Today | None = None
        self.ready = threading.Event()
        self._fresh: Baselines | None = None
        self._stop = threading.Event()
        self._min_rank = SEVERITIES.index(settings.alert_severity)
        self._thread = threading.Thread(target=self._run, name="scalple-watch", daemon=True)

    # -- on the proxy's loop ------------------------------------------------------------------

    def observe(self, events: Sequence[AuditEvent]) -> None:
        """Committed records: queue them, or count them unwatched past the bound. O(1)."""
        if self._in - self._out >= self.bound:
            if not self.unwatched:
                log.warning(
                    "live rules are %d records behind; records are left unwatched until they "
                    "catch up (scalple anomalies still sees them)", self.bound,
                )  # fmt: skip
            self.unwatched += len(events)
            return
        self.queue.append(events)
        self._in += len(events)

    # -- the watcher thread -------------------------------------------------------------------

    def start(self) -> Watcher:
        self._thread.start()
        return self

    def close(self, wait: float = 10.0) -> None:
        """Judge what is queued, stop the thread, close the outputs. A thread still reading the
        ledger's history after `wait` s is left behind (it is a daemon): shutdown goes on."""
        self._stop.set()
        self._thread.join(wait)
        if self._thread.is_alive():
            log.warning("live rules did not stop within %.0f s; stopping without them", wait)
        self.delivery.close()

    def _run(self) -> None:
        started = self.clock()
        try:
            base, earlier = load(self.ledger, self.settings, self.feed.day_of(started), started)
        except Exception as exc:  # the proxy goes on; only its live alerts are off
            log.error("live alerts are off: the ledger's history could not be read: %s", exc)
            self._drain_forever()
            return
        self.today = Today(self.settings, base)
        replay(self.today, earlier)
        self.ready.set()
        last = 0.0
        while True:
            stopping = self._stop.is_set()
            worked = self._take()
            if stopping or time.monotonic() - last >= EVALUATE_SECONDS:
                self._evaluate()
                last = time.monotonic()
            if stopping:
                return
            if not worked:
                self._stop.wait(IDLE_SECONDS)
                self._new_day(self.feed.day_of(self.clock()))

    def _drain_forever(self) -> None:
        self.ready.set()
        while not self._stop.wait(IDLE_SECONDS):
            while self.queue:
                self._out += len(self.queue.popleft())

    def _take(self) -> bool:
        worked = False
        while self.queue:
            events = self.queue.popleft()
            self._out += len(events)
            worked = True
            for e in events:
                self._new_day(self.feed.day_of(e.ts_start))
                assert self.today is not None
                self.feed.apply(self.today, e)
        if self._fresh is not None and self.today is not None:
            if self._fresh.day == self.today.day:
                self.today.base = self._fresh
                self.today.dirty.update(self.today.actors)
            self._fresh = None
        return worked

    def _new_day(self, day: int) -> None:
        today = self.today
        if today is None or day <= today.day:
            return
        self._evaluate()
        seen = {a: set(s) for a, s in today.base.seen.items()}
        for actor, ad in today.actors.items():
            seen.setdefault(actor, set()).update(ad.subjects)
        # Until the new baselines are read, yesterday's stand in (subjects seen kept current).
        old = today.base
        stand_in = Baselines(day, old.own, old.peers, old.hours, old.group_hours, seen)
        self.today = Today(self.settings, stand_in)
        self.raised.clear()
        threading.Thread(target=self._reload, args=(day,), daemon=True).start()

    def _reload(self, day: int) -> None:
        try:
            self._fresh = load(self.ledger, self.settings, day, self.clock())[0]
        except Exception as exc:
            log.warning("baselines for the new day not read (yesterday's kept): %s", exc)

    def _evaluate(self) -> None:
        today = self.today
        if today is None:
            return
        dirty, today.dirty = today.dirty, set()
        for actor in dirty:
            for finding in today.judge(actor):
                self._raise(finding)

    def _raise(self, f: Finding) -> None:
        rank = SEVERITIES.index(f.severity)
        key = (f.actor, f.rule)
        if rank < self._min_rank or self.raised.get(key, -1) >= rank:
            return
        self.raised[key] = rank
        ts = self.clock()
        alert = {"alert_id": f"alert-{uuid.uuid4().hex}", "raised_at": iso(ts), **f.as_json()}
        try:
            self.write([alert_event(alert, ts)])
        except LedgerError as exc:
            log.error("alert %s could not be written to the ledger: %s", alert["alert_id"], exc)
        self.alerts[f.rule] += 1
        log.warning("alert %s (%s, score %.2f): %s: %s", f.rule, f.severity, f.score,
                    f.actor, f.summary)  # fmt: skip
        self.delivery.send(alert)

    def wait_idle(self, timeout: float) -> bool:
        """True once everything observed has been judged (for tests and the bench)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready.is_set() and self._out >= self._in and not self.queue:
                return True
            time.sleep(0.05)
        return False


class WatchCollector(Collector):
    """Prometheus: alerts raised per rule, records left unwatched, webhook drops."""

    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher

    def collect(self) -> Iterator[CounterMetricFamily]:
        w = self.watcher
        alerts = CounterMetricFamily(
            "scalple_alerts", "Live alerts raised, per rule", labels=["rule"]
        )
        for rule in METRICS:
            alerts.add_metric([rule], w.alerts.get(rule, 0))
        yield alerts
        yield CounterMetricFamily(
            "scalple_watch_unwatched_records",
            "Committed records the live rules skipped because their queue was full",
            w.unwatched,
        )
        hook = w.delivery.webhook
        yield CounterMetricFamily(
            "scalple_alerts_webhook_dropped",
            "Alerts the webhook queue dropped (past its bound, or refused by the endpoint)",
            hook.dropped if hook else 0,
        )
        yield CounterMetricFamily(
            "scalple_alerts_undelivered", "Alerts an output failed to take", w.delivery.failed
        )


class ObservedSink:
    """An `AuditSink` that tells the watcher what it committed: statements once durable,
    outcomes as they are handed over. Everything else is the wrapped sink's."""

    def __init__(self, inner: AuditSink, observe: Callable[[Sequence[AuditEvent]], None]) -> None:
        self.inner, self.observe = inner, observe

    async def write_ahead(self, events: Sequence[AuditEvent]) -> None:
        await self.inner.write_ahead(events)
        self.observe(events)

    def submit(
        self,
        events: Sequence[AuditEvent],
        done: Callable[[BaseException | None], None] | None = None,
    ) -> None:
        if done is None:
            self.inner.submit(events)
            self.observe(events)
            return
        observe = self.observe

        def settled(error: BaseException | None) -> None:
            if error is None:
                observe(events)
            done(error)

        self.inner.submit(events, settled)

    def record(self, event: AuditEvent) -> None:
        self.inner.record(event)
        self.observe((event,))

    async def aclose(self) -> None:
        await self.inner.aclose()


class Watch:
    """What `serve` holds: the wrapped sink to give the proxy, the collector, and `close`."""

    def __init__(self, watcher: Watcher, sink: ObservedSink) -> None:
        self.watcher, self.sink = watcher, sink

    def collector(self) -> Collector:
        return WatchCollector(self.watcher)

    def close(self) -> None:
        self.watcher.close()


def attach(config: Config, sink: Any) -> Watch | None:
    """Start live alerts over the ledger `sink` writes (None when `live_alerts` is off).
    Alerts are written through `sink.append_sync` from the watcher thread."""
    if not config["live_alerts"]:
        return None
    watcher = Watcher(
        WatchSettings.from_config(config),
        config.ledger_dir,
        sink.append_sync,
        outputs_of(config),
        bound=int(config["watch_queue"]),
    ).start()
    return Watch(watcher, ObservedSink(sink, watcher.observe))
