"""The fault campaign: each fault against the real stack (PostgreSQL 15 with pgAudit, PgBouncer in
transaction mode, `scalple serve` in front of it) with load on it, one table row per fault.

Load: a few clients each send INSERTs that carry an identity of their own, a marker unique to
the statement (`/*user='fm_…'*/`, which the ledger records as the actor whatever the analysis
did), and note which the server acknowledged. Every statement a fault sends itself (COPY,
pathological statements, cancelled sleeps) carries a marker too. Afterwards the markers are
counted in pgAudit's log (what PostgreSQL executed) and in the ledger (DuckDB over segments and
journal). Executed but unrecorded is pgAudit's set less the ledger's: it must be 0. Then
`scalple verify` checks the ledger. Meanwhile an unrelated client sends `SELECT 1` through the
proxy every 20 ms; its worst round trip is the stall (reconnecting when its connection was cut,
so a restart counts whole; an error answer, such as a refusal, ends a round trip). Beside it,
the proxy's own event-loop lag gauge from /metrics.

    python bench/faults.py [--only NAME[,NAME]] [--quick] [--clients 4] [--list]

The load and the probe run in processes of their own (`--worker`), so the campaign's own work
(building a 50 MB statement, opening 1,000 connections) does not hold up their clocks.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scalple.sandbox import Sandbox, client, free_port
from tests.proxyproc import ProxyProc, read_events

TABLES = (
    "DROP TABLE IF EXISTS faults_load, faults_copy, faults_people;"
    "CREATE TABLE faults_load (marker text, at timestamptz DEFAULT now());"
    "CREATE TABLE faults_copy (marker text);"
    "CREATE TABLE faults_people (id int PRIMARY KEY, email text);"
    "INSERT INTO faults_people SELECT g, 'p' || g || '@example.com' "
    "FROM generate_series(1, 1000) g;"
    "ALTER TABLE faults_load OWNER TO app_user; ALTER TABLE faults_copy OWNER TO app_user;"
    "ALTER TABLE faults_people OWNER TO app_user"
)
PROXY_ENV = {
    "SCALPLE_SUBJECT_COLUMNS": "faults_people.id=customer",
    "SCALPLE_PII_COLUMNS": "faults_people.email",
    "SCALPLE_HEAD_SECONDS": "0.5",
}
CANCEL_REQUEST = 80877102


def tagged(sql: str, marker: str) -> str:
    return f"{sql} /*user='{marker}'*/"


# -- the load and the probe, each in a process of its own ---------------------------------------


def _connect(dsn: str):  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(dsn, autocommit=True, connect_timeout=3)


def _broken(conn) -> bool:  # type: ignore[no-untyped-def]
    return bool(conn.closed or conn.broken)


def _say(line: str, lock: threading.Lock) -> None:
    with lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def load_worker(dsn: str, prefix: str, clients: int, pause: float) -> None:
    """INSERT marked rows from `clients` threads until stdin closes. Prints `a MARKER` for each
    acknowledged, `e SQLSTATE` for each error answer, `x` for each cut connection."""
    import psycopg

    stop, lock = threading.Event(), threading.Lock()

    def run(i: int) -> None:
        conn, n = None, 0
        while not stop.is_set():
            if conn is None:
                try:
                    conn = _connect(dsn)
                except psycopg.Error:
                    time.sleep(0.05)
                    continue
            n += 1
            marker = f"{prefix}_c{i}_{n}"
            try:
                conn.execute(
                    tagged(f"INSERT INTO faults_load (marker) VALUES ('{marker}')", marker)
                )
            except psycopg.Error as exc:
                if _broken(conn):
                    _say("x", lock)
                    conn.close()
                    conn = None
                    time.sleep(0.02)
                else:
                    _say(f"e {exc.sqlstate}", lock)
                    time.sleep(0.01)
                continue
            _say(f"a {marker}", lock)
            time.sleep(pause)
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    _say("ready", lock)
    sys.stdin.read()
    stop.set()
    for t in threads:
        t.join(20)
    _say("done", lock)


def probe_worker(dsn: str, every: float) -> None:
    """`SELECT 1` every `every` s until stdin closes; prints `p OUTCOME MS` per round trip."""
    import psycopg

    stop, lock = threading.Event(), threading.Lock()

    def until_stdin_closes() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=until_stdin_closes, daemon=True).start()
    conn = _connect(dsn)
    _say("ready", lock)
    while not stop.is_set():
        started, outcome = time.perf_counter(), "unanswered"
        while not stop.is_set():
            try:
                if conn is None:
                    conn = _connect(dsn)
                conn.execute("SELECT 1").fetchone()
                outcome = "ok"
                break
            except psycopg.Error as exc:
                if conn is not None and not _broken(conn):
                    outcome = exc.sqlstate or "error"
                    break
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.02)
        _say(f"p {outcome} {(time.perf_counter() - started) * 1000:.1f}", lock)
        time.sleep(every)
    _say("done", lock)


class Worker:
    """A load or probe process, and what it reported so far (read as it goes, so a worker that
    had to be killed still leaves its count)."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.acked: list[str] = []
        self.errors: Counter[str] = Counter()
        self.rtts: list[tuple[str, float]] = []
        self.ready = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        if not self.ready.wait(60):
            self.proc.kill()
            raise RuntimeError(f"worker {args[0]} did not start")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            kind, _, rest = line.rstrip("\n").partition(" ")
            if kind == "a":
                self.acked.append(rest)
            elif kind == "e":
                self.errors[rest] += 1
            elif kind == "x":
                self.errors["cut"] += 1
            elif kind == "p":
                outcome, ms = rest.split()
                self.rtts.append((outcome, float(ms)))
            elif kind == "ready":
                self.ready.set()

    def stop(self) -> bool:
        """Stop it; False if it had to be killed (a client stuck in a statement)."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(30)
            clean = True
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            clean = False
        self.reader.join(10)
        return clean


# -- one fault's run -----------------------------------------------------------------------------


@dataclass
class Campaign:
    sandbox: Sandbox
    work: Path
    quick: bool = False
    clients: int = 4
    run: str = field(default_factory=lambda: secrets.token_hex(3))

    @property
    def warm(self) -> float:
        return 0.5 if self.quick else 1.5

    @property
    def hold(self) -> float:
        return 1.0 if self.quick else 3.0

    def prepare(self) -> None:
        self.sandbox.psql(TABLES, dbname="app")


@dataclass
class Ctx:
    """What a fault works with, and what it adds to its row."""

    campaign: Campaign
    proxy: ProxyProc
    prefix: str
    load: Worker | None = None
    acked: list[str] = field(default_factory=list)  # the fault's own statements, acknowledged
    notes: list[str] = field(default_factory=list)

    @property
    def sandbox(self) -> Sandbox:
        return self.campaign.sandbox

    def marker(self, who: str, n: int) -> str:
        return f"{self.prefix}_{who}_{n}"

    def wait_for_acks(self, timeout: float = 30.0) -> float | None:
        """Seconds until the load is acknowledged again (a few new acks), or None."""
        assert self.load is not None
        started, base = time.monotonic(), len(self.load.acked)
        while time.monotonic() - started < timeout:
            if len(self.load.acked) >= base + self.campaign.clients:
                return time.monotonic() - started
            time.sleep(0.02)
        return None


@dataclass
class Row:
    fault: str
    acked: int = 0
    audited: int = 0
    recorded: int = 0
    unrecorded: int = 0
    verify: str = ""
    stall_ms: float = 0.0
    loop_lag_ms: float = float("nan")  # the proxy's own gauge, since its last start
    notes: list[str] = field(default_factory=list)
    not_run: str = ""
    missing: list[str] = field(default_factory=list)  # markers executed but unrecorded


@dataclass(frozen=True)
class Fault:
    name: str
    title: str
    run: Callable[[Ctx], None]
    place: Callable[[Campaign, Path, contextlib.ExitStack], Path] | None = None  # ledger's parent


def run_fault(campaign: Campaign, fault: Fault) -> Row:
    prefix = f"fm_{campaign.run}_{fault.name}"
    where = campaign.work / fault.name
    where.mkdir(parents=True, exist_ok=True)
    row = Row(fault.title)
    with contextlib.ExitStack() as stack:
        try:
            parent = fault.place(campaign, where, stack) if fault.place else where
        except NotRun as exc:
            row.not_run = str(exc)
            return row
        metrics = free_port()
        env = {**PROXY_ENV, "SCALPLE_METRICS_LISTEN": f"127.0.0.1:{metrics}"}
        proxy = ProxyProc(campaign.sandbox.bouncer_port, parent / "ledger", env=env).start()
        stack.callback(proxy.stop, signal.SIGKILL)
        log_from = campaign.sandbox.pg_log.stat().st_size
        ctx = Ctx(campaign, proxy, prefix)
        probe = Worker("probe", proxy.dsn(), "0.02")
        stack.callback(probe.stop)
        ctx.load = Worker("load", proxy.dsn(), prefix, str(campaign.clients), "0.005")
        stack.callback(ctx.load.stop)
        started = time.monotonic()
        time.sleep(campaign.warm)
        try:
            fault.run(ctx)
        except Exception as exc:  # the row still counts what happened
            ctx.notes.append(f"the fault's own driver failed: {exc!r}"[:200])
        time.sleep(campaign.warm)
        if not ctx.load.stop():
            row.notes.append("a load client hung and was killed")
        probe.stop()
        row.loop_lag_ms = loop_lag_max(metrics) * 1000
        code = proxy.stop()
        if code not in (0, -signal.SIGTERM):
            row.notes.append(f"proxy exit {code}")
        took = time.monotonic() - started
        _count(row, ctx, campaign.sandbox.pg_log, log_from)
        row.verify = verify(proxy.ledger)
        rtts = [ms for _, ms in probe.rtts]
        row.stall_ms = max(rtts, default=float("nan"))
        refused = Counter(outcome for outcome, _ in probe.rtts if outcome != "ok")
        load_errors = ", ".join(f"{k} ×{v}" for k, v in sorted(ctx.load.errors.items()))
        if load_errors:
            row.notes.append(f"load errors: {load_errors}")
        if refused:
            row.notes.append("probe answered " + ", ".join(f"{k} ×{v}" for k, v in refused.items()))
        if len(rtts) >= 20:
            p99 = statistics.quantiles(rtts, n=100, method="inclusive")[98]
            row.notes.append(f"probe p99 {p99:.0f} ms")
        row.notes = ctx.notes + row.notes + [f"{took:.0f} s"]
    return row


AUDIT_LINE = re.compile(rb"^.*AUDIT: SESSION.*$", re.M)


def audited_markers(log: Path, start: int, prefix: str) -> Counter[str]:
    """Markers in pgAudit's SESSION lines written to `log` since byte `start`."""
    pattern = re.compile(rb"user='(" + re.escape(prefix.encode()) + rb"_[a-z0-9_]+)'")
    found: Counter[str] = Counter()
    with open(log, "rb") as f:
        f.seek(start)
        for line in f:
            if b"AUDIT: SESSION" in line:
                for m in pattern.finditer(line):
                    found[m.group(1).decode()] += 1
    return found


