"""`scalple serve --workers 2` through the real stack (PgBouncer, PostgreSQL with pgAudit):
statements spread over both workers and their lanes, cancel requests routed to the worker that
holds the connection, a worker killed and restarted with nothing lost, one /metrics, SIGHUP."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import psycopg
import pytest

from scalple.ledger.lanes import lane_dir, lane_name
from scalple.proxy import codec
from scalple.sandbox import Sandbox, free_port
from tests.proxyproc import Event, ProxyProc, read_events, statements
from tests.wire import Wire, errors

WORKERS = 2


def lane(proxy: ProxyProc, index: int) -> Path:
    return lane_dir(proxy.ledger, lane_name(socket.gethostname(), index))


def lane_statements(proxy: ProxyProc) -> dict[int, list[Event]]:
    return {i: statements(read_events(lane(proxy, i))) for i in range(WORKERS)}


def holder(proxy: ProxyProc, client_port: int) -> int | None:
    """The worker whose process holds the server end of the connection from `client_port`."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1].split(":")[1], fields[2].split(":")[1]
        if int(local, 16) == proxy.port and int(remote, 16) == client_port:
            inodes.add(f"socket:[{fields[9]}]")
    for index, pid in proxy.worker_pids().items():
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return index
    return None


def held_by(proxy: ProxyProc, client_port: int) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = holder(proxy, client_port)
        if found is not None:
            return found
        time.sleep(0.02)  # not accepted yet
    raise AssertionError(f"no worker holds the connection from port {client_port}")


def socket_on(proxy: ProxyProc, worker: int) -> socket.socket:
    """A TCP connection to the shared port that the kernel gave to `worker` (tried until so)."""
    for _ in range(200):
        sock = socket.create_connection(("127.0.0.1", proxy.port), 10)
        if held_by(proxy, sock.getsockname()[1]) == worker:
            return sock
        sock.close()
    raise AssertionError(f"no connection landed on worker {worker}")


