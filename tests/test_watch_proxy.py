"""Insider detection end to end: weeks of ordinary work in the ledger, then a day through a real
`scalple serve` where one colleague browses customers nobody gave them. `scalple anomalies`
flags them (and no one else), `dsar` resolves the evidence, and the live rules alert."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest

from scalple.ledger import open_sink
from scalple.ledger.keys import subject_secret
from scalple.sandbox import Sandbox, free_port
from scalple.watch.synthetic import DAY_US, Desk, history, office_days
from tests.proxyproc import ProxyProc

TABLE = "watch_customers"
APP = "branch-app"
SNOOP = "clerk0@bank.example"
PEERS = [f"clerk{i}@bank.example" for i in range(1, 9)]
BATCH = "svc-batch"
LAST = "clerk9@bank.example"  # browses last: once their alert is raised, all before was judged
PORTFOLIO = 40
FIRST = 1000  # colleague k's own customers: FIRST + k*PORTFOLIO .. + PORTFOLIO-1
NOBODYS = range(1, 31)  # customers no colleague has a case for


def _seed(ledger: Path, days: int = 20) -> None:
    """Ordinary weeks before today, written through the ledger writer with the proxy's keys."""
    keys = ledger.parent / "keys"
    secret = subject_secret(keys)
    sink = open_sink(ledger, "os", key_dir=str(keys))
    today = time.time_ns() // 1000 // DAY_US
    actors = [SNOOP, *PEERS, BATCH, LAST]
    for events in history(
        secret, actors, office_days(today, days), portfolio=PORTFOLIO, desk=Desk(
            application_name=APP), first_customer=FIRST,
    ):  # fmt: skip
        sink.append_sync(events)
    sink.close()


def _config(tmp: Path, sandbox: Sandbox, watch: str = "") -> Path:
    path = tmp / "scalple.toml"
    path.write_text(
        "[analysis]\n"
        f'catalog_dsn = "{sandbox.dsn("postgres")}"\n'
        f'subject_columns = {{ "{TABLE}.id" = "customer" }}\n\n'
        "[watch]\n" + watch
    )
    return path


@pytest.fixture
def customers(sandbox: Sandbox) -> None:
    sandbox.psql(
        f"DROP TABLE IF EXISTS {TABLE}; CREATE TABLE {TABLE} (id int PRIMARY KEY, name text); "
        f"INSERT INTO {TABLE} SELECT i, 'name ' || i FROM generate_series(1, 2000) i; "
        f"GRANT ALL ON {TABLE} TO app_user",
        dbname="app",
    )


def _work(proxy: ProxyProc, actor: str, ids: Sequence[int]) -> int:
    with psycopg.connect(
        proxy.dsn(), autocommit=True, application_name=APP, options=f"-c scalple.user={actor}"
    ) as conn:
        for i in ids:
            conn.execute(f"SELECT id, name FROM {TABLE} WHERE id = {int(i)}").fetchall()
    return len(ids)


def _own(k: int, n: int = 4) -> list[int]:
    return [FIRST + k * PORTFOLIO + j for j in range(n)]


def _scalple(config: Path, ledger: Path, *args: str) -> tuple[int, Any]:
    env = {**os.environ, "SCALPLE_KEY_DIR": str(ledger.parent / "keys")}
    out = subprocess.run(
        [sys.executable, "-m", "scalple", *args, "-c", str(config), "--ledger", str(ledger)],
        capture_output=True, text=True, timeout=180, env=env,
    )  # fmt: skip
    assert out.stdout.strip(), out.stderr
    return out.returncode, json.loads(out.stdout)


