"""bench/gen_ledger.py writes ledgers that `scalple dsar --since` can ask about today."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.cli import run

GEN = Path(__file__).parent.parent / "bench" / "gen_ledger.py"


def generate(out: Path, *args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(GEN), str(out), "--events", "3000", "--segment-events", "999", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    meta: dict[str, Any] = json.loads((out / "meta.json").read_text())
    return meta


def dsar(capsys: pytest.CaptureFixture[str], out: Path, meta: dict[str, Any], *args: str) -> Any:
    subject = meta["examples"]["subjects"]["head"]
    code, stdout, stderr = run(
        capsys, "dsar", "-c", str(out / "scalple.toml"), "-s", subject, "--json", *args
    )
    assert code == 0, stdout + stderr
    return json.loads(stdout)


def test_history_ends_now_so_since_finds_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = time.time()
    meta = generate(tmp_path)
    answer = dsar(capsys, tmp_path, meta, "--since", "1y")
    assert answer["count"] > 0
    last = datetime.fromisoformat(answer["ledger"]["last_ts"]).timestamp()
    assert before - 86_400 < last < time.time() + 1  # the newest event is from today
    recent = dsar(capsys, tmp_path, meta, "--since", "30d")
    assert 0 < recent["count"] < answer["count"]  # spread over months, up to now


def test_end_sets_where_history_stops(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    meta = generate(tmp_path, "--end", "2024-03-01T12:00")
    assert meta["history"]["to"] == "2024-03-01T12:00:00+00:00"
    assert dsar(capsys, tmp_path, meta, "--since", "1y")["count"] == 0
    answer = dsar(capsys, tmp_path, meta, "--since", "2023-09-01", "--until", "2024-03-01")
    assert answer["count"] > 0
    last = datetime.fromisoformat(answer["ledger"]["last_ts"])
    assert last <= datetime(2024, 3, 1, 12, 0, 1, tzinfo=UTC)
