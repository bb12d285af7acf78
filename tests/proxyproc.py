"""A real `scalple serve` process for integration tests, and a reader for what it recorded."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scalple.sandbox import free_port

Event = dict[str, Any]


def read_events(ledger: Path) -> list[Event]:
    """Every record in the ledger (segments and live journal), in sequence order."""
    standin = ledger / "events.jsonl"  # the plain stand-in journal, before the chained one
    if standin.exists():
        return [json.loads(line) for line in standin.read_text().splitlines() if line.strip()]
    import duckdb

    from scalple.ledger.query import events_view

    con = duckdb.connect()
    events_view(con, ledger)
    cur = con.execute("SELECT * FROM events ORDER BY seq")
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def statements(events: Sequence[Event]) -> list[Event]:
    """Statement records merged with their outcomes (outcome fields win where set)."""
    outcomes = {e["event_id"]: e for e in events if e["kind"] == "outcome"}
    merged = []
    for e in events:
        if e["kind"] != "statement":
            continue
        o = outcomes.get(e["event_id"])
        row = dict(e)
        if o is not None:
            for k in (
                "ts_end",
                "duration_us",
                "rows",
                "status",
                "sqlstate",
                "error",
                "command_tag",
            ):
                if o.get(k) is not None:
                    row[k] = o[k]
            row["subjects"] = tuple(e.get("subjects") or ()) + tuple(o.get("subjects") or ())
        else:
            row["status"] = "incomplete" if e["status"] == "pending" else e["status"]
        merged.append(row)
    return merged


@dataclass
class ProxyProc:
    upstream_port: int
    ledger: Path
    extra_args: Sequence[str] = ()
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    preexec: Callable[[], None] | None = None
    python_args: Sequence[str] = ("-m", "scalple")

    def start(self) -> ProxyProc:
        self.port = self.port or free_port()
        self.log = self.ledger.parent / f"scalple-{self.port}.log"
        self.ledger.parent.mkdir(parents=True, exist_ok=True)
        args = [
            sys.executable,
            *self.python_args,
            "serve",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--upstream",
            f"postgresql://127.0.0.1:{self.upstream_port}",
            "--ledger",
            str(self.ledger),
            *self.extra_args,
        ]
        env = {
            **os.environ,
            "SCALPLE_CONFIG": os.devnull,
            "SCALPLE_KEY_DIR": str(self.ledger.parent / "keys"),
            "SCALPLE_WORKERS": "1",  # one process, the root ledger; --workers N overrides
            **self.env,
        }
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(
                args, stdout=logf, stderr=logf, env=env, preexec_fn=self.preexec
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"scalple serve exited: {self.log_text()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                return self
            time.sleep(0.05)
        raise RuntimeError(f"scalple serve did not listen: {self.log_text()}")

    def dsn(
        self,
        role: str = "app_user",
        password: str = "app_secret",
        dbname: str = "app",
        **params: str,
    ) -> str:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"postgresql://{role}:{password}@127.0.0.1:{self.port}/{dbname}" + (
            f"?{query}" if query else ""
        )

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log and self.log.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def worker_pids(self) -> dict[int, int]:
        """With --workers N: the supervisor's live workers, index → pid (from /proc)."""
        assert self.proc is not None
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue  # gone meanwhile
            if ppid == self.proc.pid and b"scalple.proxy.worker" in argv:
                role = json.loads(argv[argv.index(b"scalple.proxy.worker") + 1])
                found[int(role["index"])] = int(entry.name)
        return found

    def events(self) -> list[Event]:
        return read_events(self.ledger)

    def statements(
        self, settle: float = 5.0, until: Callable[[list[Event]], bool] | None = None
    ) -> list[Event]:
        """Merged statements, waiting up to `settle` s for outcomes (written after the answer)."""
        deadline = time.monotonic() + settle
        while True:
            rows = statements(self.events())
            done = until(rows) if until else all(r["status"] != "incomplete" for r in rows)
            if done or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)
