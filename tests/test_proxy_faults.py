"""Bad bytes, stalls and broken upstreams end one connection, with an ErrorResponse; the rest go on.
A statement whose audit record cannot be written is refused, never forwarded."""

from __future__ import annotations

import resource
import socket
import struct
import threading
import time
from collections.abc import Callable

import psycopg
import pytest

from scalple.proxy import codec
from scalple.sandbox import Sandbox, free_port
from tests.proxyproc import ProxyProc


def _startup(sock: socket.socket, user: str = "trust_user") -> None:
    sock.sendall(codec.encode_startup({"user": user, "database": "app"}))
    buf = b""
    while not buf.endswith(codec.encode_ready("I")):
        chunk = sock.recv(65536)
        assert chunk, f"closed during startup: {buf!r}"
        buf += chunk


def _read_error(sock: socket.socket) -> dict[str, str]:
    """Read until the proxy closes; return the fields of the ErrorResponse it sent last."""
    sock.settimeout(15)
    buf = b""
    while chunk := sock.recv(65536):
        buf += chunk
    pos = buf.rfind(b"E")
    while pos >= 0:
        (length,) = struct.unpack_from("!I", buf, pos + 1)
        if pos + 1 + length == len(buf):
            return codec.decode_error_fields(buf[pos + 5 :])
        pos = buf.rfind(b"E", 0, pos)
    raise AssertionError(f"no ErrorResponse before close: {buf[-200:]!r}")


@pytest.fixture
def direct(make_proxy: Callable[..., ProxyProc], sandbox: Sandbox) -> ProxyProc:
    """A proxy straight in front of PostgreSQL, where trust_user logs in without a password."""
    return make_proxy(
        upstream=sandbox.pg_port,
        env={"SCALPLE_STALL_TIMEOUT": "1", "SCALPLE_MAX_MESSAGE_BYTES": "100000"},
    )


def _still_serves(proxy: ProxyProc) -> None:
    with psycopg.connect(proxy.dsn("trust_user", "")) as conn:
        assert conn.execute("SELECT 42").fetchone() == (42,)


def test_malformed_message_closes_only_that_connection(direct: ProxyProc) -> None:
    with psycopg.connect(direct.dsn("trust_user", "")) as bystander:
        with socket.create_connection(("127.0.0.1", direct.port)) as sock:
            _startup(sock)
            sock.sendall(b"Q\x00\x00\x00\x02")  # length below the minimum of 4
            err = _read_error(sock)
        assert err["C"] == "08P01" and err["S"] == "FATAL"
        assert "invalid message length" in err["M"]
        assert bystander.execute("SELECT 1").fetchone() == (1,)
    _still_serves(direct)


def test_bad_startup_packets(direct: ProxyProc) -> None:
    for packet in (
        struct.pack("!II", 8, 0x00020000),  # protocol 2
        struct.pack("!I", 3) + b"xxxx",  # impossible length
        codec.encode_startup({"database": "app"}),
    ):  # no user
        with socket.create_connection(("127.0.0.1", direct.port)) as sock:
            sock.sendall(packet)
            err = _read_error(sock)
            assert err["S"] == "FATAL" and err["C"] in ("08P01", "0A000", "28000"), err
    _still_serves(direct)


def test_oversized_message_is_refused(direct: ProxyProc) -> None:
    with socket.create_connection(("127.0.0.1", direct.port)) as sock:
        _startup(sock)
        sock.sendall(codec.encode_query("SELECT '" + "x" * 200_000 + "'"))
        err = _read_error(sock)
    assert err["C"] == "54000" and "exceeds the limit" in err["M"]
    _still_serves(direct)


def test_client_stalling_mid_message_is_cut_off(direct: ProxyProc) -> None:
    with socket.create_connection(("127.0.0.1", direct.port)) as sock:
        _startup(sock)
        whole = codec.encode_query("SELECT 1")
        sock.sendall(whole[:7])
        started = time.monotonic()
        err = _read_error(sock)
    assert err["C"] == "08P01" and "stalled" in err["M"]
    assert time.monotonic() - started < 10
    _still_serves(direct)


