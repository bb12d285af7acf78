"""The real proxy on a real small disk: when the ledger cannot be written, statements are refused
(58030) and never reach PostgreSQL; once it can, they are accepted again without a restart, and
the chain holds every record once.

A tmpfs is mounted for the ledger (that needs root) and filled for real: with bytes (a full
disk), or with files (no inode left: the journal cannot rotate into a new file).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from scalple.sandbox import Sandbox
from tests.cli import run
from tests.proxyproc import ProxyProc, read_events, statements

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mount") is None,
    reason="needs root and mount(8) to mount a small tmpfs for the ledger and fill it",
)

TABLE = "ledger_faults"


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mount a tmpfs with the given options; unmounted at the end."""
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], check=True)
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def _fill_bytes(point: Path) -> list[Path]:
    filler = point / "filler"
    with contextlib.suppress(OSError), filler.open("wb") as f:
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    return [filler]


def _fill_inodes(point: Path) -> list[Path]:
    made = []
    with contextlib.suppress(OSError):
        for i in range(100_000):
            path = point / f"filler-{i}"
            path.touch()
            made.append(path)
    return made


class Client:
    """One connection inserting numbered rows, noting which were acknowledged and refused."""

    def __init__(self, proxy: ProxyProc) -> None:
        self.conn = psycopg.connect(proxy.dsn("trust_user", ""), autocommit=True)
        self.n = 0
        self.acked: list[int] = []
        self.refused: list[int] = []

    def insert(self) -> bool:
        self.n += 1
        try:
            self.conn.execute(f"INSERT INTO {TABLE} VALUES ({self.n}, repeat('p', 300))")
        except psycopg.Error as exc:
            assert exc.sqlstate == "58030", exc
            assert "audit record could not be written" in str(exc)
            self.refused.append(self.n)
            return False
        self.acked.append(self.n)
        return True

    def until(self, accepted: bool, limit: int = 400) -> None:
        for _ in range(limit):
            if self.insert() == accepted:
                return
            time.sleep(0.05)
        pytest.fail(f"statements never became {'accepted' if accepted else 'refused'}")


def _check_afterwards(sandbox: Sandbox, proxy: ProxyProc, client: Client) -> None:
    client.conn.close()
    assert proxy.stop() == 0, proxy.log_text()[-3000:]
    landed = sandbox.psql(f"SELECT n FROM {TABLE} ORDER BY n", dbname="app").stdout.split()
    assert sorted(map(int, landed)) == client.acked, "a refused INSERT reached the table"
    events = read_events(proxy.ledger)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    rows = statements(events)
    ids = [r["event_id"] for r in rows]
    assert len(ids) == len(set(ids)), "a statement was recorded twice"
    recorded = {}
    for r in rows:
        text = r["statement"] or ""
        if text.startswith(f"INSERT INTO {TABLE}"):
            recorded[int(text.split("(")[1].split(",")[0])] = r
    for n in client.acked:
        assert recorded[n]["status"] == "ok", (n, recorded.get(n))
    for n in client.refused:  # the refusal is on record too: nothing is lost
        assert (recorded[n]["status"], recorded[n]["sqlstate"]) == ("refused", "58030")
    detail = " ".join(e["detail"] or "" for e in events if e["kind"] == "system")
    assert "the journal could not be written for" in detail


def _table(sandbox: Sandbox) -> None:
    sandbox.psql(
        f"DROP TABLE IF EXISTS {TABLE}; CREATE TABLE {TABLE} (n int, pad text);"
        f"ALTER TABLE {TABLE} OWNER TO trust_user",
        dbname="app",
    )


@pytest.mark.parametrize(
    ("options", "env", "fill"),
    [
        pytest.param(
            "size=3m",
            {"SCALPLE_SEAL_BYTES": "60000"},
            _fill_bytes,
            id="the disk full",
        ),
        pytest.param(
            "size=64m,nr_inodes=400",
            {"SCALPLE_SEAL_SECONDS": "0.5"},  # the next rotation cannot make its journal
            _fill_inodes,
            id="no new file",
        ),
    ],
)
def test_statements_are_refused_while_the_ledger_cannot_be_written_then_accepted_again(
    sandbox: Sandbox,
    disk: Callable[[str], Path],
    capsys: pytest.CaptureFixture[str],
    options: str,
    env: dict[str, str],
    fill: Callable[[Path], list[Path]],
) -> None:
    _table(sandbox)
    point = disk(options)
    env = {**env, "SCALPLE_HEAD_SECONDS": "0.2"}
    proxy = ProxyProc(sandbox.pg_port, point / "ledger", env=env).start()
    client = Client(proxy)
    for _ in range(20):
        assert client.insert()
    fillers = fill(point)
    client.until(accepted=False)
    for _ in range(5):
        assert not client.insert()  # refused at once while it stays so
    for f in fillers:
        f.unlink()
    client.until(accepted=True)  # no restart
    for _ in range(20):
        assert client.insert()
    _check_afterwards(sandbox, proxy, client)
    _verified(capsys, proxy)


def _verified(capsys: pytest.CaptureFixture[str], proxy: ProxyProc) -> None:
    pub = str(proxy.ledger.parent / "keys" / "signing.pub")
    code, out, err = run(capsys, "verify", str(proxy.ledger), "--public-key", pub)
    assert code == 0, out + err
