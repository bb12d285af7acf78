"""TLS between clients and the proxy: offered when configured, required when told, never skipped."""

from __future__ import annotations

import socket
import struct
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from scalple.proxy import codec
from scalple.sandbox import client
from tests.proxyproc import ProxyProc, read_events, statements


def _until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def _tls_env(certificate: tuple[Path, Path], **more: str) -> dict[str, str]:
    cert, key = certificate
    return {"SCALPLE_TLS_CERT": str(cert), "SCALPLE_TLS_KEY": str(key), **more}


def test_clients_connect_over_verified_tls_and_are_audited(
    make_proxy: Callable[..., ProxyProc], certificate: tuple[Path, Path]
) -> None:
    proxy = make_proxy(env=_tls_env(certificate))
    dsn = proxy.dsn(sslmode="verify-full", sslrootcert=str(certificate[0]))
    with psycopg.connect(dsn, options="-c scalple.user=alice@example.com") as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 41 + 1").fetchone() == (42,)
    argv, env = client("psql", proxy.port, "-c", r"\conninfo", "-c", "SELECT 'bob' AS who")
    env |= {"PGSSLMODE": "verify-full", "PGSSLROOTCERT": str(certificate[0])}
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "SSL connection" in out.stdout and "bob" in out.stdout
    recorded = statements(read_events(proxy.ledger))
    mine = [e for e in recorded if e["statement"] == "SELECT 41 + 1"]
    assert len(mine) == 1 and mine[0]["actor"] == "alice@example.com"
    assert mine[0]["status"] == "ok" and mine[0]["rows"] == 1
    assert any(e["statement"] == "SELECT 'bob' AS who" for e in recorded)


def test_plaintext_still_works_unless_tls_is_required(
    make_proxy: Callable[..., ProxyProc], certificate: tuple[Path, Path]
) -> None:
    offered = make_proxy(env=_tls_env(certificate))
    with psycopg.connect(offered.dsn(sslmode="disable")) as conn:
        assert not conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 1").fetchone() == (1,)

    required = make_proxy(env=_tls_env(certificate, SCALPLE_REQUIRE_TLS="true"))
    with pytest.raises(psycopg.OperationalError, match="accepts only encrypted connections"):
        psycopg.connect(required.dsn(sslmode="disable"))
    with psycopg.connect(required.dsn(sslmode="require")) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 2").fetchone() == (2,)
    assert all(e["statement"] != "SELECT 1" for e in read_events(required.ledger))


def test_bytes_in_the_clear_behind_the_ssl_request_end_that_connection(
    make_proxy: Callable[..., ProxyProc], certificate: tuple[Path, Path]
) -> None:
    proxy = make_proxy(env=_tls_env(certificate))
    ssl_request = struct.pack("!II", 8, codec.SSL_REQUEST)
    injected = codec.encode_startup({"user": "app_user", "database": "app"})
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        s.sendall(ssl_request + injected)
        answer = _until_closed(s)
    assert answer[:1] == b"E" and b"unencrypted data after SSL request" in answer
    # The proxy goes on serving everyone else.
    with psycopg.connect(proxy.dsn(sslmode="require")) as conn:
        assert conn.execute("SELECT 3").fetchone() == (3,)


def test_gssapi_encryption_is_declined(
    make_proxy: Callable[..., ProxyProc], certificate: tuple[Path, Path]
) -> None:
    proxy = make_proxy(env=_tls_env(certificate))
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        s.sendall(struct.pack("!II", 8, codec.GSSENC_REQUEST))
        assert s.recv(1) == b"N"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SCALPLE_TLS_CERT": "/nonexistent/server.crt", "SCALPLE_TLS_KEY": "/nonexistent/k"},
         "tls_cert /nonexistent/server.crt (env:SCALPLE_TLS_CERT)"),
        ({"SCALPLE_TLS_CERT": "/nonexistent/server.crt"}, "tls_key is not set"),
        ({"SCALPLE_REQUIRE_TLS": "true"}, "require_tls (env:SCALPLE_REQUIRE_TLS) needs tls_cert"),
    ],
)  # fmt: skip
def test_a_bad_tls_setting_stops_serve_with_its_name(
    make_proxy: Callable[..., ProxyProc], env: dict[str, str], expected: str
) -> None:
    with pytest.raises(RuntimeError, match="scalple serve exited") as failed:
        make_proxy(env=env)
    assert expected in str(failed.value)


def test_a_failed_handshake_ends_only_that_connection(
    make_proxy: Callable[..., ProxyProc], certificate: tuple[Path, Path]
) -> None:
    proxy = make_proxy(env=_tls_env(certificate))
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        s.sendall(struct.pack("!II", 8, codec.SSL_REQUEST))
        assert s.recv(1) == b"S"
        s.sendall(codec.encode_startup({"user": "app_user"}))  # plain text, not a ClientHello
        rest = _until_closed(s)
    assert b"app_user" not in rest  # nothing answered in the clear
    # TLS may close the socket before start_tls reports the failure to us: wait for the log.
    deadline = time.monotonic() + 10
    while "TLS handshake with a client failed" not in proxy.log_text():
        assert time.monotonic() < deadline, proxy.log_text()
        time.sleep(0.05)
    with psycopg.connect(proxy.dsn(sslmode="require")) as conn:
        assert conn.execute("SELECT 4").fetchone() == (4,)


def test_a_handshake_never_started_is_cut_off_without_clear_text(
    make_proxy: Callable[..., ProxyProc], certificate: tuple[Path, Path]
) -> None:
    proxy = make_proxy(env=_tls_env(certificate, SCALPLE_LOGIN_TIMEOUT="1"))
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        s.sendall(struct.pack("!II", 8, codec.SSL_REQUEST))
        assert s.recv(1) == b"S"
        started = time.monotonic()
        assert _until_closed(s) == b""  # closed, and no PostgreSQL error in the clear
    assert time.monotonic() - started < 10
