"""The watch rules without a proxy: judge and its SQL form agree, live counters agree with the
offline profile on the same ledger, settings parse, alert outputs speak their formats."""

from __future__ import annotations

import http.server
import itertools
import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import duckdb
import msgspec
import pytest

from scalple import config as cfg
from scalple.dsar.query import connect
from scalple.errors import ConfigError
from scalple.events import AuditEvent
from scalple.ledger import open_sink
from scalple.ledger.keys import subject_secret
from scalple.ledger.query import events_view
from scalple.watch.delivery import Webhook, rfc5424
from scalple.watch.findings import EPOCH, flagged
from scalple.watch.profile import DAY_US, HOUR_US, build_baselines, profile
from scalple.watch.rules import METRICS, Baseline, candidate_sql, judge
from scalple.watch.settings import WatchSettings
from scalple.watch.synthetic import Desk, Pairs, customer, history, office_days
from scalple.watch.today import Feed, Today, load
from tests.cli import run


def test_judge_and_its_sql_form_flag_the_same_rows() -> None:
    settings = WatchSettings.defaults()
    con = duckdb.connect()
    for rule in settings.rules:
        m = METRICS[rule.name]
        con.execute(
            f"CREATE OR REPLACE TABLE t ({m} DOUBLE, own_{m} DOUBLE, own_days INT, "
            f"peer_{m} DOUBLE, peers INT)"
        )
        peers = [(3, 9), (50, 2)]
        grid = itertools.product(grid_v(rule.floor), [0, 1, 2, 7], [5, 12], peers)
        rows = [(v, u, d, p, n) for v, u, d, (p, n) in grid]
        con.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?)", rows)
        sql = {
            r
            for r in con.execute(
                f"SELECT * FROM t WHERE {candidate_sql(rule, settings)}"
            ).fetchall()
        }
        py = {r for r in rows if judge(rule, r[0], Baseline(r[1], r[2], r[3], r[4], "g"), settings)}
        assert sql == py and py, rule.name


def grid_v(floor: float) -> list[float]:
    return [0, floor - 1, floor, floor + 1, 3 * floor, 100 * floor + 7]


def test_scores_rank_by_how_far_over_the_highest_threshold() -> None:
    s = WatchSettings.defaults()
    rule = s.rule("subjects")
    assert rule is not None
    base = Baseline(own_usual=7, own_days=30, peers_p99=12, peers=100, group="g")
    assert judge(rule, 21, base, s) is None  # above the floor but not above 3 x 7
    v = judge(rule, 41, base, s)
    assert v is not None and v.threshold == 21 and v.score == pytest.approx(41 / 21, abs=1e-3)
    assert v.severity == "medium"
    assert judge(rule, 400, base, s).severity == "high"  # type: ignore[union-attr]
    young = Baseline(own_usual=6, own_days=3, peers_p99=12, peers=100, group="g")
    assert judge(rule, 400, young, s) is None  # warming up
    few = Baseline(own_usual=6, own_days=30, peers_p99=900, peers=2, group="g")
    assert judge(rule, 41, few, s) is not None  # too few peers: own baseline alone


# -- live and offline on one ledger ---------------------------------------------------------------

PEOPLE = [f"p{i}@corp.example" for i in range(8)]


def _today_events(secret: bytes, day: int) -> list[AuditEvent]:
    """One day: p0 browses strangers, p1 exports in bulk, p2 is denied, p3 works at 3 a.m.,
    the others do their usual few lookups."""
    pairs, desk, out = Pairs("today"), Desk(), []
    at = day * DAY_US + 10 * HOUR_US
    for j in range(25):
        out += pairs.lookup(PEOPLE[0], at + j, customer(secret, 9_000 + j), desk)
    st, oc = pairs.lookup(PEOPLE[1], at + 100, customer(secret, 1_000_040), desk)
    out += [st, msgspec.structs.replace(oc, rows=50_000, command_tag="COPY 50000")]
    for j in range(5):
        st, oc = pairs.lookup(PEOPLE[2], at + 200 + j, customer(secret, 1_000_080), desk)
        out += [st, msgspec.structs.replace(oc, status="error", sqlstate="42501", rows=None)]
    for j in range(8):
        night = day * DAY_US + 3 * HOUR_US + j
        out += pairs.lookup(PEOPLE[3], night, customer(secret, 1_000_120 + j % 3), desk)
    for k in range(4, 8):
        out += pairs.lookup(PEOPLE[k], at + 300 + k, customer(secret, 1_000_000 + 40 * k), desk)
    return sorted(out, key=lambda e: e.ts_start)


