"""People who sign in to Scalple themselves (`proxy_auth`): their verifiers and the SCRAM talk.

A person connects with their own name and password; Scalple checks it with SCRAM-SHA-256 against
a verifier in the people file (the format PostgreSQL keeps in pg_authid and PgBouncer in its
auth_file: `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, so no password is kept),
then connects upstream as the shared role and answers the upstream's password request itself.

The client side of SCRAM (towards the upstream) and verifier creation are scramp's. The server
side is here: libpq sends an empty SCRAM user name (`n=,`), which scramp's server refuses, and the
proof covers those exact bytes, so they cannot be rewritten for it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path

from scramp import ScramClient, ScramException, ScramMechanism

from scalple.errors import ConfigError
from scalple.ledger.layout import write_atomically

MECHANISM = "SCRAM-SHA-256"
ITERATIONS = 4096


class AuthFailed(Exception):
    """The person's proof did not match, or the exchange was malformed."""


@dataclass(frozen=True)
class Verifier:
    iterations: int
    salt: bytes
    stored_key: bytes
    server_key: bytes

    @classmethod
    def parse(cls, text: str) -> Verifier:
        try:
            mech, rest = text.split("$", 1)
            params, keys = rest.split("$", 1)
            iterations, salt = params.split(":", 1)
            stored, server = keys.split(":", 1)
            if mech != MECHANISM:
                raise ValueError(f"not {MECHANISM}")
            v = cls(
                int(iterations),
                base64.b64decode(salt, validate=True),
                base64.b64decode(stored, validate=True),
                base64.b64decode(server, validate=True),
            )
        except ValueError as exc:
            raise ValueError(f"not a SCRAM-SHA-256 verifier ({exc})") from None
        if v.iterations < 1 or len(v.stored_key) != 32 or len(v.server_key) != 32:
            raise ValueError("not a SCRAM-SHA-256 verifier (bad iterations or key length)")
        return v

    def __str__(self) -> str:
        return (
            f"{MECHANISM}${self.iterations}:{_b64(self.salt)}$"
            f"{_b64(self.stored_key)}:{_b64(self.server_key)}"
        )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def make_verifier(password: str, iterations: int = ITERATIONS) -> Verifier:
    salt, stored, server, count = ScramMechanism(MECHANISM).make_auth_info(
        password, iteration_count=iterations
    )
    return Verifier(count, salt, stored, server)