def recorded_markers(ledger: Path, prefix: str) -> Counter[str]:
    """Statement events in the ledger whose actor is one of this run's markers."""
    found: Counter[str] = Counter()
    for e in read_events(ledger):
        actor = e.get("actor") or ""
        if e["kind"] == "statement" and actor.startswith(prefix + "_"):
            found[actor] += 1
    return found


def _count(row: Row, ctx: Ctx, log: Path, log_from: int) -> None:
    assert ctx.load is not None
    acked = set(ctx.load.acked) | set(ctx.acked)
    audited = audited_markers(log, log_from, ctx.prefix)
    recorded = recorded_markers(ctx.proxy.ledger, ctx.prefix)
    row.acked, row.audited, row.recorded = len(acked), len(audited), len(recorded)
    row.missing = sorted(set(audited) - set(recorded))
    row.unrecorded = len(row.missing)
    if twice := [m for m, n in recorded.items() if n > 1]:
        row.notes.append(f"recorded twice: {len(twice)}")
    if unseen := acked - set(audited):
        row.notes.append(f"acknowledged but not in pgAudit's log: {len(unseen)}")
    if unrecorded_acks := acked - set(recorded):
        row.notes.append(f"acknowledged but unrecorded: {len(unrecorded_acks)}")


def loop_lag_max(port: int) -> float:
    """The most the proxy's event loop ran late since it started, from its /metrics."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    except OSError:
        return float("nan")
    m = re.search(rb"^scalple_event_loop_lag_max_seconds (\S+)$", text, re.M)
    return float(m.group(1)) if m else float("nan")


def verify(ledger: Path) -> str:
    pub = ledger.parent / "keys" / "signing.pub"
    out = subprocess.run(
        [sys.executable, "-m", "scalple", "verify", str(ledger), "--public-key", str(pub)],
        capture_output=True,
        text=True,
        env={**os.environ, "SCALPLE_CONFIG": os.devnull},
    )
    if out.returncode == 0:
        return "intact"
    lines = (out.stdout + out.stderr).strip().splitlines()
    return f"FAILED ({out.returncode}): {lines[0] if lines else ''}"


class NotRun(Exception):
    pass


# -- the faults ---------------------------------------------------------------------------------


def nothing(ctx: Ctx) -> None:
    """The load alone, for as long as a fault would last: the floor the other rows stand on."""
    time.sleep(ctx.campaign.hold * 2)


def kill9(ctx: Ctx) -> None:
    assert ctx.proxy.proc is not None
    for _ in range(1 if ctx.campaign.quick else 2):
        ctx.proxy.stop(signal.SIGKILL)
        t = time.monotonic()
        ctx.proxy.start()
        ctx.notes.append(f"restarted in {time.monotonic() - t:.1f} s")
        time.sleep(ctx.campaign.hold)


def _tmpfs(campaign: Campaign, where: Path, stack: contextlib.ExitStack) -> Path:
    point = where / "disk"
    point.mkdir()
    out = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(point)],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise NotRun(f"mount -t tmpfs refused: {out.stderr.strip()}")
    stack.callback(subprocess.run, ["umount", "-l", str(point)], check=False)
    return point


def disk_full(ctx: Ctx) -> None:
    filler = ctx.proxy.ledger.parent / "filler"
    with contextlib.suppress(OSError), filler.open("wb") as f:
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    assert ctx.load is not None
    refused_before = ctx.load.errors["58030"]
    time.sleep(ctx.campaign.hold)
    filler.unlink()
    back = ctx.wait_for_acks()
    refused = ctx.load.errors["58030"] - refused_before
    ctx.notes.append(f"8 MB tmpfs filled for {ctx.campaign.hold:.0f} s: {refused} refused (58030)")
    ctx.notes.append(
        f"accepted again {back:.1f} s after space was freed"
        if back is not None
        else "NOT accepted again within 30 s"
    )


def unwritable(ctx: Ctx) -> None:
    """chattr +i on the ledger and everything in it: the proxy runs as root here, and root
    ignores a directory's mode bits; an immutable flag stops root too, and also writes through
    files it already holds open."""
    ledger = str(ctx.proxy.ledger)
    out = subprocess.run(["chattr", "-R", "+i", ledger], capture_output=True, text=True)
    try:
        if out.returncode != 0:
            ctx.notes.append(f"chattr +i failed: {out.stderr.strip()}")
            return
        time.sleep(ctx.campaign.hold)
    finally:
        subprocess.run(["chattr", "-R", "-i", ledger], check=False, capture_output=True)
    back = ctx.wait_for_acks()
    ctx.notes.append(f"chattr -R +i (root ignores mode bits) for {ctx.campaign.hold:.0f} s")
    ctx.notes.append(
        f"accepted again {back:.1f} s after"
        if back is not None
        else "NOT accepted again within 30 s"
    )


def pg_restart(ctx: Ctx) -> None:
    bouncer_from = ctx.sandbox.bouncer_log.stat().st_size
    t = time.monotonic()
    ctx.sandbox.restart_postgres()
    ctx.notes.append(f"fast shutdown and start took {time.monotonic() - t:.1f} s")
    with open(ctx.sandbox.bouncer_log, "rb") as f:
        f.seek(bouncer_from)
        if b"login failed" in f.read():  # it then waits server_login_retry (15 s by default)
            ctx.notes.append(
                "PgBouncer's server login failed during the shutdown, and it waits "
                "server_login_retry (15 s) before the next"
            )
    _recovered(ctx)


def _recovered(ctx: Ctx) -> None:
    """Note when the load's statements are acknowledged again, then let it run a while."""
    back = ctx.wait_for_acks()
    ctx.notes.append(
        f"load acknowledged again {back:.1f} s later"
        if back is not None
        else "load NOT acknowledged again within 30 s"
    )
    time.sleep(ctx.campaign.hold)