def _wait(check: Callable[[], bool], seconds: float = 90) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def _alerts(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_colleague_browsing_other_customers_is_flagged_and_alerted(
    sandbox: Sandbox,
    make_proxy: Callable[..., ProxyProc],
    tmp_path: Path,
    customers: None,
) -> None:
    ledger = tmp_path / "ledger"
    _seed(ledger)
    alerts = tmp_path / "alerts.jsonl"
    config = _config(tmp_path, sandbox, f'allow = ["{BATCH}"]\nalerts_file = "{alerts}"\n')
    proxy = make_proxy("--config", str(config), upstream=sandbox.pg_port, ledger=ledger)
    sent = _work(proxy, SNOOP, [*_own(0), *NOBODYS])
    for k, peer in enumerate(PEERS, start=1):
        sent += _work(proxy, peer, _own(k))
    sent += _work(proxy, BATCH, range(100, 160))  # a batch job: many customers, allow-listed
    sent += _work(proxy, LAST, range(300, 330))
    proxy.statements(until=lambda rows: sum(TABLE in (r["statement"] or "") for r in rows) >= sent)

    code, report = _scalple(config, ledger, "anomalies", "--since", "1d", "--format", "json")
    assert code == 1, report
    assert set(report) == {"findings", "ledger", "verification"}
    findings = report["findings"]
    assert {f["actor"] for f in findings} == {SNOOP, LAST}, findings
    assert [f["score"] for f in findings] == sorted((f["score"] for f in findings), reverse=True)
    new = next(f for f in findings if f["rule"] == "new_subjects" and f["actor"] == SNOOP)
    assert set(new) == {"actor", "rule", "score", "severity", "first_ts", "last_ts", "summary",
                        "evidence", "event_ids"}  # fmt: skip
    assert new["severity"] == "high" and new["evidence"]["value"] == len(NOBODYS)
    assert f"touched {len(NOBODYS)} data subjects new to them" in new["summary"]
    assert "this person's usual day" in new["summary"]
    assert "peers' 99th percentile" in new["summary"]
    assert len(new["event_ids"]) == len(NOBODYS) == new["evidence"]["statements"]

    code, actor = _scalple(config, ledger, "dsar", "--actor", SNOOP, "--json", "--limit", "1000")
    assert code == 0
    recorded = {s["event_id"]: s for s in actor["statements"]}
    for event_id in new["event_ids"]:
        assert event_id in recorded, event_id  # the evidence resolves to the statements
    assert all(recorded[e]["subjects"] == 1 for e in new["event_ids"])

    # Live: the same rule raised the alert, it is in the ledger, and dsar --actor shows it.
    assert _wait(lambda: any(a["actor"] == LAST for a in _alerts(alerts))), proxy.log_text()[-3000:]
    live = [a for a in _alerts(alerts) if a["actor"] == SNOOP]
    assert {a["actor"] for a in _alerts(alerts)} == {SNOOP, LAST}  # peers and the batch job: none
    assert any(a["rule"] == "new_subjects" and a["severity"] == "high" for a in live)
    assert _wait(
        lambda: (
            {a["alert_id"] for a in live}
            <= {e["event_id"] for e in proxy.events() if e["kind"] == "alert"}
        )
    )
    code, actor = _scalple(config, ledger, "dsar", "--actor", SNOOP, "--json")
    assert {a["alert_id"] for a in live} <= {a["event_id"] for a in actor["alerts"]}

    # Without the allow-list, the batch job's day would have been flagged too.
    plain = _config(tmp_path, sandbox)
    code, report = _scalple(plain, ledger, "anomalies", "--since", "1d", "--format", "json")
    assert code == 1 and BATCH in {f["actor"] for f in report["findings"]}


def test_a_dead_webhook_loses_no_statement_and_no_alert_until_its_bound(
    sandbox: Sandbox,
    make_proxy: Callable[..., ProxyProc],
    tmp_path: Path,
    customers: None,
) -> None:
    ledger = tmp_path / "ledger"
    _seed(ledger)
    alerts = tmp_path / "alerts.jsonl"
    dead = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    config = _config(
        tmp_path, sandbox,
        f'alerts_file = "{alerts}"\nalerts_webhook = "{dead}"\nwebhook_queue = 2\n'
        "webhook_timeout = 1\n",
    )  # fmt: skip
    metrics = free_port()
    proxy = make_proxy(
        "--config", str(config), "--metrics-listen", f"127.0.0.1:{metrics}",
        upstream=sandbox.pg_port, ledger=ledger,
    )  # fmt: skip
    snoops = [SNOOP, *PEERS[:3]]  # four colleagues each raise two alerts: eight for a queue of 2
    sent = 0
    for k, actor in enumerate(snoops):
        sent += _work(proxy, actor, [*_own(k), *(i + 40 * k for i in NOBODYS)])
    rows = proxy.statements(
        until=lambda rows: sum(TABLE in (r["statement"] or "") for r in rows) >= sent
    )
    assert sum(TABLE in (r["statement"] or "") for r in rows) == sent  # no statement lost
    assert _wait(lambda: len(_alerts(alerts)) >= 2 * len(snoops)), proxy.log_text()[-3000:]
    raised = {a["alert_id"] for a in _alerts(alerts)}
    in_ledger = {e["event_id"] for e in proxy.events() if e["kind"] == "alert"}
    assert raised <= in_ledger  # every alert is in the ledger, delivered or not
    assert _wait(lambda: proxy.log_text().count("dropped alert") >= len(raised) - 2)
    log = proxy.log_text()
    dropped = [line for line in log.splitlines() if "dropped alert" in line]
    assert len(dropped) == len(raised) - 2  # all but the two the queue holds
    assert "is not taking alerts" in dropped[-1]
    scraped = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10).read()
    counters = dict(
        line.rsplit(" ", 1) for line in scraped.decode().splitlines() if line.startswith("scalple_")
    )
    by_rule = collections.Counter(a["rule"] for a in _alerts(alerts))
    assert float(counters['scalple_alerts_total{rule="new_subjects"}']) == by_rule["new_subjects"]
    assert float(counters["scalple_alerts_webhook_dropped_total"]) == len(dropped)