@pytest.fixture(scope="module")
def ledger(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Path, int, list[AuditEvent]]]:
    root = tmp_path_factory.mktemp("watch")
    secret = subject_secret(root / "keys")
    sink = open_sink(root / "ledger", "os", key_dir=str(root / "keys"))
    day = time.time_ns() // 1000 // DAY_US - 3
    for events in history(secret, PEOPLE, office_days(day, 25)):
        sink.append_sync(events)
    today = _today_events(secret, day)
    sink.append_sync(today)
    sink.close()
    yield root / "ledger", day, today


def _offline(
    ledger: Path, day: int, s: WatchSettings | None = None
) -> set[tuple[str, str, float, tuple[str, ...]]]:
    s = s or WatchSettings.defaults()
    con = connect()
    events_view(con, ledger)
    profile(con, s, 0, (day + 1) * DAY_US)
    build_baselines(con, s)
    return {(f.actor, f.rule, f.score, tuple(f.event_ids)) for f in flagged(con, s, day, day)}


def test_live_counters_flag_exactly_what_the_offline_profile_flags(
    ledger: tuple[Path, int, list[AuditEvent]],
) -> None:
    path, day, events = ledger
    offline = _offline(path, day)
    assert {(a, r) for a, r, _, _ in offline} == {
        (PEOPLE[0], "new_subjects"), (PEOPLE[0], "subjects"), (PEOPLE[1], "bulk"),
        (PEOPLE[1], "rows"), (PEOPLE[2], "refusals"), (PEOPLE[3], "off_hours"),
    }  # fmt: skip
    s = WatchSettings.defaults()
    base, earlier = load(path, s, day, day * DAY_US)
    assert earlier == []
    today, feed = Today(s, base), Feed(s)
    for e in events:
        feed.apply(today, e)
    live = {(f.actor, f.rule, f.score, tuple(f.event_ids)) for a in PEOPLE for f in today.judge(a)}
    assert live == offline


def test_days_and_hours_are_local_alike_live_and_offline(
    ledger: tuple[Path, int, list[AuditEvent]],
) -> None:
    path, day, events = ledger
    s = WatchSettings.defaults(timezone="Asia/Tokyo")  # history 09-17 UTC is 18-02 there
    offline = _offline(path, day, s)
    base, _ = load(path, s, day, day * DAY_US - 9 * HOUR_US)
    today, feed = Today(s, base), Feed(s)
    for e in events:
        feed.apply(today, e)
    live = {(f.actor, f.rule, f.score, tuple(f.event_ids)) for a in PEOPLE for f in today.judge(a)}
    assert live == offline and (PEOPLE[0], "new_subjects") in {(a, r) for a, r, _, _ in live}


def test_a_watcher_starting_mid_day_picks_up_what_was_recorded_before(
    ledger: tuple[Path, int, list[AuditEvent]],
) -> None:
    path, day, _ = ledger
    s = WatchSettings.defaults()
    from scalple.watch.today import replay

    base, earlier = load(path, s, day, (day + 1) * DAY_US)
    today = Today(s, base)
    replay(today, earlier)
    got = {(f.actor, f.rule, f.score) for a in PEOPLE for f in today.judge(a)}
    assert got == {(a, r, sc) for a, r, sc, _ in _offline(path, day)}


# -- settings ------------------------------------------------------------------------------------


def test_rules_in_toml_merge_over_the_defaults_and_config_show_lists_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "s.toml"
    f.write_text('[watch]\nallow = ["svc-*"]\n\n[watch.rules.subjects]\nfloor = 30\n'
                 "[watch.rules.off_hours]\nenabled = false\n")  # fmt: skip
    c = cfg.load(f, env={})
    s = WatchSettings.from_config(c)
    assert s.rule("subjects").floor == 30 and s.rule("subjects").own_factor == 3  # type: ignore[union-attr]
    assert s.rule("off_hours") is None and s.allowed("svc-etl") and not s.allowed("ann")
    _, out, _ = run(capsys, "config", "show", "--json", "-c", str(f))
    shown = {x["name"]: x for x in json.loads(out)["settings"]}
    assert (
        shown["rules"]["section"] == "watch" and shown["rules"]["value"]["subjects"]["floor"] == 30
    )
    assert shown["allow"]["origin"].startswith("file:")
    f.write_text("[watch]\npeer_by = 'team'\n")
    with pytest.raises(ConfigError, match=r"s.toml:2: \[watch\] peer_by"):
        cfg.load(f, env={})
    f.write_text("[watch.rules.subjects]\nfloo = 3\n")
    with pytest.raises(ConfigError, match="unknown parameter 'floo'"):
        cfg.load(f, env={})


# -- outputs -------------------------------------------------------------------------------------


