"""Keys on disk: modes, first-use creation, rotation files, the subject secret; no key leaks."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scalple.cli.main import app
from scalple.errors import LedgerError
from scalple.ledger import open_sink
from scalple.ledger.keys import load_public_key, load_signing_key, subject_secret
from scalple.ledger.synthetic import pair


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def keys(*args: str) -> CliRunner:
    return CliRunner().invoke(app, ["keys", *args])


def test_init_writes_private_0600_and_public_apart(tmp_path: Path) -> None:
    result = keys("init", "--key-dir", str(tmp_path / "k"))
    assert result.exit_code == 0, result.output
    assert mode(tmp_path / "k" / "signing.key") == 0o600
    assert mode(tmp_path / "k" / "signing.pub") == 0o644
    assert mode(tmp_path / "k" / "subject.secret") == 0o600  # in the first backup, too
    assert "PRIVATE" not in (tmp_path / "k" / "signing.pub").read_text()
    again = keys("init", "--key-dir", str(tmp_path / "k"))
    assert isinstance(again.exception, LedgerError) and "already exists" in str(again.exception)


def test_export_public_matches_the_signing_key(tmp_path: Path) -> None:
    keys("init", "--key-dir", str(tmp_path / "k"))
    out = tmp_path / "exported.pub"
    assert keys("export-public", "-o", str(out), "--key-dir", str(tmp_path / "k")).exit_code == 0
    assert load_public_key(out) == load_signing_key(tmp_path / "k").public


def test_first_use_creates_the_key_and_says_where(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="scalple.ledger"):
        sink = open_sink(tmp_path / "ledger", "os", key_dir=tmp_path / "fresh")
        sink.close()
    assert mode(tmp_path / "fresh" / "signing.key") == 0o600
    assert str(tmp_path / "fresh") in caplog.text


def test_signing_key_appears_nowhere_in_ledger_logs_or_errors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        sink = open_sink(tmp_path / "ledger", "os", key_dir=tmp_path / "k")
        sink.append_sync(pair(1))
        sink.close()
        old = load_signing_key(tmp_path / "k")
        keys("rotate", "--key-dir", str(tmp_path / "k"), "--ledger", str(tmp_path / "ledger"))
        sink = open_sink(tmp_path / "ledger", "os", key_dir=tmp_path / "k")
        sink.append_sync(pair(2))
        sink.close()
    new = load_signing_key(tmp_path / "k")
    ledger = b"".join(p.read_bytes() for p in (tmp_path / "ledger").rglob("*") if p.is_file())
    for key in (old, new):
        body = key.private_pem().split(b"-----")[2].strip()
        raw = key._private.private_bytes_raw()
        assert body not in ledger and raw not in ledger and raw.hex().encode() not in ledger
        assert body.decode() not in caplog.text and raw.hex() not in caplog.text
        assert repr(key) == f"SigningKey(id={key.id})"
    (tmp_path / "k" / "signing.key").write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n")
    with pytest.raises(LedgerError) as err:
        load_signing_key(tmp_path / "k")
    assert "not a key" not in str(err.value) and err.value.__cause__ is None


def test_rotation_retires_the_old_key(tmp_path: Path) -> None:
    keys("init", "--key-dir", str(tmp_path / "k"))
    old = load_signing_key(tmp_path / "k")
    result = keys("rotate", "--key-dir", str(tmp_path / "k"), "--ledger", str(tmp_path / "l"))
    assert result.exit_code == 0, result.output
    new = load_signing_key(tmp_path / "k")
    assert new.public != old.public
    assert (tmp_path / "k" / "retired" / f"{old.id}.pub").exists()
    [cert] = (tmp_path / "l" / "keys").iterdir()
    assert old.public in cert.read_text() and new.public in cert.read_text()


def test_subject_secret_is_stable_private_and_not_in_a_ledger(tmp_path: Path) -> None:
    first = subject_secret(tmp_path / "k")
    assert len(first) == 32 and subject_secret(tmp_path / "k") == first
    assert mode(tmp_path / "k" / "subject.secret") == 0o600
    assert subject_secret(tmp_path / "other") != first
    sink = open_sink(tmp_path / "ledger", "os", key_dir=tmp_path / "k")
    sink.close()
    with pytest.raises(LedgerError, match="ledger directory"):
        subject_secret(tmp_path / "ledger")


def test_unusable_key_directory_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    result = keys("init", "--key-dir", str(tmp_path / "file" / "k"))
    assert isinstance(result.exception, LedgerError) and result.exception.exit_code == 2
    assert str(tmp_path / "file") in str(result.exception)
    with pytest.raises(LedgerError, match="opening ledger"):
        open_sink(tmp_path / "file" / "ledger", "os", key_dir=tmp_path / "k")
