"""Operating `scalple serve`: Prometheus metrics, SIGHUP reload, SIGTERM drain."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from scalple.sandbox import free_port
from tests.proxyproc import ProxyProc


def _metric(text: str, name: str) -> float:
    m = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
    assert m, f"{name} not in metrics"
    return float(m.group(1))


def test_prometheus_metrics(make_proxy: Callable[..., ProxyProc]) -> None:
    port = free_port()
    proxy = make_proxy("--metrics-listen", f"127.0.0.1:{port}")
    url = f"http://127.0.0.1:{port}/metrics"
    # The fixture's readiness probe connected too, perhaps not yet accepted when start() returned;
    # connections are accepted in order, so once this one is served the probe has been counted.
    with psycopg.connect(proxy.dsn()):
        pass
    before = _metric(
        urllib.request.urlopen(url, timeout=10).read().decode(), "scalple_connections_total"
    )
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        conn.execute("SELECT 1")
        conn.execute("SET scalple.user = 'alice@corp.example'")
        conn.execute("SELECT 2")
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    assert _metric(text, "scalple_statements_total") == 3
    assert _metric(text, "scalple_unattributed_statements_total") == 1
    assert _metric(text, "scalple_refused_statements_total") == 0
    assert _metric(text, "scalple_connections_total") - before == 1
    assert _metric(text, "scalple_ledger_bytes") > 0
    assert _metric(text, "scalple_audit_write_seconds_count") >= 3


def test_sighup_reloads_the_configuration(
    make_proxy: Callable[..., ProxyProc], tmp_path: Path
) -> None:
    config = tmp_path / "scalple.toml"
    config.write_text("[identity]\nrequire_identity = false\n")
    proxy = make_proxy("--config", str(config))
    assert proxy.proc is not None
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)

    config.write_text('[identity]\nrequire_identity = "maybe"\n')  # bad: nothing changes
    proxy.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "not reloaded" not in proxy.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert re.search(r"not reloaded: .*scalple.toml:2: .*require_identity", proxy.log_text())
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT 2").fetchone() == (2,)

    config.write_text("[identity]\nrequire_identity = true\n")
    proxy.proc.send_signal(signal.SIGHUP)
    while "configuration reloaded" not in proxy.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    with (
        psycopg.connect(proxy.dsn(), autocommit=True) as conn,
        pytest.raises(psycopg.errors.InvalidAuthorizationSpecification),
    ):
        conn.execute("SELECT 3")


def test_sigterm_lets_inflight_statements_finish_then_seals(
    make_proxy: Callable[..., ProxyProc],
) -> None:
    proxy = make_proxy()
    assert proxy.proc is not None
    results: list[object] = []

    def slow() -> None:
        with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
            results.append(conn.execute("SELECT 7 FROM pg_sleep(1.5) /*in_flight=''*/").fetchone())
            try:
                conn.execute("SELECT 8")
            except psycopg.OperationalError as exc:
                results.append(exc.sqlstate)

    idle = psycopg.connect(proxy.dsn(), autocommit=True)
    worker = threading.Thread(target=slow)
    worker.start()
    time.sleep(0.5)
    proxy.proc.send_signal(signal.SIGTERM)
    worker.join(20)
    assert results and results[0] == (7,), "the in-flight statement was cut"
    assert proxy.proc.wait(20) == 0
    with pytest.raises(psycopg.OperationalError):
        idle.execute("SELECT 1")
    idle.close()
    assert list(proxy.ledger.glob("segments/*.parquet")), "the journal was not sealed"
    verify = subprocess.run(
        [
            sys.executable,
            "-m",
            "scalple",
            "verify",
            str(proxy.ledger),
            "--public-key",
            str(proxy.ledger.parent / "keys" / "signing.pub"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    (inflight,) = [r for r in proxy.statements() if "in_flight" in str(r["statement"])]
    assert inflight["status"] == "ok" and inflight["rows"] == 1
