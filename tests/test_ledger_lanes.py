"""Ledger lanes: several writers, one lane each, read and verified as one ledger.

Lanes are written by the ledger's own sink (as `scalple serve --workers N` does, one lane a
worker); every reader runs through the CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import pytest

from scalple.analysis.subjects import subject_hash
from scalple.dsar.export import check_export
from scalple.errors import LedgerError
from scalple.events import AuditEvent
from scalple.ledger import open_sink
from scalple.ledger.checkpoint import read_checkpoint
from scalple.ledger.keys import load_public_key, signing_key, subject_secret
from scalple.ledger.lanes import lane_dir, lane_name, ledger_lanes
from scalple.ledger.layout import Layout
from scalple.ledger.query import ledger_view
from scalple.ledger.verify import verify_ledger
from scalple.ledger.writer import LedgerSink
from tests.cli import run

T0 = 1_735_689_600_000_000  # 2025-01-01
HOUR = 3_600_000_000
LANES = ("db1-w0", "db1-w1", "db2-w0")
CONFIG = """
[ledger]
ledger = "{ledger}"
key_dir = "{keys}"

[analysis]
subject_columns = {{ "customers.id" = "customer" }}
"""


class Lanes:
    """A ledger whose lanes are written by one sink each, open side by side as workers are."""

    def __init__(self, tmp: Path) -> None:
        self.root, self.keys, self.config = tmp / "ledger", tmp / "keys", tmp / "scalple.toml"
        self.config.write_text(CONFIG.format(ledger=self.root, keys=self.keys))
        self.secret = subject_secret(self.keys)
        self.n = 0

    def open(self, directory: Path) -> LedgerSink:
        return open_sink(directory, "os", key_dir=str(self.keys), seal_bytes=1 << 40, derived=False)

    def customer(self, i: int) -> str:
        return subject_hash(self.secret, "customer", str(i))

    def pair(self, actor: str, who: int | None = None) -> list[AuditEvent]:
        """A statement reading customer `who` and its outcome, one hour after the last; by
        default odd-numbered statements read customer 42, even ones customer 7."""
        self.n += 1
        who = (42 if self.n % 2 else 7) if who is None else who
        st = AuditEvent(
            kind="statement",
            event_id=f"{self.n:032x}",
            ts_start=T0 + self.n * HOUR,
            actor=actor,
            identity_source="proxy_auth",
            statement="SELECT * FROM customers WHERE id = $1",
            audit_class="READ",
            tables=("public.customers",),
            columns=("public.customers.id",),
            subjects=(self.customer(who),),
        )
        oc = AuditEvent(
            kind="outcome",
            event_id=st.event_id,
            ts_start=st.ts_start,
            ts_end=st.ts_start + 500,
            duration_us=500,
            rows=1,
            status="ok",
        )
        return [st, oc]

    def write_round(
        self, names: tuple[str, ...], *, seal: bool, who: int | None = None
    ) -> dict[str, list[str]]:
        """Open every lane at once, write one statement a lane in turn (times interleave across
        lanes), close them (sealing, or leaving the journal as a crash would)."""
        sinks = {name: self.open(lane_dir(self.root, name)) for name in names}
        ids: dict[str, list[str]] = {name: [] for name in names}
        for _ in range(3):
            for name, sink in sinks.items():
                events = self.pair(f"{name}@corp.example", who)
                sink.append_sync(events)
                ids[name].append(events[0].event_id)
        for sink in sinks.values():
            sink.close(seal=seal)
        return ids

    def cli(self, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
        code, out, err = run(capsys, *args, "-c", str(self.config))
        try:
            return code, json.loads(out)
        except ValueError:
            raise AssertionError(out + err) from None

    def verify(self, capsys: pytest.CaptureFixture[str]) -> tuple[int, Any]:
        return self.cli(capsys, "verify", "--json")


def build(tmp: Path) -> Lanes:
    led = Lanes(tmp)
    led.write_round(LANES, seal=True)  # a sealed segment in every lane
    led.write_round(LANES, seal=False)  # and a journal under signed heads
    return led


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("lanes-template")
    build(tmp)
    return tmp


@pytest.fixture
def lanes(template: Path, tmp_path: Path) -> Iterator[Lanes]:
    copy = tmp_path / "copy"
    shutil.copytree(template, copy)
    led = Lanes(copy)
    led.n = 18
    yield led


def shown(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """The accesses as an answer shows them (the index holds no record hashes for proofs)."""
    return [{k: v for k, v in a.items() if k != "proof"} for a in answer["accesses"]]


def lane(led: Lanes, name: str) -> Layout:
    return Layout(lane_dir(led.root, name))


def caught(led: Lanes, capsys: pytest.CaptureFixture[str], name: str, what: str) -> dict[str, Any]:
    code, report = led.verify(capsys)
    assert (code, report["result"]) == (1, "tampered"), report
    bad = report["first_bad"]
    assert bad["lane"] == name and what in bad["what"], bad
    assert name in bad["where"], bad
    return dict(bad)


# -- names ------------------------------------------------------------------------------------


def test_lane_names_and_directories(tmp_path: Path) -> None:
    assert lane_name("db1", 0) == "db1-w0"
    assert lane_name("db1.example.com", 3) == "db1.example.com-w3"
    assert lane_name("odd host/name", 1) == "odd_host_name-w1"
    assert lane_dir(tmp_path, "db1-w0") == tmp_path / "lanes" / "db1-w0"
    for bad in ("..", ".", "a/b", ""):
        with pytest.raises(LedgerError):
            lane_dir(tmp_path, bad)


# -- verify -------------------------------------------------------------------------------------


def test_every_lane_verifies_and_signs_the_lanes_there(
    lanes: Lanes, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = lanes.verify(capsys)
    assert (code, report["result"]) == (0, "intact"), report
    assert [r["lane"] for r in report["lanes"]] == sorted(LANES)
    assert report["events"] == 2 * 2 * 3 * len(LANES)
    assert report["segments"] == len(LANES) and report["journal_events"] == 6 * len(LANES)
    assert all(r["last_seq"] == 12 for r in report["lanes"])  # each lane its own chain
    assert report["lanes_named"] == sorted(LANES)
    seg = lane(lanes, "db1-w1").sealed()[0]
    cp, _ = read_checkpoint(seg.checkpoint)
    assert cp.lanes == tuple(sorted(LANES))
    code, out, _ = run(capsys, "verify", "-c", str(lanes.config))
    assert code == 0 and "in 3 lanes" in out and "lane db2-w0: 12 events" in out


def test_a_record_edited_in_one_lane_is_named_with_its_lane(
    lanes: Lanes, capsys: pytest.CaptureFixture[str]
) -> None:
    _, journal = lane(lanes, "db1-w1").journals()[0]
    data = journal.read_bytes()
    journal.write_bytes(data.replace(b"db1-w1@corp", b"mallory@co", 1))
    bad = caught(lanes, capsys, "db1-w1", "")
    assert bad["where"].startswith("lanes/db1-w1/journal/") and bad["seq"] == 7


def test_a_lane_journal_truncated_is_caught(
    lanes: Lanes, capsys: pytest.CaptureFixture[str]
) -> None:
    _, journal = lane(lanes, "db2-w0").journals()[0]
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines[:-2]))  # the last statement and outcome gone
    caught(lanes, capsys, "db2-w0", "events were removed")


def test_a_lane_segment_changed_is_caught(lanes: Lanes, capsys: pytest.CaptureFixture[str]) -> None:
    parquet = lane(lanes, "db1-w0").sealed()[0].parquet
    os.chmod(parquet, 0o644)
    data = bytearray(parquet.read_bytes())
    data[len(data) // 2] ^= 1
    parquet.write_bytes(bytes(data))
    caught(lanes, capsys, "db1-w0", "")


def test_a_lane_deleted_whole_is_caught(lanes: Lanes, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.rmtree(lane_dir(lanes.root, "db1-w1"))
    bad = caught(lanes, capsys, "db1-w1", "missing, but lane db1-w0's signed checkpoints")
    assert bad["where"] == "lanes/db1-w1"


def test_a_lane_emptied_of_its_ledger_is_caught(
    lanes: Lanes, capsys: pytest.CaptureFixture[str]
) -> None:
    for sub in ("journal", "segments"):
        shutil.rmtree(lane_dir(lanes.root, "db2-w0") / sub)
    caught(lanes, capsys, "db2-w0", "holds no ledger")


def test_a_lane_being_created_is_no_alarm(lanes: Lanes, capsys: pytest.CaptureFixture[str]) -> None:
    (lanes.root / "lanes" / "db3-w0").mkdir()  # a worker starting: no journal/ yet
    code, report = lanes.verify(capsys)
    assert (code, report["result"]) == (0, "intact"), report
    assert any("db3-w0 holds no ledger yet" in w for w in report["warnings"])


def test_a_segment_moved_between_lanes_is_caught(
    lanes: Lanes, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every lane starts at seq 1, so a lane's segment has a twin name in every other lane."""
    a, b = lane(lanes, "db1-w0").sealed()[0], lane(lanes, "db2-w0").sealed()[0]
    assert a.parquet.name == b.parquet.name
    for path in (b.parquet, b.checkpoint):
        os.chmod(path, 0o644)
    shutil.copyfile(a.parquet, b.parquet)
    shutil.copyfile(a.checkpoint, b.checkpoint)
    caught(lanes, capsys, "db2-w0", "")