def verify(proxy: ProxyProc, ledger: Path) -> subprocess.CompletedProcess[str]:
    public = proxy.ledger.parent / "keys" / "signing.pub"
    return subprocess.run(
        [sys.executable, "-m", "scalple", "verify", str(ledger), "--public-key", str(public)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_verifies(proxy: ProxyProc) -> None:
    """The whole ledger verifies: every lane, and the lanes its signatures list are all there."""
    done = verify(proxy, proxy.ledger)
    assert done.returncode == 0, done.stdout + done.stderr
    for i in range(WORKERS):
        assert lane_name(socket.gethostname(), i) in done.stdout + done.stderr


@pytest.fixture
def workers(make_proxy: Callable[..., ProxyProc]) -> Iterator[ProxyProc]:
    proxy = make_proxy("--workers", str(WORKERS))
    deadline = time.monotonic() + 30
    while len(proxy.worker_pids()) < WORKERS and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(proxy.worker_pids()) == list(range(WORKERS))
    yield proxy


def test_statements_spread_over_both_lanes_each_attributed_right(workers: ProxyProc) -> None:
    proxy = workers
    run = uuid.uuid4().hex[:8]
    landed: dict[str, int] = {}  # actor → worker holding its connection
    conns: list[psycopg.Connection[tuple[object, ...]]] = []
    while len(conns) < 6 or len(set(landed.values())) < WORKERS:
        assert len(conns) < 64, "every connection landed on one worker"
        actor = f"p{len(conns)}-{run}@corp.example"
        conn = psycopg.connect(proxy.dsn(), autocommit=True)
        conn.execute(f"SET scalple.user = '{actor}'")
        landed[actor] = held_by(proxy, _local_port(conn))
        conns.append(conn)

    def talk(conn: psycopg.Connection[tuple[object, ...]], actor: str) -> None:
        tag = actor.split("@")[0]  # a literal with an email in it would be masked
        for n in range(5):
            assert conn.execute(f"SELECT 'mark-{tag}-{n}'").fetchone() == (f"mark-{tag}-{n}",)

    threads = [
        threading.Thread(target=talk, args=(c, a)) for c, a in zip(conns, landed, strict=True)
    ]

    async def asyncpg_clients() -> None:
        async def one(k: int) -> None:
            actor = f"a{k}-{run}@corp.example"
            conn = await asyncpg.connect(
                proxy.dsn(), server_settings={"application_name": "workers-test"}
            )
            try:
                sockname = conn._transport.get_extra_info("sockname")  # type: ignore[attr-defined]
                landed[actor] = await asyncio.to_thread(held_by, proxy, sockname[1])
                for n in range(5):
                    sql = f"/*user='{actor.replace('@', '%40')}'*/ SELECT 'mark-a{k}-{run}-{n}'"
                    assert await conn.fetchval(sql) == f"mark-a{k}-{run}-{n}"
            finally:
                await conn.close()

        await asyncio.gather(*(one(k) for k in range(6)))

    for t in threads:
        t.start()
    asyncio.run(asyncpg_clients())
    for t in threads:
        t.join(60)
    for conn in conns:
        conn.close()
    assert proxy.stop() == 0

    by_lane = lane_statements(proxy)
    assert all(by_lane[i] for i in range(WORKERS)), "a worker's lane got no statement"
    marks = {}
    for index, rows in by_lane.items():
        for row in rows:
            m = re.search(rf"mark-([pa]\d+-{run})-\d", str(row["statement"]))
            if m:
                marks[m.group(0)] = (index, row)
    assert len(marks) == len(landed) * 5, "a statement the clients saw answered is missing"
    for mark, (index, row) in marks.items():
        actor = mark[len("mark-") : -2] + "@corp.example"
        assert row["actor"] == actor, mark
        assert index == landed[actor], f"{mark} is in lane {index}, its connection on another"
        assert row["status"] == "ok"
    assert_verifies(proxy)


def test_cancel_reaches_the_worker_holding_the_connection(workers: ProxyProc) -> None:
    proxy = workers
    on: dict[int, Wire] = {}
    spare: list[Wire] = []
    while len(on) < WORKERS:
        assert len(on) + len(spare) < 64, "every connection landed on one worker"
        wire = Wire.connect(proxy.port, "app_user", "app", timeout=30)
        assert wire.backend_key is not None
        owner = wire.backend_key[1] & (WORKERS - 1)  # the worker bits of the key it was given
        assert held_by(proxy, wire.sock.getsockname()[1]) == owner
        if owner in on:
            spare.append(wire)
        else:
            on[owner] = wire
    target, other = on[0], on[1]
    assert target.backend_key is not None
    target.send(codec.message(b"Q", b"SELECT pg_sleep(60), 'cancel-me'\0"))
    other.send(codec.message(b"Q", b"SELECT pg_sleep(2), 'let-me-be'\0"))
    time.sleep(0.5)  # both statements reach the server (a cancel sent earlier would miss)

    # The cancel lands on worker 1, which does not hold the statement it names.
    with socket_on(proxy, 1) as sock:
        sock.sendall(codec.encode_cancel(*target.backend_key))
        sock.settimeout(30)
        assert sock.recv(1) == b""  # closed once the cancel went on

    cancelled = target.read()
    assert [e.sqlstate for e in errors(cancelled)] == ["57014"]
    finished = other.read()
    assert not errors(finished), "the other worker's statement was cancelled"
    for wire in (*on.values(), *spare):
        wire.close()
    assert "cancel request passed to worker 0" in proxy.log_text()
    assert proxy.stop() == 0
    by_lane = lane_statements(proxy)
    (mine,) = [r for r in by_lane[0] if "cancel-me" in str(r["statement"])]
    (theirs,) = [r for r in by_lane[1] if "let-me-be" in str(r["statement"])]
    assert mine["status"] == "cancelled" and theirs["status"] == "ok"


def test_a_cancel_for_a_key_no_worker_gave_cancels_nothing(workers: ProxyProc) -> None:
    proxy = workers
    wire = Wire.connect(proxy.port, "app_user", "app", timeout=30)
    assert wire.backend_key is not None
    pid, secret = wire.backend_key
    wire.send(codec.message(b"Q", b"SELECT pg_sleep(1), 'stay'\0"))
    time.sleep(0.3)
    for worker in range(WORKERS):  # the right worker bits, the wrong secret, on each worker
        with socket_on(proxy, worker) as sock:
            sock.sendall(codec.encode_cancel(pid, secret ^ (1 << 20)))
            sock.settimeout(30)
            assert sock.recv(1) == b""
    assert not errors(wire.read())
    wire.close()


def test_killed_worker_is_restarted_and_nothing_executed_is_unrecorded(
    workers: ProxyProc, sandbox: Sandbox
) -> None:
    proxy = workers
    run = uuid.uuid4().hex[:8]
    victim, survivor = 0, 1
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def connect_on(worker: int) -> psycopg.Connection[tuple[object, ...]]:
        for _ in range(200):
            conn = psycopg.connect(proxy.dsn(), autocommit=True)
            if held_by(proxy, _local_port(conn)) == worker:
                return conn
            conn.close()
        raise AssertionError(f"no connection landed on worker {worker}")

    def steady(conn: psycopg.Connection[tuple[object, ...]], name: str) -> None:
        n = 0
        while not stop.is_set():
            mark = f"steady-{run}-{name}-{n}"
            conn.execute(f"SELECT '{mark}'")
            with lock:
                acknowledged.append(mark)
            n += 1
            time.sleep(0.01)

    survivors = [connect_on(survivor) for _ in range(2)]
    threads = [threading.Thread(target=steady, args=(c, f"s{i}")) for i, c in enumerate(survivors)]
    for t in threads:
        t.start()

    doomed = connect_on(victim)
    failed: list[BaseException] = []

    def in_flight() -> None:
        try:
            doomed.execute(f"SELECT pg_sleep(60), 'inflight-{run}'")
        except psycopg.Error as exc:
            failed.append(exc)

    flying = threading.Thread(target=in_flight)
    flying.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # the statement runs on the server now
        out = sandbox.psql(
            f"SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%inflight-{run}%' "
            "AND pid <> pg_backend_pid()"
        )
        if out.stdout.strip() == "1":
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the in-flight statement never reached the server")
    before = len(acknowledged)
    old = proxy.worker_pids()[victim]
    os.kill(old, signal.SIGKILL)
    flying.join(30)
    assert failed, "the statement in flight on the killed worker was answered"
    sandbox.psql(  # its server connection is still busy sleeping; free PgBouncer's pool
        f"SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE '%inflight-{run}%' "
        "AND pid <> pg_backend_pid()"
    )
    deadline = time.monotonic() + 60
    while proxy.worker_pids().get(victim) in (None, old) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proxy.worker_pids().get(victim) not in (None, old), "the worker was not restarted"
    reborn = connect_on(victim)  # the restarted worker serves again
    assert reborn.execute(f"SELECT 'reborn-{run}'").fetchone() == (f"reborn-{run}",)
    reborn.close()
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(30)
    assert len(acknowledged) > before, "the other worker's clients stopped"
    for conn in survivors:
        conn.close()
    assert re.search(rf"worker {victim} \(pid {old}\) killed by signal 9", proxy.log_text())
    assert proxy.stop() == 0
    assert_verifies(proxy)

    recorded = {i: rows for i, rows in lane_statements(proxy).items()}
    text = {str(r["statement"]): r for rows in recorded.values() for r in rows}
    (inflight,) = [r for r in recorded[victim] if f"inflight-{run}" in str(r["statement"])]
    assert inflight["status"] == "incomplete"
    assert any(f"reborn-{run}" in s for s in (str(r["statement"]) for r in recorded[victim]))
    seen = " ".join(text)
    missing = [m for m in acknowledged if f"'{m}'" not in seen]
    assert not missing, f"acknowledged but not recorded: {missing[:5]}"
    executed = set(re.findall(rf"(?:steady|inflight|reborn)-{run}[\w-]*", sandbox.postgres_log()))
    unrecorded = [m for m in executed if m not in seen]
    assert executed and not unrecorded, f"executed but not recorded: {unrecorded[:5]}"


def _samples(text: str, name: str) -> dict[str, float]:
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(rf'^{name}\{{worker="(\d+)"\}} (\S+)$', text, re.MULTILINE)
    }


def test_one_metrics_endpoint_and_sighup_reach_every_worker(
    make_proxy: Callable[..., ProxyProc], tmp_path: Path
) -> None:
    config = tmp_path / "scalple.toml"
    config.write_text("[identity]\nrequire_identity = false\n")
    port = free_port()
    proxy = make_proxy(
        "--workers", str(WORKERS), "--metrics-listen", f"127.0.0.1:{port}", "--config", str(config)
    )
    assert proxy.proc is not None
    conns, holders = [], set()
    while len(holders) < WORKERS:
        assert len(conns) < 64, "every connection landed on one worker"
        conns.append(psycopg.connect(proxy.dsn(), autocommit=True))
        holders.add(held_by(proxy, _local_port(conns[-1])))
    for conn in conns:
        conn.execute("SELECT 1")
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    counted = _samples(text, "scalple_statements_total")
    assert set(counted) == {"0", "1"} and sum(counted.values()) == len(conns)
    assert re.search(r"^scalple_workers 2\.0$", text, re.MULTILINE)

    config.write_text("[identity]\nrequire_identity = true\n")
    proxy.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while proxy.log_text().count("configuration reloaded") < WORKERS:
        assert time.monotonic() < deadline, proxy.log_text()
        time.sleep(0.05)
    assert {f"[w{i}]" for i in range(WORKERS)} <= set(re.findall(r"\[w\d+\]", proxy.log_text()))
    for conn in conns:
        conn.close()
    refused = 0
    for _ in range(8):  # new connections, on both workers, now need an identity
        with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
            with contextlib.suppress(psycopg.errors.InvalidAuthorizationSpecification):
                conn.execute("SELECT 2")
                continue
            refused += 1
    assert refused == 8


def _local_port(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
    try:
        return int(sock.getsockname()[1])
    finally:
        sock.close()


def serve_once(
    sandbox: Sandbox, tmp_path: Path, port: int, **env: str
) -> subprocess.CompletedProcess[str]:
    """`scalple serve --workers 2` expected to fail: its exit code and what it said."""
    return subprocess.run(
        [
            sys.executable, "-m", "scalple", "serve", "--workers", str(WORKERS),
            "--listen", f"127.0.0.1:{port}",
            "--upstream", f"postgresql://127.0.0.1:{sandbox.bouncer_port}",
            "--ledger", str(tmp_path / "ledger"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SCALPLE_CONFIG": os.devnull, "SCALPLE_KEY_DIR": str(tmp_path / "keys"),
             **env},
    )  # fmt: skip


def test_serve_exits_non_zero_when_a_worker_cannot_start(sandbox: Sandbox, tmp_path: Path) -> None:
    with socket.socket() as taken:  # a stranger holds the port: no worker may share it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = serve_once(sandbox, tmp_path, taken.getsockname()[1])
    assert done.returncode == 2 and "cannot listen on" in done.stderr, done.stderr

    bad = tmp_path / "people"
    bad.write_text("not a verifier line\n")
    people = {"SCALPLE_PEOPLE_FILE": str(bad), "SCALPLE_PEOPLE_ROLE": "app_user"}
    done = serve_once(sandbox, tmp_path, free_port(), **people)
    assert done.returncode == 2, done.stderr
    assert re.search(r"scalple \[w\d\]: .*people", done.stderr), done.stderr
    assert "could not start" in done.stderr
    left = [
        p
        for p in Path("/proc").iterdir()
        if p.name.isdigit()
        and str(tmp_path) in _cmdline(p)
        and "scalple.proxy.worker" in _cmdline(p)
    ]
    assert not left, "a worker outlived its supervisor"


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def test_workers_default_to_the_cores_and_config_show_says_so() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCALPLE_")}
    shown = subprocess.run(
        [sys.executable, "-m", "scalple", "config", "show", "--json"],
        capture_output=True,
        text=True,
        env={**env, "SCALPLE_CONFIG": os.devnull, "SCALPLE_WORKERS": "3"},
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert '"workers"' in shown.stdout
    import json

    (setting,) = [s for s in json.loads(shown.stdout)["settings"] if s["name"] == "workers"]
    assert setting["value"] == 3 and setting["origin"] == "env:SCALPLE_WORKERS"
    from scalple import config as cfg

    assert cfg.load(Path(os.devnull), env={})["workers"] == (os.cpu_count() or 1)