def bouncer_restart(ctx: Ctx) -> None:
    t = time.monotonic()
    ctx.sandbox.restart_pgbouncer()
    ctx.notes.append(f"SIGTERM and start took {time.monotonic() - t:.1f} s")
    _recovered(ctx)


def copy_gone(ctx: Ctx) -> None:
    """psql killed (-9) in the middle of COPY FROM STDIN, and of COPY TO STDOUT after its first
    rows."""
    rounds = 2 if ctx.campaign.quick else 5
    for n in range(rounds):
        m_in, m_out = ctx.marker("copyin", n), ctx.marker("copyout", n)
        argv, env = client(
            "psql", ctx.proxy.port, "-c", tagged("COPY faults_copy (marker) FROM STDIN", m_in)
        )
        psql = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert psql.stdin is not None
        psql.stdin.write(b"".join(b"row-%d\n" % i for i in range(2000)))
        psql.stdin.flush()
        time.sleep(0.3)
        psql.kill()
        psql.wait()
        sql = "COPY (SELECT g, repeat('x', 200) FROM generate_series(1, 5000000) g) TO STDOUT"
        argv, env = client("psql", ctx.proxy.port, "-c", tagged(sql, m_out))
        psql = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert psql.stdout is not None
        psql.stdout.read(1 << 16)
        psql.kill()
        psql.wait()
    ctx.notes.append(f"{rounds} COPY FROM STDIN and {rounds} COPY TO STDOUT cut by kill -9")


