"""Signing keys (Ed25519) for checkpoints, their rotation, and the secret for keyed subject hashes.

A key directory holds `signing.key` (PKCS#8 PEM, 0600), `signing.pub` (PEM), `subject.secret`
(0600), `retired/<key id>.pub` and `rotations/<n>.rotation`. The private key is never printed,
logged, stored in a ledger or put into an error message.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Final

import msgspec
import platformdirs
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from scalple.errors import LedgerError
from scalple.ledger.layout import write_atomically

log = logging.getLogger("scalple.ledger")

SIGNING_KEY: Final = "signing.key"
PUBLIC_KEY: Final = "signing.pub"
SUBJECT_SECRET: Final = "subject.secret"
ROTATION_DOMAIN: Final = b"scalple/key-rotation/v1\n"


def default_key_dir() -> Path:
    return Path(platformdirs.user_config_dir("scalple")) / "keys"


def resolve_key_dir(value: str | Path | None) -> Path:
    """The `key_dir` setting as a path: the platform default when unset."""
    return Path(value).expanduser() if value else default_key_dir()


def key_id(public_hex: str) -> str:
    return hashlib.sha256(bytes.fromhex(public_hex)).hexdigest()[:16]


def public_hex(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def public_from_hex(value: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(value))
    except ValueError as exc:
        raise LedgerError(f"not an Ed25519 public key: {value[:16]}…") from exc


def verify_signature(public: str, signature: str, message: bytes) -> bool:
    # Lower-case hex only, as written: upper case would decode to the same bytes, so a signed
    # file could be changed without the change showing.
    if signature != signature.lower() or public != public.lower():
        return False
    try:
        public_from_hex(public).verify(bytes.fromhex(signature), message)
    except (InvalidSignature, ValueError, LedgerError):
        return False
    return True


class SigningKey:
    """The private key, kept opaque: its repr names only the public key id."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public = public_hex(private.public_key())
        self.id = key_id(self.public)

    def sign(self, message: bytes) -> str:
        return self._private.sign(message).hex()

    def __repr__(self) -> str:
        return f"SigningKey(id={self.id})"

    def private_pem(self) -> bytes:
        return self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def public_pem(self) -> bytes:
        return public_pem(self.public)


def public_pem(public: str) -> bytes:
    return public_from_hex(public).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create `path` with `mode` from the start (never briefly world-readable), then fsync."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomically(path, data, mode, create_mode=mode)


def _private_path(key_dir: Path) -> Path:
    return key_dir / SIGNING_KEY


def load_signing_key(key_dir: Path) -> SigningKey:
    path = _private_path(key_dir)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise LedgerError(f"no signing key in {key_dir}; run `scalple keys init`") from exc
    except OSError as exc:
        raise LedgerError(f"cannot read signing key {path}: {exc.strerror}") from exc
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        # Deliberately not chaining the parser's message: it may quote key material.
        raise LedgerError(f"{path} is not a readable Ed25519 private key") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise LedgerError(f"{path} is not an Ed25519 private key")
    return SigningKey(private)


def create_keys(key_dir: Path) -> SigningKey:
    """Make a new signing key pair in `key_dir`; refuses to overwrite an existing one."""
    if _private_path(key_dir).exists():
        raise LedgerError(f"a signing key already exists in {key_dir}; use `scalple keys rotate`")
    key = SigningKey(Ed25519PrivateKey.generate())
    _write_new(_private_path(key_dir), key.private_pem(), 0o600)
    _write_new(key_dir / PUBLIC_KEY, key.public_pem(), 0o644)
    return key


def signing_key(key_dir: Path) -> SigningKey:
    """The signing key of `key_dir`, created on first use (and said where, on the log)."""
    if not _private_path(key_dir).exists():
        key = create_keys(key_dir)
        log.warning(
            "created signing key %s in %s; keep a copy of %s elsewhere "
            "(scalple keys export-public) to verify this ledger later",
            key.id,
            key_dir,
            key_dir / PUBLIC_KEY,
        )
        return key
    return load_signing_key(key_dir)


def load_public_key(path: Path) -> str:
    """A public key file (PEM, as `keys export-public` writes) as raw hex."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LedgerError(f"cannot read public key {path}: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise LedgerError(f"{path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise LedgerError(f"{path} is not an Ed25519 public key")
    return public_hex(key)


class Rotation(msgspec.Struct, frozen=True, kw_only=True):
    """A key rotation: the old key vouches for the new one, and the new one acknowledges it."""

    v: int = 1
    old_key: str
    new_key: str
    ts: int
    old_signature: str = ""
    new_signature: str = ""

    def message(self) -> bytes:
        body = msgspec.structs.replace(self, old_signature="", new_signature="")
        return ROTATION_DOMAIN + msgspec.json.encode(body)

    def valid(self) -> bool:
        m = self.message()
        return verify_signature(self.old_key, self.old_signature, m) and verify_signature(
            self.new_key, self.new_signature, m
        )


def rotate_keys(key_dir: Path, ledger_dirs: list[Path]) -> Rotation:
    """Replace the signing key; the rotation, signed by both keys, goes to each ledger given."""
    old = load_signing_key(key_dir)
    new = SigningKey(Ed25519PrivateKey.generate())
    unsigned = Rotation(old_key=old.public, new_key=new.public, ts=time.time_ns() // 1000)
    m = unsigned.message()
    rotation = msgspec.structs.replace(
        unsigned, old_signature=old.sign(m), new_signature=new.sign(m)
    )
    data = msgspec.json.encode(rotation)
    name = f"{rotation.ts:020d}-{new.id}.rotation"
    for target in [key_dir / "rotations", *(d / "keys" for d in ledger_dirs)]:
        _write_new(target / name, data, 0o644)
    _write_new(key_dir / "retired" / f"{old.id}.pub", old.public_pem(), 0o644)
    _write_new(key_dir / PUBLIC_KEY, new.public_pem(), 0o644)
    _write_new(_private_path(key_dir), new.private_pem(), 0o600)
    return rotation


def read_rotation(path: Path) -> Rotation:
    try:
        return msgspec.json.decode(path.read_bytes(), type=Rotation)
    except (OSError, msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise LedgerError(f"unreadable key rotation {path}: {exc}") from exc


def subject_secret(key_dir: Path) -> bytes:
    """The 32-byte HMAC-SHA-256 key for subject hashes of ledgers using `key_dir` (made 0600 once).

    Kept with the signing key, never in a ledger: whoever holds a ledger alone cannot test
    guessed identifiers against its subject hashes.
    """
    key_dir = Path(key_dir)
    if (key_dir / "journal").is_dir() or (key_dir / "segments").is_dir():
        raise LedgerError(
            f"{key_dir} is a ledger directory; the subject secret lives in the "
            "key directory (setting key_dir)"
        )
    path = key_dir / SUBJECT_SECRET
    if not path.exists():
        _create_secret(path)
    text = path.read_text().strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) != 32:
        raise LedgerError(f"{path} does not hold a 32-byte hex secret")
    return secret


def _create_secret(path: Path) -> None:
    # Written whole under a private name, then linked in: a concurrent reader never sees it half
    # written, and if two processes race, the first link wins and both read that one.
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secrets.token_hex(32).encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
