"""Start-up never deletes evidence, and the unsealed journal cannot be rewritten without the key.

Each test leaves a real ledger on disk in a state a crash or an attacker could leave it in, runs
`scalple verify`, opens the ledger again (the proxy's start-up), and runs `verify` once more.
"""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from scalple.ledger import open_sink
from scalple.ledger.canonical import GENESIS, chain, decode_line
from scalple.ledger.layout import Layout
from scalple.ledger.synthetic import statement
from scalple.ledger.writer import LedgerSink
from tests.cli import run
from tests.test_ledger import events


def sink(tmp: Path) -> LedgerSink:
    return open_sink(tmp / "ledger", "os", key_dir=tmp / "keys", head_seconds=3600)


def verify(capsys: pytest.CaptureFixture[str], tmp: Path) -> dict[str, object]:
    pub = str(tmp / "keys" / "signing.pub")
    code, out, err = run(capsys, "verify", str(tmp / "ledger"), "--public-key", pub, "--json")
    report = json.loads(out)
    assert isinstance(report, dict)
    assert code == (0 if report["result"] == "intact" else 1), out + err
    return report


def first_bad(capsys: pytest.CaptureFixture[str], tmp: Path) -> str:
    bad = verify(capsys, tmp)["first_bad"]
    assert isinstance(bad, dict), "the ledger verified intact"
    at = f", seq {bad['seq']}" if bad["seq"] is not None else ""
    return f"{bad['where']}{at}: {bad['what']}"


def sealed(tmp: Path, segments: int) -> None:
    """`segments` sealed segments of 3 events each."""
    for _ in range(segments):
        s = sink(tmp)
        s.append_sync([statement(i) for i in range(3)])
        s.close()


def written(tmp: Path, n: int = 5, *, segments: int = 0) -> None:
    """`segments` sealed segments of 3 events, then `n` events left in the journal (a crash),
    every one of them vouched for by a signed head."""
    sealed(tmp, segments)
    s = sink(tmp)
    s.append_sync([statement(i) for i in range(n)])
    s.sign_head()
    s.close(seal=False)


def journal(tmp: Path) -> Path:
    return Layout(tmp / "ledger").journals()[-1][1]


def rechained(path: Path, edit: object) -> None:
    """Rewrite a journal as someone without the key would: change records, renumber, recompute
    every hash so the chain holds. `edit` maps the list of events to the new list."""
    lines = path.read_bytes().splitlines()
    old = [decode_line(line) for line in lines]
    assert callable(edit)
    new = edit(old)
    seq, prev = old[0].seq, old[0].prev_hash
    out = []
    for event in new:
        line, prev = chain(event, seq, prev)
        out.append(line)
        seq += 1
    path.write_bytes(b"".join(out))


def quarantined(tmp: Path) -> list[str]:
    root = Layout(tmp / "ledger").quarantine_dir
    return sorted(str(p.relative_to(root)).split("/", 1)[1] for p in root.rglob("*") if p.is_file())


def actors(tmp: Path) -> list[object]:
    return [r["actor"] for r in events(tmp / "ledger") if r["kind"] == "statement"]


def system(tmp: Path) -> str:
    return " ".join(str(r["detail"]) for r in events(tmp / "ledger") if r["kind"] == "system")


# -- the signed head: a rewrite of the unsealed journal is caught ---------------------------------


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(
            lambda ev: [ev[0], msgspec.structs.replace(ev[1], actor="mallory"), *ev[2:]],
            id="actor changed",
        ),
        pytest.param(lambda ev: [ev[0], *ev[2:]], id="record deleted"),
        pytest.param(lambda ev: [ev[0], ev[2], ev[1], *ev[3:]], id="records reordered"),
    ],
)
def test_a_rechained_journal_fails_verify_and_is_never_sealed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: object
) -> None:
    written(tmp_path, segments=1)
    assert verify(capsys, tmp_path)["result"] == "intact"
    before = actors(tmp_path)
    rechained(journal(tmp_path), edit)
    bad = first_bad(capsys, tmp_path)
    assert bad.startswith("journal/00000000000000000004.jsonl, seq 4: ") and "4..8" in bad, bad
    code, out, err = run(
        capsys,
        "verify",
        str(tmp_path / "ledger"),
        "--public-key",
        str(tmp_path / "keys" / "signing.pub"),
        "--checkpoint",
        str(Layout(tmp_path / "ledger").segments()[0].checkpoint),
    )
    assert code == 1 and "seq 4: " in err and "4..8" in err, out + err

    sink(tmp_path).close()  # the proxy's next start: it must not seal the forgery
    segments = Layout(tmp_path / "ledger").segments()
    assert [(s.first_seq, s.last_seq) for s in segments][:1] == [(1, 3)]
    assert "mallory" not in actors(tmp_path) and actors(tmp_path) == before[:3]
    assert quarantined(tmp_path) == [
        "REASON",
        "journal/00000000000000000004.heads",
        "journal/00000000000000000004.jsonl",
    ]
    assert "kept aside" in system(tmp_path) and "4..8" in system(tmp_path)
    bad = first_bad(capsys, tmp_path)  # and moving files did not make it intact
    assert "quarantine/" in bad and "kept aside at start-up" in bad, bad