def idle_connections(ctx: Ctx) -> None:
    import psycopg

    wanted = 200 if ctx.campaign.quick else 1000
    t = time.monotonic()
    conns: list[psycopg.Connection[tuple[object, ...]]] = []
    failed: Counter[str] = Counter()

    def one(_: int) -> None:
        try:
            conns.append(psycopg.connect(ctx.proxy.dsn(), connect_timeout=30))
        except psycopg.Error as exc:
            failed[str(exc).strip().splitlines()[0][:80]] += 1

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(wanted)))
    opened = time.monotonic() - t
    assert ctx.proxy.proc is not None
    rss = _rss_mb(ctx.proxy.proc.pid, "VmRSS")
    time.sleep(ctx.campaign.hold)
    for c in conns:
        c.close()
    ctx.notes.append(
        f"{len(conns)} of {wanted} idle connections opened in {opened:.1f} s, "
        f"held {ctx.campaign.hold:.0f} s; proxy RSS {rss:.0f} MB with them"
    )
    for what, n in failed.items():
        ctx.notes.append(f"{n} failed: {what}")


def _rss_mb(pid: int, field_: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_ + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _pathological(ctx: Ctx, who: str, make: Callable[[str], str], what: str) -> None:
    import psycopg

    took = []
    for n in range(1 if ctx.campaign.quick else 3):
        marker = ctx.marker(who, n)
        sql = make(marker)
        t = time.monotonic()
        try:
            with psycopg.connect(ctx.proxy.dsn(), autocommit=True) as conn:
                conn.execute(sql).fetchall()
            ctx.acked.append(marker)
            took.append(time.monotonic() - t)
        except psycopg.Error as exc:
            ctx.notes.append(f"{what} #{n}: {exc.sqlstate} {str(exc).strip()[:80]}")
        del sql
        time.sleep(0.3)
    assert ctx.proxy.proc is not None
    peak = _rss_mb(ctx.proxy.proc.pid, "VmHWM")
    rss = _rss_mb(ctx.proxy.proc.pid, "VmRSS")
    answered = ", ".join(f"{s:.1f}" for s in took)
    ctx.notes.append(
        f"{what} ×{len(took)} answered in {answered} s; "
        f"proxy RSS peak {peak:.0f} MB, after {rss:.0f} MB"
    )


def statement_50mb(ctx: Ctx) -> None:
    pad = "x" * (50 * 1000 * 1000)
    _pathological(ctx, "big", lambda m: tagged(f"SELECT length('{pad}') AS n", m), "50 MB SELECT")


def in_list_100k(ctx: Ctx) -> None:
    ids = ", ".join(str(i) for i in range(1, 100_001))
    sql = f"SELECT count(*) FROM faults_people WHERE id IN ({ids})"
    _pathological(ctx, "inlist", lambda m: tagged(sql, m), "IN (100,000 ids)")


def comment_1mb(ctx: Ctx) -> None:
    pad = "c" * 1_000_000
    _pathological(
        ctx,
        "comment",
        lambda m: tagged("SELECT 1 AS n", m) + f" /* {pad} */",
        "SELECT with a 1 MB comment",
    )


def cancel_flood(ctx: Ctx) -> None:
    """Clients cancel their own `pg_sleep` 20 ms in, over and over, while another sends
    CancelRequests with keys nobody holds as fast as it can."""
    import psycopg

    stop = threading.Event()
    sent = Counter[str]()
    lock = threading.Lock()

    def canceller(i: int) -> None:
        n = 0
        with psycopg.connect(ctx.proxy.dsn(), autocommit=True) as conn:
            while not stop.is_set():
                n += 1
                marker = ctx.marker(f"cancel{i}", n)
                timer = threading.Timer(0.02, conn.cancel)
                timer.start()
                try:
                    conn.execute(tagged("SELECT pg_sleep(0.2)", marker))
                    outcome = "finished"
                    with lock:
                        ctx.acked.append(marker)
                except psycopg.errors.QueryCanceled:
                    outcome = "cancelled"
                except psycopg.Error as exc:
                    outcome = exc.sqlstate or "error"
                timer.join()
                with lock:
                    sent[outcome] += 1

    def bogus() -> None:
        while not stop.is_set():
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", ctx.proxy.port), 2) as s,
            ):
                pid, key = struct.unpack("!iI", os.urandom(8))
                s.sendall(struct.pack("!IIiI", 16, CANCEL_REQUEST, pid, key))
                with lock:
                    sent["bogus"] += 1

    threads = [threading.Thread(target=canceller, args=(i,)) for i in range(4)]
    threads.append(threading.Thread(target=bogus))
    for t in threads:
        t.start()
    time.sleep(ctx.campaign.hold * 2)
    stop.set()
    for t in threads:
        t.join(30)
    other = sum(v for k, v in sent.items() if k not in ("cancelled", "finished", "bogus"))
    ctx.notes.append(
        f"sleeps cancelled {sent['cancelled']}, finished {sent['finished']}, other {other}; "
        f"{sent['bogus']} CancelRequests with unknown keys"
    )


