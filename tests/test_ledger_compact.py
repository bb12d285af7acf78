"""`scalple index compact` on real ledger files: merged segments verify, answer the same, resist
tampering, and a stop between any two steps leaves a ledger that verifies and counts once."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from scalple.analysis.subjects import subject_hash
from scalple.dsar.export import check_export
from scalple.dsar.index import open_index, update_index
from scalple.errors import LedgerError
from scalple.events import AuditEvent
from scalple.ledger import compact as compaction
from scalple.ledger import open_sink
from scalple.ledger.checkpoint import CompactedCheckpoint, read_checkpoint
from scalple.ledger.keys import load_public_key, load_signing_key, subject_secret
from scalple.ledger.layout import Layout
from scalple.ledger.query import quote
from scalple.ledger.writer import LedgerSink
from tests.cli import run

T0 = 1_735_689_600_000_000
CONFIG = """
[ledger]
ledger = "{ledger}"
key_dir = "{keys}"

[analysis]
subject_columns = {{ "customers.id" = "customer" }}
"""
SEGMENTS = 6
STATEMENTS = 7  # per segment: 14 events, the last outcome sealed in the next segment


def _event(n: int, subject: str, kind: str) -> AuditEvent:
    if kind == "statement":
        return AuditEvent(
            kind="statement",
            event_id=f"{n:032x}",
            ts_start=T0 + n * 60_000_000,
            actor=f"user{n % 3}@corp.example",
            identity_source="proxy_auth",
            statement="SELECT * FROM customers WHERE id = $1",
            audit_class="READ",
            tables=("public.customers",),
            subjects=(subject,),
            status="pending",
        )
    return AuditEvent(
        kind="outcome",
        event_id=f"{n:032x}",
        ts_start=T0 + n * 60_000_000,
        ts_end=T0 + n * 60_000_000 + 500,
        duration_us=500,
        rows=1,
        status="ok",
        subjects=(subject,),
    )


class Ledger:
    """Six sealed segments written by the real sink, a statement whose outcome is sealed in the
    next segment at each boundary, and a live journal after them."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.root, self.keys, self.config = tmp / "ledger", tmp / "keys", tmp / "scalple.toml"
        self.config.write_text(CONFIG.format(ledger=self.root, keys=self.keys))
        secret = subject_secret(self.keys)
        self.subjects = [subject_hash(secret, "customer", str(i)) for i in range(3)]
        n = 0
        carry: AuditEvent | None = None
        for _ in range(SEGMENTS):
            sink = self.open()
            events = [carry] if carry else []
            for _ in range(STATEMENTS):
                n += 1
                subject = self.subjects[n % 3]
                events.append(_event(n, subject, "statement"))
                events.append(_event(n, subject, "outcome"))
            carry = events.pop()
            sink.append_sync(events)
            sink.close()
        sink = self.open()
        sink.append_sync([carry] if carry else [])
        sink.close(seal=False)

    def open(self) -> LedgerSink:
        return open_sink(self.root, "os", key_dir=str(self.keys), seal_bytes=1 << 40)

    def segments(self) -> list[str]:
        return [s.parquet.name for s in Layout(self.root).segments()]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("compact-template")
    Ledger(root)
    return root


@pytest.fixture
def led(template: Path, tmp_path: Path) -> Iterator[Ledger]:
    shutil.copytree(template, tmp_path / "l")
    ledger = Ledger.__new__(Ledger)
    ledger.tmp = tmp_path / "l"
    ledger.root, ledger.keys = ledger.tmp / "ledger", ledger.tmp / "keys"
    ledger.config = ledger.tmp / "scalple.toml"
    ledger.config.write_text(CONFIG.format(ledger=ledger.root, keys=ledger.keys))
    secret = subject_secret(ledger.keys)
    ledger.subjects = [subject_hash(secret, "customer", str(i)) for i in range(3)]
    yield ledger


def verify(capsys: pytest.CaptureFixture[str], led: Ledger, *args: str) -> dict[str, Any]:
    code, out, err = run(capsys, "verify", "-c", str(led.config), "--json", *args)
    report = json.loads(out)
    assert code == (0 if report["result"] == "intact" else 1), out + err
    assert isinstance(report, dict)
    return report


