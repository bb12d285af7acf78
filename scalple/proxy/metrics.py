"""Prometheus metrics for `scalple serve`, on an opt-in address.

Per-statement counts are plain integers read at scrape time (an `inc()` per statement would
take a lock on the hot path); the audit write latency is observed once per ledger batch.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


@dataclass
class Counts:
    """What the proxy counts as it goes; read by the collector when scraped."""

    statements: int = 0
    unattributed: int = 0
    refused: int = 0
    connections_total: int = 0
    connections_open: int = 0
    loop_lag: float = 0.0  # seconds the event loop was late over the last interval
    loop_lag_max: float = 0.0
    offloaded: int = 0  # messages read off the event loop (too large to read on it)


def ledger_bytes(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue  # sealed and removed while we looked
    return total


class Latency:
    """A histogram a statement can afford to observe: a bisect and three additions, no lock
    (the event loop is its only writer; a scrape reads it whole, at worst one sample late)."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds
        self.n += 1

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        cumulative, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            cumulative.append((floatToGoString(bound), running))  # type: ignore[no-untyped-call]
        return HistogramMetricFamily(name, documentation, buckets=cumulative, sum_value=self.total)


class _Collector(Collector):
    def __init__(self, counts: Counts, ledger: Path) -> None:
        self.counts = counts
        self.ledger = ledger
        self.sink: object | None = None  # the ledger sink, for its write and sync counts
        self.latency: Latency | None = None

    def collect(self) -> Iterator[Metric]:
        c = self.counts
        yield CounterMetricFamily("scalple_statements", "Statements recorded", c.statements)
        yield CounterMetricFamily(
            "scalple_unattributed_statements",
            "Statements recorded with no identity",
            c.unattributed,
        )
        yield CounterMetricFamily(
            "scalple_refused_statements", "Statements refused and not forwarded", c.refused
        )
        yield CounterMetricFamily(
            "scalple_connections", "Client connections accepted", c.connections_total
        )
        yield GaugeMetricFamily(
            "scalple_open_connections", "Client connections open now", c.connections_open
        )
        yield GaugeMetricFamily(
            "scalple_ledger_bytes", "Bytes under the ledger directory", ledger_bytes(self.ledger)
        )
        if self.latency is not None:
            yield self.latency.family(
                "scalple_audit_write_seconds",
                "Time from handing a statement's audit record to the ledger until it is durable",
            )
        writes, syncs = getattr(self.sink, "writes", None), getattr(self.sink, "syncs", None)
        if isinstance(writes, int) and isinstance(syncs, int):
            yield CounterMetricFamily(
                "scalple_ledger_writes", "write() calls appending to the journal", writes
            )
            yield CounterMetricFamily(
                "scalple_ledger_syncs", "fdatasync() calls making the journal durable", syncs
            )
        yield GaugeMetricFamily(
            "scalple_event_loop_lag_seconds",
            "How late the event loop ran a timer, over the last interval",
            c.loop_lag,
        )
        yield GaugeMetricFamily(
            "scalple_event_loop_lag_max_seconds", "The most the event loop was late", c.loop_lag_max
        )
        yield CounterMetricFamily(
            "scalple_offloaded_messages",
            "Client messages too large to read on the event loop, read by a worker thread",
            c.offloaded,
        )


class Metrics:
    """The proxy's counters, the audit write latency histogram, and their registry."""

    def __init__(self, ledger: Path) -> None:
        self.counts = Counts()
        self.registry = CollectorRegistry()
        self.collector = _Collector(self.counts, ledger)
        self.registry.register(self.collector)
        self.write_latency = Latency(LATENCY_BUCKETS)
        self.collector.latency = self.write_latency

    def exposition(self) -> bytes:
        """What a scrape of /metrics would read now (the supervisor of workers gathers it)."""
        return generate_latest(self.registry)

    def serve(self, listen: str) -> None:
        """Expose /metrics on HOST:PORT from a background thread."""
        host, _, port = listen.rpartition(":")
        start_http_server(int(port), addr=host.strip("[]"), registry=self.registry)
