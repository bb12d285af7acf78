"""The canonical bytes of an audit event and its chained, domain-separated SHA-256.

Canonical form: msgspec JSON of the `AuditEvent` with every field, in declaration order, no
whitespace, UTF-8, with `hash` set to "". `hash` is the last field, so a journal line is the
canonical form with the 64 hex digits spliced into the final `""`. The event hash is
SHA-256(EVENT_DOMAIN + canonical), hex; `prev_hash` of the first event is GENESIS.
Fields appended to `AuditEvent` later (with a new SCHEMA_VERSION) must stay out of the
canonical form of older events: keep each version's field list when that day comes.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

import msgspec

from scalple.events import AuditEvent

EVENT_DOMAIN: Final = b"scalple/event/v1\n"
GENESIS: Final = "0" * 64
_TAIL: Final = b'"}'
_HASH_TAIL_LEN: Final = 64 + len(_TAIL)
_LINE_END: Final = b'"}\n'

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AuditEvent)


def chain(event: AuditEvent, seq: int, prev_hash: str) -> tuple[bytes, str]:
    """Return the journal line (with trailing newline) and hash of `event` placed at `seq`."""
    parts: list[bytes] = []
    digest = chain_into(parts, event, seq, prev_hash)
    return b"".join(parts), digest


def chain_into(out: list[bytes], event: AuditEvent, seq: int, prev_hash: str) -> str:
    """Append the journal line of `event` at `seq` to `out` as pieces; return its hash."""
    placed = msgspec.structs.replace(event, seq=seq, prev_hash=prev_hash, hash="")
    try:
        canonical = _encoder.encode(placed)
    except UnicodeEncodeError:
        canonical = _encoder.encode(_valid_utf8(placed))
    digest = hashlib.sha256(EVENT_DOMAIN + canonical).hexdigest()
    # Splice the hash into the final "" without copying the record: joined once per batch.
    out += (canonical[:-2], digest.encode(), _LINE_END)
    return digest


def canonical_of_line(line: bytes) -> bytes:
    """The canonical bytes a journal line (without newline) claims to carry: its hash blanked."""
    return line[:-_HASH_TAIL_LEN] + _TAIL


def line_hash(line: bytes) -> str:
    """The hash a journal line (without newline) claims: the 64 characters before its end."""
    return line[-_HASH_TAIL_LEN:-2].decode("ascii", "replace")


def event_hash(canonical: bytes) -> str:
    return hashlib.sha256(EVENT_DOMAIN + canonical).hexdigest()


def canonical_bytes(event: AuditEvent) -> bytes:
    """Canonical form of an event as stored (its own `hash` blanked)."""
    return _encoder.encode(msgspec.structs.replace(event, hash=""))


def decode_line(line: bytes) -> AuditEvent:
    return _decoder.decode(line)


_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _text(value: object) -> object:
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, tuple):
        return tuple(_text(v) for v in value)
    return value


def _valid_utf8(event: AuditEvent) -> AuditEvent:
    """`event` with lone surrogates (undecodable client bytes) shown as U+FFFD: still recorded."""
    fields = {f: _text(getattr(event, f)) for f in event.__struct_fields__}
    return AuditEvent(**fields)  # type: ignore[arg-type]