def test_a_lane_finds_the_key_rotations_of_its_ledger(
    lanes: Lanes, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "keys", "rotate", "-c", str(lanes.config))
    assert code == 0, out + err
    assert list((lanes.root / "keys").glob("*.rotation"))  # one set, for the whole ledger
    assert not list(lane_dir(lanes.root, "db1-w0").glob("keys/*.rotation"))
    lanes.write_round(("db1-w0",), seal=True)  # reopened under the new key: recovers, seals
    code, report = lanes.verify(capsys)  # the trusted key is the new one now
    assert (code, report["result"]) == (0, "intact"), report
    code, report = lanes.cli(capsys, "verify", str(lane_dir(lanes.root, "db1-w0")), "--json")
    assert (code, report["result"]) == (0, "intact"), report


def test_a_saved_checkpoint_is_checked_against_its_own_lane(
    lanes: Lanes, capsys: pytest.CaptureFixture[str]
) -> None:
    cp = lane(lanes, "db1-w0").sealed()[0].checkpoint
    code, _, err = run(capsys, "verify", "--checkpoint", str(cp), "-c", str(lanes.config))
    assert code == 2 and "lane" in err
    one = lane_dir(lanes.root, "db1-w0")
    code, report = lanes.cli(capsys, "verify", str(one), "--checkpoint", str(cp), "--json")
    assert (code, report["result"]) == (0, "intact"), report