def test_syslog_messages_are_rfc5424_with_the_finding_as_structured_data() -> None:
    alert = {"alert_id": "alert-1", "actor": 'a"b', "rule": "subjects", "severity": "high",
             "score": 2.5, "summary": "looked up 41"}  # fmt: skip
    msg = rfc5424(alert, "host", 7).decode()
    assert msg.startswith("<106>1 ")  # facility 13 (log audit) * 8 + 2 (critical)
    assert ' host scalple 7 alert [scalple@32473 alert_id="alert-1" actor="a\\"b" ' in msg
    assert msg.endswith('\ufeffa"b: looked up 41')


class _Hook(http.server.BaseHTTPRequestHandler):
    got: ClassVar[list[dict[str, Any]]] = []
    status = 200

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).got.append(json.loads(body))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_the_webhook_posts_alerts_and_drops_one_the_endpoint_refuses() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = Webhook(f"http://127.0.0.1:{server.server_port}/", bound=10, timeout=5)
    try:
        hook.send({"alert_id": "a1"})
        deadline = time.monotonic() + 30
        while hook.delivered < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [a["alert_id"] for a in _Hook.got] == ["a1"] and hook.dropped == 0
        _Hook.status = 400
        hook.send({"alert_id": "a2"})
        while hook.dropped < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert hook.dropped == 1 and not hook.queue
    finally:
        hook.close()
        server.shutdown()


# -- the command ---------------------------------------------------------------------------------


def test_anomalies_exit_codes(
    ledger: tuple[Path, int, list[AuditEvent]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _, _ = ledger
    keys = f"--public-key={path.parent / 'keys' / 'signing.pub'}"
    code, out, err = run(capsys, "anomalies", "--ledger", str(path), keys, "--format", "json",
                         "--since", "30d")  # fmt: skip
    assert code == 1, err
    assert [f["actor"] for f in json.loads(out)["findings"]][:1] == [PEOPLE[0]]
    code, out, _ = run(capsys, "anomalies", "--ledger", str(path), keys, "--since", "30d",
                       "--actor", PEOPLE[5])  # fmt: skip
    assert code == 0 and "nothing flagged" in out
    page = tmp_path / "findings.html"
    code, _, _ = run(capsys, "anomalies", "--ledger", str(path), keys, "--since", "30d",
                     "--format", "html", "--out", str(page))  # fmt: skip
    assert code == 1 and f"<td>{PEOPLE[0]}</td><td>new_subjects</td>" in page.read_text()
    code, out, _ = run(capsys, "anomalies", "--ledger", str(tmp_path / "none"), keys, "-f", "json")
    assert code == 2 and json.loads(out)["result"] == "error"


def test_the_watcher_alerts_once_per_rule_and_day_and_rolls_over_to_the_next_day(
    ledger: tuple[Path, int, list[AuditEvent]], tmp_path: Path
) -> None:
    from scalple.watch.delivery import Delivery, JsonLines
    from scalple.watch.live import Watcher

    path, day, _ = ledger
    now = [day * DAY_US + 20 * HOUR_US]  # started the evening of the day in the ledger
    written: list[AuditEvent] = []
    out = tmp_path / "alerts.jsonl"
    w = Watcher(
        WatchSettings.defaults(), path, written.extend, Delivery([JsonLines(str(out))]),
        clock=lambda: now[0],
    ).start()  # fmt: skip
    try:
        assert w.wait_idle(60)
        time.sleep(1.5)  # one judging pass
        first = {(e.actor, json.loads(e.detail or "{}")["rule"]) for e in written}
        assert (PEOPLE[0], "new_subjects") in first and (PEOPLE[2], "refusals") in first
        secret = subject_secret(path.parent / "keys")
        pairs, desk = Pairs("next"), Desk()
        at = (day + 1) * DAY_US + 10 * HOUR_US
        nxt: list[AuditEvent] = []
        for j in range(25):
            nxt += pairs.lookup(PEOPLE[5], at + j, customer(secret, 7_000 + j), desk)
        now[0] = (day + 1) * DAY_US + 11 * HOUR_US
        w.observe(nxt[: len(nxt) // 2])
        w.observe(nxt[len(nxt) // 2 :])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(e.actor == PEOPLE[5] for e in written):
            time.sleep(0.1)
    finally:
        w.close()
    alerts = [json.loads(line) for line in out.read_text().splitlines()]
    assert [a["alert_id"] for a in alerts] == [e.event_id for e in written]
    assert all(e.kind == "alert" for e in written)
    keys = [(a["actor"], a["rule"], a["evidence"]["day"]) for a in alerts]
    assert len(keys) == len(set(keys))  # once per actor, rule and day (severity only rose)
    late = [a for a in alerts if a["actor"] == PEOPLE[5]]
    assert late and late[0]["rule"] == "new_subjects" and late[0]["evidence"]["value"] == 25
    assert late[0]["evidence"]["day"] == (EPOCH + timedelta(days=day + 1)).isoformat()
