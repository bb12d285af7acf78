"""Shared fixtures: one real PostgreSQL 15 (pgAudit) + PgBouncer (transaction mode) per test run."""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from scalple.sandbox import Sandbox
from tests.proxyproc import ProxyProc

# The uncompiled pass (SCALPLE_PURE=1, scripts/test.sh) is there to show that the hot modules'
# sources (setup.py HOT) behave as their compiled build does. It runs the files that test their
# logic: codec, session, identity, masking and large messages through real clients, the lexer,
# the analysis, the oracle and the ledger's writer. Operations, faults, workers, installing, the
# demo, docs, reports and the ledger's readers go through the same code and are left to the
# compiled pass, which runs everything. SCALPLE_PURE_ALL=1 runs everything uncompiled too.
ON_THE_HOT_PATH = {
    "test_proxy_codec.py", "test_proxy_session.py", "test_proxy_clients.py",
    "test_proxy_identity.py", "test_proxy_pii.py", "test_proxy_large.py",
    "test_identity_claims.py", "test_wire.py", "test_lexer.py", "test_analysis.py",
    "test_analysis_bounds.py", "test_analysis_catalog.py", "test_analysis_corpus.py",
    "test_analysis_flow.py", "test_analysis_text.py", "test_oracle.py", "test_oracle_repros.py",
    "test_oracle_sqltext.py", "test_ledger.py", "test_compiled.py",
}  # fmt: skip


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("SCALPLE_PURE") != "1" or os.environ.get("SCALPLE_PURE_ALL") == "1":
        return
    left = [item for item in items if item.path.name not in ON_THE_HOT_PATH]
    if left:
        config.hook.pytest_deselected(items=left)
        items[:] = [item for item in items if item.path.name in ON_THE_HOT_PATH]


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    """PostgreSQL on sandbox.pg_port and PgBouncer on sandbox.bouncer_port; roles in ROLES."""
    # Its own dir under /tmp: pytest's tmp dirs are 0700, closed to the postgres OS user.
    sb = Sandbox()
    try:
        sb.start_postgres()
        sb.start_pgbouncer()
        yield sb
    finally:
        sb.cleanup()


@pytest.fixture
def make_proxy(
    sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., ProxyProc]]:
    """Start `scalple serve` processes (in front of PgBouncer unless told otherwise)."""
    started: list[ProxyProc] = []

    def make(
        *args: str, upstream: int | None = None, ledger: Path | None = None, **kw: Any
    ) -> ProxyProc:
        # `ledger`: one prepared beforehand (its keys in ledger.parent / "keys")
        ledger = ledger or tmp_path_factory.mktemp("ledger") / "ledger"
        p = ProxyProc(upstream or sandbox.bouncer_port, ledger, args, **kw).start()
        started.append(p)
        return p

    yield make
    for p in started:
        p.stop()


@pytest.fixture
def proxy(make_proxy: Callable[..., ProxyProc]) -> ProxyProc:
    """One `scalple serve` in front of the sandbox's PgBouncer, with its own ledger."""
    return make_proxy()


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own root of trust), and its key."""
    d = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = d / "server.crt", d / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path
