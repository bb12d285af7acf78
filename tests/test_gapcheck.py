"""`scalple gap-check` against real clusters: the shared-role gap through PgBouncer, per-user roles,
pgAudit off, a session around the proxy, and a checker without pg_monitor."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from scalple.cli.main import app
from scalple.sandbox import Sandbox
from tests.proxyproc import ProxyProc

PEOPLE = ("alice", "bob", "analyst")
MONITOR = "monitor_user"


def gap_check(dsn: str, *args: str, **env: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(
        app, ["gap-check", dsn, "--json", *args], env={"COLUMNS": "200", **env}
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, json.loads(result.stdout)


def findings(report: dict[str, Any], check: str) -> list[dict[str, Any]]:
    return [f for f in report["findings"] if f["check"] == check]


def severities(report: dict[str, Any], check: str) -> list[str]:
    return [f["severity"] for f in findings(report, check)]


def _per_user_cluster(pgaudit: bool) -> Sandbox:
    # The cluster without pgAudit keeps pg_stat_statements, so SET history can be seen there.
    extra = () if pgaudit else ("shared_preload_libraries = 'pg_stat_statements'",)
    sb = Sandbox(pgaudit=pgaudit, extra_conf=extra)
    sb.start_postgres()
    if not pgaudit:
        sb.psql("CREATE EXTENSION pg_stat_statements", dbname="app")
    for person in PEOPLE:
        sb.psql(f"CREATE ROLE {person} LOGIN PASSWORD '{person}-pw'")
    return sb


@pytest.fixture(scope="module")
def per_user_clusters() -> Iterator[dict[str, Sandbox]]:
    """Two clusters where every person has a role: one with pgAudit, one without."""
    with ThreadPoolExecutor(2) as pool:
        futures = {
            "audited": pool.submit(_per_user_cluster, True),
            "unaudited": pool.submit(_per_user_cluster, False),
        }
        clusters = {name: f.result() for name, f in futures.items()}
    try:
        yield clusters
    finally:
        for sb in clusters.values():
            sb.cleanup()


@contextlib.contextmanager
def connected_people(sb: Sandbox) -> Iterator[list[psycopg.Connection[Any]]]:
    """Each person of PEOPLE logged in with their own role, closed afterwards."""
    people = [
        psycopg.connect(
            f"postgresql://{p}:{p}-pw@127.0.0.1:{sb.pg_port}/app",
            application_name=f"{p}-laptop",
            autocommit=True,
        )
        for p in PEOPLE
    ]
    try:
        yield people
    finally:
        for con in people:
            con.close()


def test_shared_role_through_pgbouncer_with_a_leaked_set_is_a_gap(sandbox: Sandbox) -> None:
    # A pool of its own (database postgres), so the leaked SET stays out of other suites' pools.
    via_pool = f"postgresql://app_user:app_secret@127.0.0.1:{sandbox.bouncer_port}/postgres"
    held = [psycopg.connect(via_pool, application_name=name) for name in ("web", "worker", "cron")]
    leaky = psycopg.connect(via_pool, application_name="web", autocommit=True)
    try:
        for con in held:  # each holds a transaction, so each has its own server connection
            con.execute("SELECT 1")
        leaky.execute("SET app.user_id = '42'")
        code, report = gap_check(sandbox.dsn(MONITOR))
    finally:
        for con in (*held, leaky):
            con.close()
    assert code == 1 and report["verdict"] == "gap", report
    shared = findings(report, "shared_roles")[0]
    assert shared["severity"] == "gap"
    line = next(e for e in shared["evidence"] if e.startswith("app_user:"))
    assert "127.0.0.1" in line and all(a in line for a in ("web", "worker", "cron")), line
    leak = findings(report, "set_attribution")[0]
    assert leak["severity"] == "gap"
    assert any("SET app.user_id = '42'" in e for e in leak["evidence"]), leak
    assert "cannot be read" in leak["note"]
    assert severities(report, "pgaudit") == ["ok"]
    assert report["checked_as"] == MONITOR


def _socket_session(sandbox: Sandbox) -> psycopg.Connection[tuple[object, ...]]:
    """A DBA's psql-like session over the Unix socket, i.e. not through the proxy's address."""
    return psycopg.connect(
        host=str(sandbox.base),
        port=sandbox.pg_port,
        dbname="app",
        user="trust_user",
        application_name="dba-psql",
    )


def test_session_around_the_proxy_is_named(sandbox: Sandbox) -> None:
    # Every TCP session in the sandbox comes from 127.0.0.1, the "proxy"; this one uses the socket.
    direct = _socket_session(sandbox)
    try:
        pid = direct.info.backend_pid
        code, report = gap_check(sandbox.dsn(MONITOR), "--proxy-addr", "127.0.0.1/32")
    finally:
        direct.close()
    assert code == 1
    bypass = findings(report, "bypass")[0]
    assert bypass["severity"] == "gap"
    assert f"pid {pid}: trust_user from local socket (dba-psql)" in bypass["evidence"]


def test_proxy_addresses_come_from_the_environment_too(sandbox: Sandbox) -> None:
    direct = _socket_session(sandbox)
    try:
        _, with_env = gap_check(sandbox.dsn(MONITOR), SCALPLE_PROXY_ADDRS="127.0.0.1/32")
        _, without = gap_check(sandbox.dsn(MONITOR), SCALPLE_PROXY_ADDRS="")
    finally:
        direct.close()
    assert severities(with_env, "bypass") == ["gap"]
    assert severities(without, "bypass") == ["info"]


def test_per_user_roles_with_pgaudit_is_no_gap(per_user_clusters: dict[str, Sandbox]) -> None:
    sb = per_user_clusters["audited"]
    with connected_people(sb):
        code, report = gap_check(sb.dsn(MONITOR))
    assert code == 0 and report["verdict"] == "no_gap", report
    assert report["sessions"] == 3
    assert severities(report, "shared_roles") == ["ok"]
    assert not [f for f in report["findings"] if f["severity"] in ("gap", "warning", "unknown")]


def test_pgaudit_off_is_a_gap(per_user_clusters: dict[str, Sandbox]) -> None:
    sb = per_user_clusters["unaudited"]
    with connected_people(sb):
        code, report = gap_check(sb.dsn(MONITOR))
    assert code == 1, report
    assert severities(report, "pgaudit") == ["gap"]
    assert "not loaded" in findings(report, "pgaudit")[0]["title"]
    assert severities(report, "shared_roles") == ["ok"]


def test_without_pg_monitor_it_says_what_it_could_not_see(
    per_user_clusters: dict[str, Sandbox],
) -> None:
    sb = per_user_clusters["audited"]
    with connected_people(sb):
        code, report = gap_check(sb.dsn("pw_user"))
        human = CliRunner().invoke(app, ["gap-check", sb.dsn("pw_user")], env={"COLUMNS": "200"})
    assert code == 2 and report["verdict"] == "unknown", report
    assert any("pg_read_all_stats" in u for u in report["unseen"])
    assert any("shared_preload_libraries" in u for u in report["unseen"])
    assert severities(report, "pgaudit") == ["ok"]  # inferred from pgaudit's own settings
    assert human.exit_code == 2
    assert "Could not see (as pw_user)" in human.stdout
    assert "Could not check everything" in human.stdout


def test_unreachable_database_exits_2_with_a_plain_message() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from scalple.cli.main import main; main()",
            "gap-check",
            "postgresql://monitor_user@127.0.0.1:1/app?connect_timeout=2",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "could not connect to the database" in proc.stderr
    assert "Traceback" not in proc.stderr
    code, report = gap_check("postgresql://monitor_user@127.0.0.1:1/app?connect_timeout=2")
    assert code == 2 and report["verdict"] == "unknown" and "could not connect" in report["error"]


def test_wrong_password_exits_2(sandbox: Sandbox) -> None:
    code, report = gap_check(f"postgresql://monitor_user:nope@127.0.0.1:{sandbox.pg_port}/app")
    assert code == 2
    assert "password authentication failed" in report["error"]


def test_set_history_is_seen_after_the_session_is_gone(
    per_user_clusters: dict[str, Sandbox],
) -> None:
    sb = per_user_clusters["unaudited"]
    with psycopg.connect(
        f"postgresql://bob:bob-pw@127.0.0.1:{sb.pg_port}/app", autocommit=True
    ) as con:
        con.execute("SET app.tenant_id = '17'")
    with connected_people(sb):
        code, report = gap_check(sb.dsn(MONITOR))
    assert code == 1  # pgAudit is off here
    leak = findings(report, "set_attribution")[0]
    assert leak["severity"] == "warning"  # bob is one person's role, not a pooled one
    assert any(
        e.startswith("pg_stat_statements (bob): SET app.tenant_id") for e in leak["evidence"]
    )
    assert "pg_stat_statements' history" in leak["note"]


def test_pgaudit_switched_off_for_one_role_is_a_gap(per_user_clusters: dict[str, Sandbox]) -> None:
    sb = per_user_clusters["audited"]
    sb.psql("ALTER ROLE analyst SET pgaudit.log = 'none'")
    with connected_people(sb):
        code, report = gap_check(sb.dsn(MONITOR))
        sb.psql("ALTER ROLE analyst RESET pgaudit.log")
    assert code == 1, report
    off = [f for f in findings(report, "pgaudit") if f["severity"] == "gap"]
    assert off and off[0]["evidence"] == [
        "ALTER ROLE analyst IN DATABASE * SET pgaudit.log = 'none'"
    ]


@pytest.fixture(scope="module")
def behind_scalple(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sandbox, ProxyProc]]:
    """PostgreSQL (pgAudit) behind PgBouncer behind a real `scalple serve`."""
    sb = Sandbox()
    proxy: ProxyProc | None = None
    try:
        sb.start_postgres()
        sb.start_pgbouncer()
        ledger: Path = tmp_path_factory.mktemp("gapcheck-proxy") / "ledger"
        proxy = ProxyProc(sb.bouncer_port, ledger).start()
        yield sb, proxy
    finally:
        if proxy is not None:
            proxy.stop()
        sb.cleanup()


def test_shared_role_behind_scalple_is_no_gap(behind_scalple: tuple[Sandbox, ProxyProc]) -> None:
    sb, proxy = behind_scalple
    clients = []
    try:
        for person, app_name in (("alice", "web"), ("bob", "worker"), ("carol", "cron")):
            con = psycopg.connect(proxy.dsn(application_name=app_name))
            con.execute(f"SET scalple.user = '{person}@corp.example'")  # answered by Scalple
            con.execute("SELECT 1")  # the open transaction holds a server connection
            clients.append(con)
        code, report = gap_check(sb.dsn(MONITOR), "--proxy-addr", "127.0.0.1/32")
    finally:
        for con in clients:
            con.close()
    assert code == 0 and report["verdict"] == "no_gap", report
    through = [f for f in findings(report, "shared_roles") if "through Scalple" in f["title"]]
    assert through and through[0]["evidence"][0].startswith("app_user: 3 of 3 client sessions")
    assert severities(report, "set_attribution") == ["ok"]  # Scalple's own neutral SET is not one
    assert severities(report, "bypass") == ["ok"]