def test_records_removed_from_the_end_of_a_journal_are_caught(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    written(tmp_path)
    path = journal(tmp_path)
    path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:3]))
    bad = first_bad(capsys, tmp_path)
    assert "seq 1: the journal ends at seq 3" in bad and "events 1..5: events were removed" in bad
    sink(tmp_path).close()
    assert actors(tmp_path) == []  # vouched for by no head that holds: kept aside, not sealed
    assert "journal/00000000000000000001.jsonl" in quarantined(tmp_path)
    assert "quarantine/" in first_bad(capsys, tmp_path)


def test_a_forged_head_line_is_caught_and_the_records_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    written(tmp_path)
    heads = Layout(tmp_path / "ledger").heads(1)
    line = json.loads(heads.read_bytes().splitlines()[-1])
    line["last_seq"] = 2
    heads.write_bytes(heads.read_bytes() + json.dumps(line, separators=(",", ":")).encode() + b"\n")
    assert first_bad(capsys, tmp_path).startswith("journal/00000000000000000001.heads: line 2")
    sink(tmp_path).close()
    assert len(actors(tmp_path)) == 5
    assert "quarantine/" in first_bad(capsys, tmp_path)


def test_the_live_journal_removed_while_its_heads_remain_is_caught(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    written(tmp_path, segments=1)
    journal(tmp_path).unlink()
    assert "its journal is missing, but its signed heads remain" in first_bad(capsys, tmp_path)
    sink(tmp_path).close()
    assert "quarantine/" in first_bad(capsys, tmp_path)


def test_damage_in_the_middle_is_kept_aside_not_taken_for_a_torn_tail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    written(tmp_path)
    path = journal(tmp_path)
    data = bytearray(path.read_bytes())
    data[data.index(b"alice", data.index(b"\n") + 1)] ^= 0x20  # edit the second record
    path.write_bytes(bytes(data))
    assert "seq 2: hash does not match" in first_bad(capsys, tmp_path)
    sink(tmp_path).close()
    assert len(actors(tmp_path)) == 1  # the record before the damage, sealed
    kept = Layout(tmp_path / "ledger").quarantine_dir
    [copy] = kept.rglob("00000000000000000001.jsonl")
    assert copy.read_bytes() == bytes(data)  # the damaged journal, byte for byte
    assert "damaged at seq 2" in system(tmp_path)
    assert "quarantine/" in first_bad(capsys, tmp_path)


# -- start-up never deletes evidence ----------------------------------------------------------


def test_a_segment_whose_checkpoint_and_journal_are_gone_is_kept_aside(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sealed(tmp_path, 2)
    newest = Layout(tmp_path / "ledger").segments()[-1]
    newest.checkpoint.unlink()
    assert "segment has no checkpoint" in first_bad(capsys, tmp_path)
    sink(tmp_path).close()
    assert quarantined(tmp_path) == ["REASON", f"segments/{newest.parquet.name}"]
    bad = first_bad(capsys, tmp_path)
    assert newest.parquet.name in bad and "without checkpoint and without journal" in bad, bad
    assert "kept aside" in system(tmp_path)


def test_a_journal_that_does_not_continue_the_chain_is_kept_aside(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    written(tmp_path, segments=2)
    last = Layout(tmp_path / "ledger").segments()[-1]
    last.checkpoint.unlink()
    last.parquet.unlink()  # a whole segment removed: the journal after it has nothing to follow
    assert "events 4..6 are missing" in first_bad(capsys, tmp_path)
    sink(tmp_path).close()
    assert "journal/00000000000000000007.jsonl" in quarantined(tmp_path)
    assert "starts at seq 7, but the ledger continues at seq 4" in first_bad(capsys, tmp_path)


def test_a_leftover_journal_that_differs_from_its_sealed_segment_is_kept_aside(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sealed(tmp_path, 1)
    other = [chain(statement(9), 1, GENESIS)[0]]
    Layout(tmp_path / "ledger").journal(1).write_bytes(b"".join(other))
    assert verify(capsys, tmp_path)["result"] == "intact"  # sealed seqs: readers skip it
    sink(tmp_path).close()
    assert "journal/00000000000000000001.jsonl" in quarantined(tmp_path)
    assert "not the events sealed" in first_bad(capsys, tmp_path)


def test_an_unreadable_newest_checkpoint_is_kept_aside_with_its_segment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sealed(tmp_path, 2)
    newest = Layout(tmp_path / "ledger").segments()[-1]
    newest.checkpoint.chmod(0o644)
    newest.checkpoint.write_bytes(b"not a checkpoint\n")
    assert "00000000000000000006.checkpoint" in first_bad(capsys, tmp_path)
    sink(tmp_path).close()
    assert quarantined(tmp_path) == [
        "REASON",
        f"segments/{newest.checkpoint.name}",
        f"segments/{newest.parquet.name}",
    ]
    assert "unreadable checkpoint" in first_bad(capsys, tmp_path)


def test_a_head_cut_short_by_a_crash_is_trimmed_not_taken_for_tampering(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    written(tmp_path)
    heads = Layout(tmp_path / "ledger").heads(1)
    whole = heads.read_bytes()
    heads.write_bytes(whole + whole[: len(whole) // 2])  # a head whose write the kill cut
    report = verify(capsys, tmp_path)
    assert report["result"] == "intact" and "ends in a torn write" in str(report["warnings"])
    s = sink(tmp_path)
    s.append_sync([statement(9)])
    s.sign_head()
    s.close(seal=False)
    assert verify(capsys, tmp_path)["result"] == "intact"
    assert not Layout(tmp_path / "ledger").quarantine_dir.exists()