# -- a ledger from before lanes, and one that grew lanes ------------------------------------------


def test_a_ledger_without_lanes_signs_and_verifies_as_before(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    led = Lanes(tmp_path)
    sink = led.open(led.root)
    sink.append_sync(led.pair("alice@corp.example", 42))
    sink.close()
    seg = Layout(led.root).sealed()[0]
    assert b"lanes" not in seg.checkpoint.read_bytes()  # the bytes signed before lanes
    code, report = led.verify(capsys)
    assert (code, report["result"]) == (0, "intact"), report
    assert report["lanes"] == [] and report["last_seq"] == 2


def test_a_ledger_that_grew_lanes_reads_its_old_files_as_one_more_lane(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    led = Lanes(tmp_path)
    sink = led.open(led.root)  # one process, before workers
    sink.append_sync(led.pair("alice@corp.example", 42))
    sink.close()
    led.write_round(LANES[:2], seal=False, who=42)  # then two workers
    assert [lane.name for lane in ledger_lanes(led.root)] == [".", *LANES[:2]]
    code, report = led.verify(capsys)
    assert (code, report["result"]) == (0, "intact"), report
    assert report["lanes_named"] == [".", *LANES[:2]]
    code, answer = led.cli(capsys, "dsar", "--json", "-s", "customers.id=42")
    assert code == 0 and {a["lane"] for a in answer["accesses"]} == {".", *LANES[:2]}
    for sub in ("journal", "segments"):  # the old files removed: the lanes name them
        shutil.rmtree(led.root / sub)
    code, report = led.verify(capsys)
    assert code == 1 and report["first_bad"]["lane"] == ".", report


# -- readers ------------------------------------------------------------------------------------


def test_dsar_subject_returns_every_access_of_every_lane_in_time_order(
    lanes: Lanes, capsys: pytest.CaptureFixture[str]
) -> None:
    code, answer = lanes.cli(capsys, "dsar", "--json", "-s", "customers.id=42")
    assert code == 0, answer
    accesses = answer["accesses"]
    # Odd-numbered statements read customer 42: 9 of the 18 written, spread over every lane.
    assert [a["event_id"] for a in accesses] == [f"{n:032x}" for n in range(17, 0, -2)]
    assert {a["lane"] for a in accesses} == set(LANES)
    ts = [a["ts"] for a in accesses]
    assert ts == sorted(ts, reverse=True)
    assert all(a["status"] == "ok" and a["rows"] == 1 for a in accesses)  # outcomes merged
    sealed = [a for a in accesses if a["proof"][0]["segment"]]
    assert sealed and all(p["segment"].startswith("lanes/") for a in sealed for p in a["proof"])
    assert answer["ledger"]["lanes"] == 3 and answer["verification"]["result"] == "intact"


def test_index_is_per_lane_and_answers_as_reading_everything(
    lanes: Lanes, capsys: pytest.CaptureFixture[str]
) -> None:
    _, direct = lanes.cli(capsys, "dsar", "--json", "-s", "customers.id=42")
    code, done = lanes.cli(capsys, "index", "update", "--json")
    assert code == 0 and [d["lane"] for d in done] == sorted(LANES)
    assert all(d["upto"] == 6 for d in done)  # each lane's sealed segment, seq 1..6
    for name in LANES:
        assert (lane_dir(lanes.root, name) / "index").is_dir()
    code, indexed = lanes.cli(capsys, "dsar", "--json", "-s", "customers.id=42")
    assert code == 0 and shown(indexed) == shown(direct)
    assert indexed["index"].count("up to seq 6") == 3
    code, status = lanes.cli(capsys, "index", "status", "--json")
    assert code == 0 and all(s["indexed_upto"] == 6 for s in status)


def test_index_compact_merges_within_each_lane(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    led = Lanes(tmp_path)
    for _ in range(3):
        led.write_round(LANES[:2], seal=True)  # three small segments a lane
    code, result = led.cli(capsys, "index", "compact", "--json")
    assert code == 0, result
    assert [(r["lane"], r["segments_before"], r["segments_after"]) for r in result] == [
        (name, 3, 1) for name in LANES[:2]
    ]
    merged = lane(led, LANES[0]).sealed()
    assert len(merged) == 1
    cp, _ = read_checkpoint(merged[0].checkpoint)
    assert cp.lanes == LANES[:2]
    code, report = led.verify(capsys)
    assert (code, report["result"]) == (0, "intact"), report
    shutil.rmtree(lane_dir(led.root, LANES[1]))
    code, report = led.verify(capsys)
    assert code == 1 and report["first_bad"]["lane"] == LANES[1], report


def test_the_ledger_view_and_dsar_actor_read_all_lanes(
    lanes: Lanes, capsys: pytest.CaptureFixture[str]
) -> None:
    con = duckdb.connect()
    ledger_view(con, lanes.root)
    rows = con.execute("SELECT lane, count(*) FROM events GROUP BY lane ORDER BY lane").fetchall()
    assert rows == [(name, 12) for name in sorted(LANES)]
    order = con.execute(
        "SELECT event_id FROM events WHERE kind = 'statement' ORDER BY ts_start, lane, seq"
    ).fetchall()
    assert [r[0] for r in order] == [f"{n:032x}" for n in range(1, 19)]
    code, answer = lanes.cli(capsys, "dsar", "--json", "--actor", "db2-w0@corp.example")
    assert code == 0 and answer["statements_total"] == 6
    assert {s["lane"] for s in answer["statements"]} == {"db2-w0"}


def test_anomalies_read_every_lane(lanes: Lanes, capsys: pytest.CaptureFixture[str]) -> None:
    code, report = lanes.cli(
        capsys, "anomalies", "--format", "json", "--since", "2025-01-01", "--until", "2025-01-02"
    )
    assert code in (0, 1), report
    assert report["ledger"]["lanes"] == 3
    assert report["verification"]["result"] == "intact"
    shutil.rmtree(lane_dir(lanes.root, "db1-w0"))
    code, report = lanes.cli(
        capsys, "anomalies", "--format", "json", "--since", "2025-01-01", "--until", "2025-01-02"
    )
    assert code == 2 and "db1-w0" in report["error"], report


def test_signed_heads_name_the_lanes_too(lanes: Lanes) -> None:
    heads = lane(lanes, "db1-w0").heads(7).read_bytes().splitlines()
    named = {tuple(msgspec.json.decode(h)["lanes"]) for h in heads}
    assert named == {tuple(sorted(LANES))}


def test_an_html_report_over_lanes_checks_out_against_the_ledger(
    lanes: Lanes, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    report = tmp_path / "report.html"
    code, _, err = run(capsys, "dsar", "-c", str(lanes.config), "-s", "customers.id=42",
                       "-f", "html", "-o", str(report))  # fmt: skip
    assert code == 0, err
    key = load_public_key(lanes.keys / "signing.pub")
    checked = check_export(report, key, lanes.root)
    assert checked.ok and checked.against_ledger, checked.problems
    assert checked.records == 18 and checked.unsealed == 8  # 9 accesses, 4 in the journals
    other = lane(lanes, "db2-w0").sealed()[0]  # the same segment name in another lane
    mixed = report.read_text().replace("lanes/db1-w0/", "lanes/db2-w0/")
    forged = tmp_path / "forged.html"
    forged.write_text(mixed)
    assert other.parquet.name in mixed
    assert not check_export(forged, key, lanes.root).ok


def test_readers_beside_lanes_being_written_sealed_and_added_never_cry_wolf(
    tmp_path: Path,
) -> None:
    """Two workers append and seal, a third starts midway; verify and the view, run meanwhile,
    see every lane intact and never fewer events than before."""
    led = Lanes(tmp_path)
    key = signing_key(led.keys).public  # made before the workers start, as serve does
    quick = {"seal_bytes": 32768, "seal_seconds": 3600.0, "head_seconds": 0.05}
    lock = threading.Lock()

    def worker(name: str) -> None:
        sink = open_sink(lane_dir(led.root, name), "os", key_dir=str(led.keys), **quick)
        try:
            for _ in range(300):
                with lock:
                    events = led.pair(f"{name}@corp.example")
                sink.append_sync(events)
        finally:
            sink.close()

    threads = [threading.Thread(target=worker, args=(name,)) for name in LANES]
    for t in threads[:2]:
        t.start()
    while not all((lane_dir(led.root, name) / "journal").is_dir() for name in LANES[:2]):
        time.sleep(0.01)  # the workers' lanes made (a hang here: pytest-timeout says so)
    seen, rounds = 0, 0
    while rounds < 3 or any(t.is_alive() for t in threads):
        if rounds == 2:
            threads[2].start()
        report = verify_ledger(led.root, key)
        assert report.first_bad is None, str(report.first_bad)
        con = duckdb.connect()
        ledger_view(con, led.root)
        count = con.execute("SELECT count(*) FROM events").fetchone()
        con.close()
        assert count is not None and count[0] >= seen
        seen, rounds = count[0], rounds + 1
    for t in threads:
        t.join()
    report = verify_ledger(led.root, key)
    assert report.first_bad is None, str(report.first_bad)
    assert [r.lane for r in report.lanes] == sorted(LANES)
    assert all(r.segments > 1 and r.events == 600 for r in report.lanes)  # sealed as it went
    assert report.lanes_named == sorted(LANES)