FAULTS = (
    Fault("none", "no fault: the load alone (baseline)", nothing),
    Fault("kill9", "kill -9 of the proxy, then restart", kill9),
    Fault("diskfull", "full disk (ledger on an 8 MB tmpfs)", disk_full, _tmpfs),
    Fault("unwritable", "ledger made unwritable (chattr +i)", unwritable),
    Fault("pgrestart", "PostgreSQL restarted", pg_restart),
    Fault("bouncer", "PgBouncer restarted", bouncer_restart),
    Fault("copygone", "a client gone mid-COPY", copy_gone),
    Fault("idle", "1,000 idle connections", idle_connections),
    Fault("big", "a 50 MB statement", statement_50mb),
    Fault("inlist", "IN list of 100,000 ids on a subject column", in_list_100k),
    Fault("comment", "a statement with a 1 MB comment", comment_1mb),
    Fault("cancels", "a cancel flood", cancel_flood),
)


def run_one(campaign: Campaign, name: str) -> Row:
    (fault,) = [f for f in FAULTS if f.name == name]
    return run_fault(campaign, fault)


# -- the table ----------------------------------------------------------------------------------

HEADER = (
    "fault",
    "acknowledged",
    "in pgAudit's log",
    "in the ledger",
    "executed but unrecorded",
    "verify",
    "worst stall (ms)",
    "proxy loop lag max (ms)",
    "notes",
)


def markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in rows:
        if r.not_run:
            cells = [r.fault, *["—"] * (len(HEADER) - 2), f"not run: {r.not_run}"]
        else:
            cells = [
                r.fault,
                f"{r.acked:,}",
                f"{r.audited:,}",
                f"{r.recorded:,}",
                f"{r.unrecorded:,}",
                r.verify,
                f"{r.stall_ms:,.0f}",
                f"{r.loop_lag_ms:,.0f}",
                "; ".join(r.notes),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


@contextlib.contextmanager
def stack(work: Path, clients: int) -> Iterator[Sandbox]:
    sb = Sandbox(pool_size=clients + 10, max_client_conn=1500)
    try:
        sb.start_postgres()
        sb.start_pgbouncer()
        yield sb
    finally:
        sb.cleanup()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        kind, *rest = sys.argv[2:]
        if kind == "load":
            load_worker(rest[0], rest[1], int(rest[2]), float(rest[3]))
        else:
            probe_worker(rest[0], float(rest[1]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="", help="comma-separated fault names (see --list)")
    ap.add_argument("--quick", action="store_true", help="shorter holds, fewer repetitions")
    ap.add_argument("--clients", type=int, default=4, help="load clients")
    ap.add_argument("--list", action="store_true", help="list the faults and exit")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    if args.list:
        for f in FAULTS:
            print(f"{f.name:12} {f.title}")
        return
    wanted = [f for f in FAULTS if not args.only or f.name in args.only.split(",")]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    work = Path(tempfile.mkdtemp(prefix="scalple-faults-"))
    rows = []
    with stack(work, args.clients) as sb:
        campaign = Campaign(sb, work, quick=args.quick, clients=args.clients)
        campaign.prepare()
        for fault in wanted:
            print(f"== {fault.name}: {fault.title}", flush=True)
            row = run_fault(campaign, fault)
            rows.append(row)
            print(markdown([row]).splitlines()[-1], flush=True)
            if row.missing:
                print(f"   executed but unrecorded: {row.missing[:10]}", flush=True)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    quick = ", --quick" if args.quick else ""
    print(f"\n{when}, {os.cpu_count()} cores (shared), {args.clients} load clients{quick}\n")
    print(markdown(rows))
    shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in rows], indent=2))
    if any(r.unrecorded or (r.verify and r.verify != "intact") for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