def load_people(path: Path) -> dict[str, Verifier]:
    """`NAME VERIFIER` per line (`#` comments, blank lines); a bad line is named."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"people_file {path}: {exc.strerror or exc}") from exc
    people: dict[str, Verifier] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ConfigError(f"{path}:{number}: expected 'NAME VERIFIER', got {len(parts)} fields")
        try:
            people[parts[0]] = Verifier.parse(parts[1])
        except ValueError as exc:
            raise ConfigError(f"{path}:{number}: {parts[0]}: {exc}") from None
    return people


def save_person(path: Path, name: str, verifier: Verifier) -> bool:
    """Add or replace `name` in the people file (created 0600); True if it was replaced."""
    if not name or any(c.isspace() for c in name) or name.startswith("#"):
        raise ConfigError(f"a person's name may not be empty or hold spaces: {name!r}")
    lines = path.read_text().splitlines() if path.exists() else []
    replaced = False
    out = []
    for line in lines:
        if line.split()[:1] == [name]:
            out.append(f"{name} {verifier}")
            replaced = True
        else:
            out.append(line)
    if not replaced:
        out.append(f"{name} {verifier}")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, ("\n".join(out) + "\n").encode(), 0o600)
    return replaced


def _attrs(text: str) -> dict[str, str]:
    out = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or len(key) != 1:
            raise AuthFailed(f"malformed SCRAM attribute {part[:20]!r}")
        out[key] = value
    return out


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


class ServerExchange:
    """One SCRAM-SHA-256 sign-in, server side (RFC 5802 / RFC 7677, no channel binding)."""

    def __init__(self, verifier: Verifier) -> None:
        self.verifier = verifier
        self._first_bare = ""
        self._server_first = ""
        self._nonce = ""
        self._gs2 = ""

    @property
    def started(self) -> bool:
        return bool(self._server_first)

    def first(self, client_first: str) -> str:
        """The client-first message in; the server-first message out."""
        flag, _, rest = client_first.partition(",")
        authzid, _, bare = rest.partition(",")
        if flag not in ("n", "y") or authzid:  # p=…: channel binding, which we never offer
            raise AuthFailed("unsupported SCRAM channel binding or authorization identity")
        attrs = _attrs(bare)
        client_nonce = attrs.get("r", "")
        if not client_nonce or "n" not in attrs:
            raise AuthFailed("SCRAM client-first message lacks its nonce")
        self._gs2 = f"{flag},,"
        self._first_bare = bare
        self._nonce = client_nonce + base64.b64encode(secrets.token_bytes(18)).decode()
        salt = base64.b64encode(self.verifier.salt).decode()
        self._server_first = f"r={self._nonce},s={salt},i={self.verifier.iterations}"
        return self._server_first

    def final(self, client_final: str) -> str:
        """The client-final message in; the server-final message out, if the proof is right."""
        without_proof, sep, proof_part = client_final.rpartition(",p=")
        if not sep:
            raise AuthFailed("SCRAM client-final message lacks its proof")
        attrs = _attrs(without_proof)
        if attrs.get("r") != self._nonce:
            raise AuthFailed("SCRAM nonce mismatch")
        if attrs.get("c") != base64.b64encode(self._gs2.encode()).decode():
            raise AuthFailed("SCRAM channel binding data mismatch")
        try:
            proof = base64.b64decode(proof_part, validate=True)
        except ValueError:
            raise AuthFailed("SCRAM proof is not base64") from None
        message = f"{self._first_bare},{self._server_first},{without_proof}".encode()
        signature = _hmac(self.verifier.stored_key, message)
        if len(proof) != len(signature):
            raise AuthFailed("SCRAM proof has the wrong length")
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(hashlib.sha256(client_key).digest(), self.verifier.stored_key):
            raise AuthFailed("password does not match")
        server_signature = _hmac(self.verifier.server_key, message)
        return "v=" + base64.b64encode(server_signature).decode()


class UpstreamLogin:
    """Answers the upstream's password requests as the shared role."""

    def __init__(self, role: str, password: str) -> None:
        self.role = role
        self.password = password
        self._scram: ScramClient | None = None

    def answer(self, code: int, data: bytes) -> bytes | None:
        """The password message body for an Authentication request, or None (nothing to send).

        Raises AuthFailed for a method we cannot answer or a server that fails its proof."""
        if code == 0:
            return None
        if code == 3:  # cleartext
            return self.password.encode() + b"\x00"
        if code == 5:  # md5(md5(password + user) + salt)
            inner = hashlib.md5((self.password + self.role).encode()).hexdigest()
            return b"md5" + hashlib.md5(inner.encode() + data[:4]).hexdigest().encode() + b"\x00"
        try:
            if code == 10:  # SASL: the mechanisms offered
                offered = [m.decode() for m in data.split(b"\x00") if m]
                if MECHANISM not in offered:
                    raise AuthFailed(f"upstream offers only {', '.join(offered)}")
                self._scram = ScramClient([MECHANISM], self.role, self.password)
                first = str(self._scram.get_client_first()).encode()
                return MECHANISM.encode() + b"\x00" + len(first).to_bytes(4, "big") + first
            if code == 11 and self._scram is not None:
                self._scram.set_server_first(data.decode())
                return str(self._scram.get_client_final()).encode()
            if code == 12 and self._scram is not None:
                self._scram.set_server_final(data.decode())
                return None
        except (ScramException, UnicodeDecodeError) as exc:
            raise AuthFailed(f"SCRAM with the upstream failed: {exc}") from None
        raise AuthFailed(f"the upstream asks for an authentication method (code {code}) that "
                         "scalple cannot answer")  # fmt: skip
