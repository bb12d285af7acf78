"""Readers beside a live writer: `verify` and `dsar` run while a real `scalple serve` appends,
rotates and seals its journal many times a second never report tampering on an intact ledger,
and still catch real tampering."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from tests.cli import run
from tests.proxyproc import ProxyProc

RUNS = 10
COMPACTION_RUNS = 5  # each run beside a compaction in a loop costs several seconds
ACTOR = "alice@corp.example"


@contextmanager
def _load(proxy: ProxyProc, clients: int = 3) -> Iterator[list[int]]:
    """Clients sending statements as fast as the proxy takes them, until the block ends."""
    stop = threading.Event()
    done = [0] * clients
    errors: list[BaseException] = []

    def client(i: int) -> None:
        try:
            with psycopg.connect(
                proxy.dsn(),
                options=f"-c scalple.user={ACTOR}",
                autocommit=True,
                prepare_threshold=None,
            ) as c:
                while not stop.is_set():
                    c.execute("SELECT %s::int, repeat('x', 200)", (done[i],)).fetchall()
                    done[i] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    try:
        yield done
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, f"a client failed: {errors[0]}\n{proxy.log_text()[-2000:]}"


def _config(proxy: ProxyProc) -> Path:
    path = proxy.ledger.parent / "scalple.toml"
    keys = proxy.ledger.parent / "keys"
    path.write_text(f'[ledger]\nledger = "{proxy.ledger}"\nkey_dir = "{keys}"\n')
    return path


@pytest.fixture
def busy(make_proxy: Callable[..., ProxyProc]) -> ProxyProc:
    # A journal sealed every few kilobytes: several seals for every reader's run.
    return make_proxy(env={"SCALPLE_SEAL_BYTES": "20000", "SCALPLE_HEAD_SECONDS": "0.2"})


def _seals(proxy: ProxyProc) -> int:
    return len(list((proxy.ledger / "segments").glob("*.checkpoint")))


def test_verify_and_dsar_beside_a_sealing_writer_never_cry_wolf(
    busy: ProxyProc, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(busy)
    alarms: list[str] = []
    runs = 0
    with _load(busy, clients=2):
        first = _seals(busy)
        # Readers run until the writer has sealed RUNS times beside them (and RUNS times at least).
        while runs < RUNS or _seals(busy) - first < RUNS:
            assert runs < 50 * RUNS, "the writer hardly sealed: the race was not exercised"
            code, out, err = run(capsys, "verify", "-c", str(config), "--json")
            if code != 0:
                alarms.append(f"verify run {runs}: {out}{err}")
            if runs % 3 == 0:
                code, out, err = run(capsys, "dsar", "-c", str(config), "--actor", ACTOR, "--json")
                if code != 0:
                    alarms.append(f"dsar run {runs}: {out}{err}")
            runs += 1
    assert not alarms, "\n".join(alarms[:3]) + f"\n({len(alarms)} false alarms in {runs} runs)"


def test_tampering_beside_a_sealing_writer_is_still_caught(
    busy: ProxyProc, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(busy)
    with _load(busy, clients=1):
        while _seals(busy) < 3:
            threading.Event().wait(0.05)
        victim = sorted((busy.ledger / "segments").glob("*.parquet"))[1]
        os.chmod(victim, 0o644)
        with victim.open("r+b") as f:
            f.seek(100)
            byte = f.read(1)
            f.seek(100)
            f.write(bytes([byte[0] ^ 0xFF]))
        for _ in range(5):
            code, out, _ = run(capsys, "verify", "-c", str(config), "--json")
            assert code == 1, out
            assert victim.name in json.loads(out)["first_bad"]["where"]
            code, out, _ = run(capsys, "dsar", "-c", str(config), "--actor", ACTOR, "--json")
            assert code == 1 and victim.name in json.loads(out)["error"], out


def test_readers_beside_compaction_never_cry_wolf(
    busy: ProxyProc, capsys: pytest.CaptureFixture[str]
) -> None:
    """`scalple index compact` merging segments (and removing the originals) beside readers."""
    config = _config(busy)
    stop = threading.Event()
    merged: list[int] = []
    failures: list[str] = []

    def compactor() -> None:
        while not stop.is_set():
            out = subprocess.run(
                [sys.executable, "-m", "scalple", "index", "compact", "-c", str(config),
                 "--target-events", "400", "--json"],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            if out.returncode != 0:
                failures.append(out.stdout + out.stderr)
                return
            merged.append(len(json.loads(out.stdout)["merged"]))

    alarms: list[str] = []
    runs = 0
    # One client: the ledger grows slower, so each compaction stays short on a loaded machine
    # (two clients grew it faster than a compaction could merge it, past its 120 s bound).
    with _load(busy, clients=1):
        thread = threading.Thread(target=compactor)
        thread.start()
        try:
            while runs < COMPACTION_RUNS or sum(merged) < 3:
                assert runs < 50 * COMPACTION_RUNS and not failures, (
                    failures or "nothing was compacted"
                )
                code, out, err = run(capsys, "verify", "-c", str(config), "--json")
                if code != 0:
                    alarms.append(f"verify run {runs}: {out}{err}")
                code, out, err = run(capsys, "dsar", "-c", str(config), "--actor", ACTOR, "--json")
                if code != 0:
                    alarms.append(f"dsar run {runs}: {out}{err}")
                runs += 1
        finally:
            stop.set()
            thread.join()
    assert not failures, failures[0]
    assert not alarms, "\n".join(alarms[:3]) + f"\n({len(alarms)} false alarms in {runs} runs)"