def compact(capsys: pytest.CaptureFixture[str], led: Ledger, target: int = 30) -> dict[str, Any]:
    code, out, err = run(
        capsys, "index", "compact", "-c", str(led.config), "--json", "--target-events", str(target)
    )
    assert code == 0, out + err
    result = json.loads(out)
    assert isinstance(result, dict)
    return result


def answers(capsys: pytest.CaptureFixture[str], led: Ledger) -> list[Any]:
    """The subject and actor answers, without what names files (segment names change)."""
    out = []
    for args in (
        ["-s", "customers.id=1"],
        ["-s", "customers.id=2"],
        ["--actor", "user1@corp.example"],
    ):
        code, text, err = run(capsys, "dsar", "-c", str(led.config), "--json", *args)
        assert code == 0, text + err
        answer = json.loads(text)
        for key in ("verification", "ledger", "index"):
            answer.pop(key, None)
        for access in answer.get("accesses", []):
            access.pop("proof", None)
        out.append(answer)
    return out


def test_compaction_keeps_verify_green_and_answers_identical(
    led: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    before = answers(capsys, led)  # also builds the index
    assert len(before[0]["accesses"]) > 5
    result = compact(capsys, led)
    assert (result["segments_before"], result["segments_after"]) == (SEGMENTS, 3)
    report = verify(capsys, led)
    assert report["result"] == "intact" and report["segments"] == 3, report
    assert verify(capsys, led, "--deep")["result"] == "intact"
    cp, _ = read_checkpoint(Layout(led.root).segments()[0].checkpoint)
    assert isinstance(cp, CompactedCheckpoint) and len(cp.replaces) == 2
    assert open_index(led.root).stale is None  # the index followed the merges
    assert answers(capsys, led) == before
    # Merging merged segments again, and sealing after it (the sink chains to the old digest).
    assert compact(capsys, led, target=1000)["segments_after"] == 1
    sink = led.open()
    sink.append_sync([_event(999, led.subjects[1], "statement")])
    sink.close()
    assert verify(capsys, led)["result"] == "intact"
    assert len(answers(capsys, led)[0]["accesses"]) == len(before[0]["accesses"]) + 1


def test_a_live_sink_seals_after_compaction_without_breaking_the_chain(
    led: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    sink = led.open()  # its last checkpoint is in memory, as in a running proxy
    compact(capsys, led, target=1000)
    sink.append_sync([_event(500, led.subjects[0], "statement")])
    sink.close()
    assert verify(capsys, led)["result"] == "intact"


def test_a_checkpoint_saved_before_compaction_is_still_extended(
    led: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = led.tmp / "saved.checkpoint"
    shutil.copy(Layout(led.root).segments()[2].checkpoint, saved)
    compact(capsys, led, target=1000)
    report = verify(capsys, led, "--checkpoint", str(saved))
    assert report["result"] == "intact" and report["checkpoint_extended"] == saved.name


def test_a_changed_row_in_a_merged_segment_is_named(
    led: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    compact(capsys, led)
    path = Layout(led.root).segments()[1].parquet
    os.chmod(path, 0o644)
    con = duckdb.connect()
    con.execute(f"CREATE TABLE t AS SELECT * FROM read_parquet({quote(path)})")
    con.execute("UPDATE t SET actor = 'mallory' WHERE seq = 35")
    con.execute(f"COPY (SELECT * FROM t ORDER BY seq) TO {quote(path)} (FORMAT parquet)")
    con.close()
    bad = verify(capsys, led)["first_bad"]
    assert path.name in bad["where"] and bad["seq"] == 35, bad
    assert "hash" in bad["what"]


@pytest.mark.parametrize(
    ("change", "what"),
    [
        ("delete", "side file"),
        ("drop_line", "not the ones its checkpoint lists"),
    ],
)
def test_a_changed_side_file_is_named(
    led: Ledger, capsys: pytest.CaptureFixture[str], change: str, what: str
) -> None:
    compact(capsys, led)
    layout = Layout(led.root)
    side = layout.replaced(layout.segments()[0])
    if change == "delete":
        side.unlink()
    else:
        os.chmod(side, 0o644)
        side.write_bytes(side.read_bytes().splitlines(keepends=True)[0])
    bad = verify(capsys, led)["first_bad"]
    assert side.name in bad["where"] and what in bad["what"], bad


def test_a_merged_segment_dropping_events_cannot_be_signed_without_the_key(
    led: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    """Swapping in a merged segment that skips events, with the originals' checkpoints but no
    valid merged signature, is caught at the checkpoint."""
    compact(capsys, led)
    layout = Layout(led.root)
    cp_path = layout.segments()[0].checkpoint
    os.chmod(cp_path, 0o644)
    cp_path.write_bytes(cp_path.read_bytes().replace(b'"events":', b'"events":1'))
    bad = verify(capsys, led)["first_bad"]
    assert cp_path.name in bad["where"], bad


class Crash(Exception):
    pass


def test_a_stop_before_the_merged_checkpoint_leaves_the_originals(
    led: Ledger, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    before = answers(capsys, led)
    original = compaction.write_atomically

    def crash_at_commit(path: Path, data: bytes, mode: int, **kw: Any) -> None:
        if path.suffix == ".checkpoint":
            raise Crash
        original(path, data, mode, **kw)

    monkeypatch.setattr(compaction, "write_atomically", crash_at_commit)
    key = load_signing_key(led.keys)
    with pytest.raises(Crash):
        compaction.compact(led.root, key, target=30)
    monkeypatch.undo()
    layout = Layout(led.root)
    assert len(layout.superseded()) == 1 and len(layout.segments()) == SEGMENTS
    report = verify(capsys, led)
    assert report["result"] == "intact" and report["warnings"], report
    assert answers(capsys, led) == before
    result = compact(capsys, led)
    assert result["cleaned"] == 1 and result["segments_after"] == 3
    assert verify(capsys, led)["result"] == "intact"
    assert not list(layout.segment_dir.glob("*.compacting"))
    assert answers(capsys, led) == before


def test_a_stop_after_the_commit_counts_every_event_once(
    led: Ledger, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    update_index(led.root)
    before = answers(capsys, led)
    original = compaction._remove
    removed: list[str] = []

    def crash_midway(layout: Layout, seg: Any) -> None:
        if removed:
            raise Crash  # one original gone, the other still there with its checkpoint
        removed.append(seg.parquet.name)
        original(layout, seg)

    monkeypatch.setattr(compaction, "_remove", crash_midway)
    with pytest.raises(Crash):
        compaction.compact(led.root, load_signing_key(led.keys), target=30)
    monkeypatch.undo()
    layout = Layout(led.root)
    assert layout.superseded() and len(layout.segments()) == SEGMENTS - 1
    assert verify(capsys, led)["result"] == "intact"
    assert open_index(led.root).stale  # the index did not follow: it is not used, then rebuilt
    assert answers(capsys, led) == before
    result = compact(capsys, led)
    assert result["cleaned"] == 1 and result["segments_after"] == 3
    assert not layout.superseded()
    assert verify(capsys, led)["result"] == "intact"
    assert answers(capsys, led) == before


def test_a_tampered_ledger_is_never_compacted(
    led: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    path = Layout(led.root).segments()[1].parquet
    os.chmod(path, 0o644)
    with path.open("ab") as f:
        f.write(b"\0")
    with pytest.raises(LedgerError, match="differs from the digest"):
        compaction.compact(led.root, load_signing_key(led.keys), target=30)
    assert len(Layout(led.root).segments()) == SEGMENTS


def test_a_report_from_a_compacted_ledger_checks_out(
    led: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    compact(capsys, led)
    report = led.tmp / "report.html"
    args = ["dsar", "-c", str(led.config), "-s", "customers.id=1", "-f", "html", "-o", str(report)]
    assert run(capsys, *args)[0] == 0
    key = load_public_key(led.keys / "signing.pub")
    result = check_export(report, key, led.root)
    assert result.ok and result.against_ledger and result.records > 10, result.problems