def test_idle_client_is_not_cut_off(direct: ProxyProc) -> None:
    with psycopg.connect(direct.dsn("trust_user", "")) as conn:
        time.sleep(1.5)  # longer than the stall timeout, but between messages
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_unreachable_upstream_says_so(make_proxy: Callable[..., ProxyProc]) -> None:
    proxy = make_proxy(upstream=free_port())
    with pytest.raises(psycopg.OperationalError, match="cannot reach the upstream"):
        psycopg.connect(proxy.dsn(), connect_timeout=10)


def test_upstream_dying_mid_statement(direct: ProxyProc, sandbox: Sandbox) -> None:
    with psycopg.connect(direct.dsn("trust_user", ""), autocommit=True) as victim:
        pid = victim.info.backend_pid  # ours, not PostgreSQL's: find the backend by its query
        assert pid
        killer = threading.Timer(
            0.7,
            lambda: sandbox.psql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE query LIKE '%victim_sleep%' AND pid <> pg_backend_pid()"
            ),
        )
        killer.start()
        with pytest.raises(psycopg.OperationalError):
            victim.execute("SELECT pg_sleep(20) /*victim_sleep=''*/")
        killer.join()
    _still_serves(direct)
    rows = direct.statements()
    (slept,) = [r for r in rows if "victim_sleep" in r["statement"]]
    assert slept["status"] == "error" and slept["sqlstate"] == "57P01"


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (48_000, 48_000))


def test_statement_is_refused_when_its_record_cannot_be_written(
    make_proxy: Callable[..., ProxyProc], sandbox: Sandbox
) -> None:
    """With the ledger's files capped in size, writes fail (EFBIG): every statement after that
    is refused with an error and never reaches PostgreSQL."""
    sandbox.psql(
        "DROP TABLE IF EXISTS failclosed; CREATE TABLE failclosed (n int, pad text);"
        "ALTER TABLE failclosed OWNER TO trust_user",
        dbname="app",
    )
    proxy = make_proxy(upstream=sandbox.pg_port, preexec=_limit_file_size)
    refused_at = None
    with psycopg.connect(proxy.dsn("trust_user", ""), autocommit=True) as conn:
        for n in range(2000):
            try:
                conn.execute(f"INSERT INTO failclosed VALUES ({n}, '{'p' * 200}')")
            except psycopg.Error as exc:
                refused_at = n
                assert exc.sqlstate == "58030", exc
                assert "audit record could not be written" in str(exc)
                break
        assert refused_at is not None, "the ledger never filled up"
        with pytest.raises(psycopg.Error):
            conn.execute(f"INSERT INTO failclosed VALUES ({refused_at + 1}, 'x')")
    landed = sandbox.psql("SELECT count(*), coalesce(max(n), -1) FROM failclosed", dbname="app")
    count, highest = map(int, landed.stdout.strip().split("|"))
    assert highest == refused_at - 1 and count == refused_at, "a refused INSERT reached the table"


@pytest.mark.parametrize("stop_after", ["connect", "ssl_request", "startup_without_password"])
def test_a_client_that_never_signs_in_is_cut_off(
    make_proxy: Callable[..., ProxyProc], stop_after: str
) -> None:
    proxy = make_proxy(env={"SCALPLE_LOGIN_TIMEOUT": "1"})  # PgBouncer asks app_user for SCRAM
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        if stop_after == "ssl_request":
            sock.sendall(struct.pack("!II", 8, codec.SSL_REQUEST))
            assert sock.recv(1) == b"N"
        elif stop_after == "startup_without_password":
            sock.sendall(codec.encode_startup({"user": "app_user", "database": "app"}))
        started = time.monotonic()
        err = _read_error(sock)
    assert err["C"] == "08P01" and "login_timeout" in err["M"]
    assert time.monotonic() - started < 10
    with psycopg.connect(proxy.dsn()) as conn:  # signed in, then idle past it: still served
        time.sleep(1.5)
        assert conn.execute("SELECT 1").fetchone() == (1,)
