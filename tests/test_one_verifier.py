"""`verify` and `dsar` are one verifier: after a key rotation they agree the ledger is intact, and
after tampering they name the same first bad entry."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from scalple.ledger.layout import Layout
from tests.cli import run
from tests.test_dsar import Ledger, touch_everywhere
from tests.test_dsar import ledger as ledger


def _verify(capsys: pytest.CaptureFixture[str], led: Ledger) -> dict[str, object]:
    code, out, err = run(capsys, "verify", "-c", str(led.config), "--json")
    report = json.loads(out)
    assert code == (0 if report["result"] == "intact" else 1), out + err
    assert isinstance(report, dict)
    return report


def _dsar(capsys: pytest.CaptureFixture[str], led: Ledger, *args: str) -> tuple[int, str]:
    code, out, err = run(capsys, "dsar", "-c", str(led.config), "-s", "customers.id=42", *args)
    return code, out + err


def _rotated(led: Ledger, capsys: pytest.CaptureFixture[str]) -> None:
    """Events sealed under the first key, a rotation, then more sealed under the second."""
    touch_everywhere(led, 42)
    assert led.sink is not None
    led.sink.close()
    code, out, err = run(
        capsys, "keys", "rotate", "--key-dir", str(led.keys), "--ledger", str(led.root)
    )
    assert code == 0, out + err
    led.open()
    st = led.statement(where=(led.customer(42),))
    led.write(st, led.outcome(st))
    led.seal()


@pytest.mark.parametrize("mode", ["quick", "full"])
def test_after_a_key_rotation_verify_and_dsar_agree_it_is_intact(
    ledger: Ledger, capsys: pytest.CaptureFixture[str], mode: str
) -> None:
    _rotated(ledger, capsys)
    assert _verify(capsys, ledger)["result"] == "intact"
    code, text = _dsar(capsys, ledger, "--verify", mode, "--json")
    assert code == 0, text
    answer = json.loads(text)
    assert answer["verification"]["result"] == "intact"
    assert len(answer["accesses"]) == 6


def _flip_row(path: Path, seq: int) -> None:
    """Change one event's value in a sealed segment, keeping every stored hash."""
    import duckdb

    from scalple.ledger.query import quote

    os.chmod(path, 0o644)
    con = duckdb.connect()
    con.execute(f"CREATE TABLE t AS SELECT * FROM read_parquet({quote(path)})")
    con.execute(f"UPDATE t SET actor = 'mallory@corp.example' WHERE seq = {seq}")
    tmp = path.with_name("x.tmp")
    con.execute(f"COPY (SELECT * FROM t ORDER BY seq) TO {quote(tmp)} (FORMAT parquet)")
    os.replace(tmp, path)


@pytest.mark.parametrize("mode", ["quick", "full"])
def test_after_tampering_verify_and_dsar_name_the_same_first_bad_entry(
    ledger: Ledger, capsys: pytest.CaptureFixture[str], mode: str
) -> None:
    _rotated(ledger, capsys)
    assert _dsar(capsys, ledger, "--json")[0] == 0  # remembered as verified
    segments = Layout(ledger.root).segments()
    target = segments[1]
    _flip_row(target.parquet, target.first_seq)
    bad = _verify(capsys, ledger)["first_bad"]
    assert isinstance(bad, dict)
    named = f"{bad['where']}, seq {bad['seq']}: {bad['what']}"
    assert target.parquet.name in named
    code, text = _dsar(capsys, ledger, "--verify", mode, "--json")
    assert code == 1
    assert named in json.loads(text)["error"], (named, text)


def test_a_checkpoint_whose_count_disagrees_with_its_seqs_fails_both(
    ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    """The count check dsar's quick mode skipped: a re-signed checkpoint claiming fewer events."""
    from scalple.ledger.checkpoint import digest, read_checkpoint
    from scalple.ledger.keys import load_signing_key

    touch_everywhere(ledger, 42)
    assert _dsar(capsys, ledger, "--json")[0] == 0  # every segment now remembered as checked
    key = load_signing_key(ledger.keys)  # someone holding the key, re-signing a lie
    segments = Layout(ledger.root).segments()
    prev = ""
    for seg in segments:
        cp, _ = read_checkpoint(seg.checkpoint)
        forged = cp.__class__(
            **{
                **{f: getattr(cp, f) for f in cp.__struct_fields__},
                "events": cp.events - (1 if seg is segments[0] else 0),
                "prev_checkpoint": prev,
                "signature": "",
            }
        ).signed(key)
        data = forged.encode()
        os.chmod(seg.checkpoint, 0o644)
        seg.checkpoint.write_bytes(data)
        prev = digest(data)
    bad = _verify(capsys, ledger)["first_bad"]
    assert isinstance(bad, dict) and "count" in str(bad["what"]), bad
    code, text = _dsar(capsys, ledger, "--json")
    assert code == 1 and str(bad["what"]) in json.loads(text)["error"], text


def test_an_export_made_after_a_key_rotation_checks_out_against_either_key(
    ledger: Ledger, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The export carries the rotations, and its checkpoints are trusted as verify trusts them."""
    old_pub = tmp_path / "old.pub"
    old_pub.write_bytes((ledger.keys / "signing.pub").read_bytes())
    _rotated(ledger, capsys)
    report = tmp_path / "report.html"
    code, out, err = run(capsys, "dsar", "-c", str(ledger.config), "-s", "customers.id=42",
                         "-f", "html", "-o", str(report))  # fmt: skip
    assert code == 0, out + err
    for pub in (ledger.keys / "signing.pub", old_pub):
        code, out, err = run(capsys, "verify", "--export", str(report), "--public-key", str(pub))
        assert code == 0 and "export checks out" in out, out + err
    stranger = tmp_path / "stranger"
    code, _, _ = run(capsys, "keys", "init", "--key-dir", str(stranger))
    code, out, err = run(capsys, "verify", "--export", str(report),
                         "--public-key", str(stranger / "signing.pub"))  # fmt: skip
    assert code == 1, out + err
