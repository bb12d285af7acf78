"""The real proxy under pgbench, killed with SIGKILL again and again: no committed work unaudited.

Each pgbench transaction inserts a random marker; afterwards every marker PostgreSQL committed
must appear in a statement event the ledger holds, and `scalple verify` must pass.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from scalple.cli.main import app
from scalple.sandbox import Sandbox, client
from tests.proxyproc import ProxyProc, read_events

SCRIPT = """\\set r random(1, 999999999999)
BEGIN;
INSERT INTO crash_marks (r) VALUES (:r);
UPDATE crash_counter SET n = n + 1;
COMMIT;
"""
KILLS = 3

pytestmark = pytest.mark.skipif(shutil.which("pgbench") is None, reason="pgbench is not installed")


def _pgbench(proxy: ProxyProc, script: Path, seconds: int) -> subprocess.Popen[str]:
    argv, env = client(
        "pgbench", proxy.port, "-n", "-c", "4", "-T", str(seconds), "-f", str(script)
    )
    return subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _processed(output: str) -> int:
    m = re.search(r"number of transactions actually processed: (\d+)", output)
    return int(m.group(1)) if m else 0


@pytest.mark.parametrize("durability", ["fsync", "os"])
def test_sigkill_under_pgbench_loses_no_committed_statement(
    sandbox: Sandbox, tmp_path: Path, durability: str
) -> None:
    with psycopg.connect(sandbox.dsn("app_user"), autocommit=True) as db:
        db.execute("DROP TABLE IF EXISTS crash_marks, crash_counter")
        db.execute("CREATE TABLE crash_marks (r bigint)")
        db.execute("CREATE TABLE crash_counter (n bigint)")
        db.execute("INSERT INTO crash_counter VALUES (0)")
    script = tmp_path / "marks.sql"
    script.write_text(SCRIPT)
    args = ("--durability", durability)
    proxy = ProxyProc(sandbox.pg_port, tmp_path / "ledger", extra_args=args).start()
    counted = 0
    for _ in range(KILLS):
        bench = _pgbench(proxy, script, 60)
        time.sleep(2.5)
        proxy.stop(signal.SIGKILL)
        out, _ = bench.communicate(timeout=60)
        counted += _processed(out)
        proxy.proc = None
        proxy.start()  # same port, same ledger: recovery runs here
    bench = _pgbench(proxy, script, 2)
    try:
        out, _ = bench.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        bench.kill()
        pytest.fail(f"pgbench hung after the restarts; proxy log:\n{proxy.log_text()[-3000:]}")
    counted += _processed(out)
    assert proxy.stop() == 0, proxy.log_text()

    with psycopg.connect(sandbox.dsn("app_user")) as db:
        committed = {r for (r,) in db.execute("SELECT r FROM crash_marks")}
    events = read_events(tmp_path / "ledger")
    audited = {
        int(m.group(1))
        for e in events
        if e["kind"] == "statement"
        for m in [re.search(r"crash_marks \(r\) VALUES \((\d+)\)", e["statement"] or "")]
        if m
    }
    assert counted > 0 and len(committed) >= counted
    assert committed <= audited, f"{len(committed - audited)} committed inserts have no event"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    incomplete = [e for e in events if e["kind"] == "outcome" and e["status"] == "incomplete"]
    assert incomplete, "statements in flight at each kill are marked incomplete"

    pub = str(tmp_path / "keys" / "signing.pub")
    result = CliRunner().invoke(app, ["verify", str(tmp_path / "ledger"), "--public-key", pub])
    assert result.exit_code == 0, result.output
