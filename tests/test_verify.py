"""`scalple verify` against a tamper matrix on real ledger files: each change caught and named."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from scalple.cli.main import app
from scalple.errors import LedgerError, TamperDetected
from scalple.ledger import open_sink
from scalple.ledger.checkpoint import digest, file_sha256, read_checkpoint
from scalple.ledger.keys import SigningKey, load_public_key, load_signing_key
from scalple.ledger.layout import Layout
from scalple.ledger.query import events_view, quote
from scalple.ledger.synthetic import statement
from scalple.ledger.verify import verify_ledger

SEGMENTS = ((1, 10), (11, 20), (21, 30))


def build(root: Path, *, journal: int = 5) -> None:
    """Three sealed segments of 10 events, then `journal` events left unsealed (as by a crash)."""
    for first, last in SEGMENTS:
        sink = open_sink(root / "ledger", "os", key_dir=root / "keys")
        sink.append_sync([statement(i) for i in range(first, last + 1)])
        sink.close()
    if journal:
        sink = open_sink(root / "ledger", "os", key_dir=root / "keys")
        sink.append_sync([statement(i) for i in range(31, 31 + journal)])
        sink.close(seal=False)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ledger-template")
    build(root)
    return root


@pytest.fixture
def ledger(template: Path, tmp_path: Path) -> Path:
    shutil.copytree(template, tmp_path / "copy")
    return tmp_path / "copy"


def verify(root: Path, *args: str) -> tuple[int, dict[str, Any]]:
    pub = ["--public-key", str(root / "keys" / "signing.pub")]
    result = CliRunner().invoke(app, ["verify", str(root / "ledger"), *pub, "--json", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, json.loads(result.stdout)


def assert_caught(root: Path, where: str, seq: int | None, what: str, *args: str) -> None:
    code, report = verify(root, *args)
    assert (code, report["result"]) == (1, "tampered"), report
    bad = report["first_bad"]
    assert where in bad["where"] and bad["seq"] == seq and what in bad["what"], bad


def segment(root: Path, n: int) -> Path:
    return Layout(root / "ledger").segments()[n].parquet


def rewrite(path: Path, sql: str, order: str = "seq") -> None:
    """Rewrite a segment the way an attacker with file access would: same columns, one change."""
    os.chmod(path, 0o644)
    con = duckdb.connect()
    con.execute(f"CREATE TABLE t AS SELECT * FROM read_parquet({quote(path)})")
    if sql:
        con.execute(sql)
    tmp = path.with_name("x.tmp")
    con.execute(f"COPY (SELECT * FROM t ORDER BY {order}) TO {quote(tmp)} (FORMAT parquet)")
    os.replace(tmp, path)


# -- the ledger as written verifies ----------------------------------------------------------


def test_intact_ledger_verifies(ledger: Path) -> None:
    code, report = verify(ledger)
    assert (code, report["result"], report["events"]) == (0, "intact", 35)
    assert (report["segments"], report["journal_events"], report["last_seq"]) == (3, 5, 35)


def test_human_output_and_exit_code(ledger: Path) -> None:
    pub = str(ledger / "keys" / "signing.pub")
    ok = CliRunner().invoke(app, ["verify", str(ledger / "ledger"), "--public-key", pub])
    assert ok.exit_code == 0 and ok.stdout.startswith("intact: 35 events"), ok.output
    rewrite(segment(ledger, 2), "UPDATE t SET rows = 7 WHERE seq = 22")
    bad = CliRunner().invoke(app, ["verify", str(ledger / "ledger"), "--public-key", pub])
    assert isinstance(bad.exception, TamperDetected) and TamperDetected.exit_code == 1
    assert "00000000000000000030.parquet, seq 22: hash does not match" in str(bad.exception)


# -- the tamper matrix -----------------------------------------------------------------------


def test_one_value_of_one_event_changed(ledger: Path) -> None:
    rewrite(segment(ledger, 1), "UPDATE t SET actor = 'mallory@example.com' WHERE seq = 15")
    assert_caught(
        ledger,
        "segments/00000000000000000011-00000000000000000020.parquet",
        15,
        "hash does not match",
    )


def test_event_deleted(ledger: Path) -> None:
    rewrite(segment(ledger, 1), "DELETE FROM t WHERE seq = 15")
    assert_caught(ledger, "00000000000000000020.parquet", 15, "seq 16 where 15 was expected")


def test_event_inserted(ledger: Path) -> None:
    rewrite(
        segment(ledger, 1),
        "INSERT INTO t SELECT * REPLACE ('feed' AS event_id) FROM t WHERE seq = 15",
        order="seq, event_id = 'feed'",
    )
    assert_caught(ledger, "00000000000000000020.parquet", 16, "seq 15 where 16 was expected")


def test_two_events_swapped(ledger: Path) -> None:
    rewrite(segment(ledger, 1), "", order="CASE seq WHEN 15 THEN 16 WHEN 16 THEN 15 ELSE seq END")
    assert_caught(ledger, "00000000000000000020.parquet", 15, "seq 16 where 15 was expected")


def test_events_swapped_with_seqs_renumbered(ledger: Path) -> None:
    rewrite(
        segment(ledger, 1),
        "UPDATE t SET seq = CASE seq WHEN 15 THEN 16 ELSE 15 END WHERE seq IN (15, 16)",
    )
    assert_caught(ledger, "00000000000000000020.parquet", 15, "prev_hash does not link")


def test_tail_truncated_is_caught_with_a_saved_checkpoint(ledger: Path, tmp_path: Path) -> None:
    saved = tmp_path / "saved.checkpoint"
    shutil.copy(Layout(ledger / "ledger").segments()[-1].checkpoint, saved)
    last = Layout(ledger / "ledger").segments()[-1]
    last.parquet.unlink()
    last.checkpoint.unlink()
    shutil.rmtree(ledger / "ledger" / "journal")
    code, _ = verify(ledger)
    assert code == 0  # what remains is consistent: only a copy kept elsewhere can tell
    assert_caught(ledger, "segments", 30, "truncated or rolled back", "--checkpoint", str(saved))


def test_saved_checkpoint_that_still_holds_is_confirmed(ledger: Path) -> None:
    saved = Layout(ledger / "ledger").segments()[1].checkpoint
    code, report = verify(ledger, "--checkpoint", str(saved))
    assert code == 0 and report["checkpoint_extended"] == saved.name


def test_segment_removed(ledger: Path) -> None:
    seg = Layout(ledger / "ledger").segments()[1]
    seg.parquet.unlink()
    seg.checkpoint.unlink()
    assert_caught(ledger, "00000000000000000030.parquet", 11, "events 11..20 are missing")


def test_segment_replaced_by_an_older_one(ledger: Path) -> None:
    old, new = Layout(ledger / "ledger").segments()[:2]
    for src, dst in ((old.parquet, new.parquet), (old.checkpoint, new.checkpoint)):
        os.chmod(dst, 0o644)
        shutil.copy(src, dst)
    assert_caught(ledger, "00000000000000000020.checkpoint", 11, "not this segment")


def test_segment_file_bytes_changed_outside_the_events(ledger: Path) -> None:
    rewrite(segment(ledger, 0), "")  # same events, re-encoded: the file is not what was signed
    assert_caught(ledger, "00000000000000000010.parquet", None, "differs from the digest")


def test_checkpoint_resigned_with_a_different_key(ledger: Path) -> None:
    path = Layout(ledger / "ledger").segments()[1].checkpoint
    cp, _ = read_checkpoint(path)
    mallory = SigningKey(Ed25519PrivateKey.generate())
    forged = msgspec.structs.replace(cp, public_key=mallory.public).signed(mallory)
    os.chmod(path, 0o644)
    path.write_bytes(forged.encode())
    assert_caught(ledger, "00000000000000000020.checkpoint", 11, "untrusted key")


def test_checkpoint_edited(ledger: Path) -> None:
    path = Layout(ledger / "ledger").segments()[2].checkpoint
    cp, _ = read_checkpoint(path)
    os.chmod(path, 0o644)
    path.write_bytes(msgspec.structs.replace(cp, sealed_at=cp.sealed_at - 10**9).encode())
    assert_caught(ledger, "00000000000000000030.checkpoint", 21, "signature is not valid")


def test_journal_edited_while_stopped(ledger: Path) -> None:
    [journal] = (ledger / "ledger" / "journal").glob("*.jsonl")
    data = journal.read_bytes()
    third = data.split(b"\n")[2]
    journal.write_bytes(data.replace(third, third.replace(b'"app"', b'"app2"')))
    assert_caught(ledger, "journal/00000000000000000031.jsonl", 33, "hash does not match")


def test_journal_event_deleted_while_stopped(ledger: Path) -> None:
    [journal] = (ledger / "ledger" / "journal").glob("*.jsonl")
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines[:1] + lines[2:]))
    assert_caught(ledger, "journal/00000000000000000031.jsonl", 32, "seq 33 where 32")


def test_torn_journal_tail_is_a_warning_not_tampering(ledger: Path) -> None:
    [journal] = (ledger / "ledger" / "journal").glob("*.jsonl")
    with journal.open("ab") as f:
        f.write(b'{"v":1,"kind":"sta')
    code, report = verify(ledger)
    assert code == 0 and "torn write of 18 bytes" in report["warnings"][0]


# -- keys --------------------------------------------------------------------------------------


def keys(root: Path, *args: str) -> str:
    result = CliRunner().invoke(app, ["keys", *args, "--key-dir", str(root / "keys")])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_rotated_key_verifies_from_old_or_new_public_key(ledger: Path, tmp_path: Path) -> None:
    old_pub = tmp_path / "old.pub"
    old_pub.write_text(keys(ledger, "export-public"))
    keys(ledger, "rotate", "--ledger", str(ledger / "ledger"))
    sink = open_sink(ledger / "ledger", "os", key_dir=ledger / "keys")
    sink.append_sync([statement(99)])
    sink.close()
    con = duckdb.connect()
    events_view(con, ledger / "ledger")
    [(detail,)] = con.sql("SELECT detail FROM events WHERE kind = 'system'").fetchall()
    assert detail.startswith("ledger.key: checkpoints are now signed by key")
    code, report = verify(ledger)  # the new key
    assert (code, report["segments"]) == (0, 4), report
    code, _ = verify(ledger, "--public-key", str(old_pub))
    assert code == 0
    assert load_public_key(ledger / "keys" / "signing.pub") != load_public_key(old_pub)


def test_rotation_not_signed_by_the_old_key_is_caught(ledger: Path) -> None:
    keys(ledger, "rotate", "--ledger", str(ledger / "ledger"))
    [cert] = (ledger / "ledger" / "keys").iterdir()
    text = json.loads(cert.read_text())
    text["old_signature"] = "00" * 64
    cert.write_text(json.dumps(text))
    assert_caught(ledger, "keys", None, "not signed by both keys")


# -- unusable input: exit 2 ----------------------------------------------------------------


def test_missing_ledger_is_unusable(tmp_path: Path, ledger: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "verify",
            str(tmp_path / "nope"),
            "--public-key",
            str(ledger / "keys" / "signing.pub"),
            "--json",
        ],
    )
    assert result.exit_code == 2 and json.loads(result.stdout)["result"] == "unusable"


def test_no_public_key_is_unusable(ledger: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["verify", str(ledger / "ledger"), "--json"],
        env={"SCALPLE_KEY_DIR": str(tmp_path / "none")},
    )
    assert result.exit_code == 2 and "--public-key" in json.loads(result.stdout)["error"]


def test_unreadable_saved_checkpoint_is_unusable(ledger: Path, tmp_path: Path) -> None:
    (tmp_path / "junk").write_text("{}")
    code, report = verify(ledger, "--checkpoint", str(tmp_path / "junk"))
    assert code == 2 and report["result"] == "unusable"


# -- any single byte ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sealed_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sealed-template")
    for first in (1, 6):
        sink = open_sink(root / "ledger", "os", key_dir=root / "keys")
        sink.append_sync([statement(i) for i in range(first, first + 5)])
        sink.close()
    return root


@given(data=st.data())
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_any_single_byte_change_in_a_sealed_ledger_is_caught(
    sealed_template: Path, data: st.DataObject
) -> None:
    files = sorted(
        p.relative_to(sealed_template) for p in (sealed_template / "ledger" / "segments").iterdir()
    )
    name = data.draw(st.sampled_from(files))
    size = (sealed_template / name).stat().st_size
    offset = data.draw(st.integers(0, size - 1))
    flip = data.draw(st.integers(1, 255))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "l"
        shutil.copytree(sealed_template, root)
        target = root / name
        os.chmod(target, 0o644)
        blob = bytearray(target.read_bytes())
        blob[offset] ^= flip
        target.write_bytes(bytes(blob))
        try:
            report = verify_ledger(root / "ledger", load_public_key(root / "keys" / "signing.pub"))
        except LedgerError:
            return  # unusable is also caught
        assert not report.intact, f"{name} byte {offset} ^ {flip} not caught"


def test_resigned_value_change_is_caught_by_deep(ledger: Path) -> None:
    # Someone holding the signing key edits a value, keeps the stored hashes and re-signs:
    # the links and signatures hold, only recomputing each event hash finds it.
    path = segment(ledger, 1)
    rewrite(path, "UPDATE t SET actor = 'mallory@example.com' WHERE seq = 15")
    cp_path = path.with_suffix(".checkpoint")
    cp, _ = read_checkpoint(cp_path)
    key = load_signing_key(ledger / "keys")
    forged = msgspec.structs.replace(cp, segment_sha256=file_sha256(path)).signed(key)
    os.chmod(cp_path, 0o644)
    cp_path.write_bytes(forged.encode())
    nxt = Layout(ledger / "ledger").segments()[2].checkpoint
    cp3, _ = read_checkpoint(nxt)
    os.chmod(nxt, 0o644)
    nxt.write_bytes(
        msgspec.structs.replace(cp3, prev_checkpoint=digest(forged.encode())).signed(key).encode()
    )
    assert verify(ledger)[0] == 0
    assert_caught(ledger, "00000000000000000020.parquet", 15, "hash does not match", "--deep")


def test_segment_file_deleted_leaving_its_checkpoint(ledger: Path) -> None:
    segment(ledger, 2).unlink()
    assert_caught(ledger, "00000000000000000030.checkpoint", None, "segment file is missing")


def test_a_signature_written_in_upper_case_hex_is_a_change(ledger: Path) -> None:
    # The same signature bytes, other file bytes: found by the single-byte property above.
    path = Layout(ledger / "ledger").segments()[2].checkpoint
    data = path.read_bytes()
    at = data.index(b'"signature":"') + len(b'"signature":"')
    at += next(i for i, c in enumerate(data[at:]) if chr(c) in "abcdef")
    os.chmod(path, 0o644)
    path.write_bytes(data[:at] + data[at : at + 1].upper() + data[at + 1 :])
    assert_caught(ledger, "00000000000000000030.checkpoint", 21, "signature is not valid")
