"""PostgreSQL protocol v3 codec: frame a byte stream into messages, decode what the audit needs,
encode what the proxy says itself. Bytes in, values out; no sockets.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Final, NamedTuple

from scalple.errors import ScalpleError

PROTOCOL_V3: Final = 196608
SSL_REQUEST: Final = 80877103
GSSENC_REQUEST: Final = 80877104
CANCEL_REQUEST: Final = 80877102
MAX_STARTUP_BYTES: Final = 10_000

_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")
_HEADER = struct.Struct("!cI")


class ProtocolViolation(ScalpleError):
    """A peer sent bytes that are not valid protocol v3; the connection cannot go on."""

    def __init__(self, message: str, sqlstate: str = "08P01") -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class Frame(NamedTuple):
    """One message, or one piece of a message too large to hold.

    `body` is the payload when the whole message is here and small enough to inspect, else None.
    `raw` is exactly the bytes to forward for this frame. `final` is False for all but the last
    piece of a streamed message.
    """

    type: int
    body: bytes | None
    raw: bytes
    final: bool = True


class Framer:
    """Splits typed messages out of a stream, holding back an incomplete tail.

    Messages of `whole_types` are always held until complete (they are audited) and refused past
    `max_size`; any other message larger than `inspect_limit` streams through in pieces so that
    no large row or COPY chunk is ever held in memory whole.
    """

    __slots__ = ("_buf", "_left", "_stream_type", "inspect_limit", "max_size", "whole_types")

    def __init__(
        self, *, whole_types: bytes = b"", max_size: int = 1 << 30, inspect_limit: int = 1 << 20
    ) -> None:
        self._buf = b""
        self._left = 0
        self._stream_type = 0
        self.whole_types = frozenset(whole_types)
        self.max_size = max_size
        self.inspect_limit = inspect_limit

    @property
    def pending(self) -> int:
        """Bytes held back: an incomplete message, or what remains of a streamed one."""
        return len(self._buf) + self._left

    def feed(self, data: bytes) -> list[Frame]:
        frames: list[Frame] = []
        if self._left:
            n = min(len(data), self._left)
            self._left -= n
            frames.append(Frame(self._stream_type, None, data[:n], self._left == 0))
            data = data[n:]
        buf = self._buf + data if self._buf else data
        pos, end = 0, len(buf)
        while end - pos >= 5:
            mtype = buf[pos]
            length = _U32.unpack_from(buf, pos + 1)[0]
            if length < 4:
                raise ProtocolViolation(f"invalid message length {length} for type {chr(mtype)!r}")
            stop = pos + 1 + length
            if stop <= end:
                frames.append(Frame(mtype, buf[pos + 5 : stop], buf[pos:stop]))
                pos = stop
                continue
            if mtype in self.whole_types:
                if length > self.max_size:
                    raise ProtocolViolation(
                        f"message of {length} bytes exceeds the limit of {self.max_size}", "54000"
                    )
                break
            if length <= self.inspect_limit:
                break
            self._stream_type = mtype
            self._left = stop - end
            frames.append(Frame(mtype, None, buf[pos:end], False))
            pos = end
        self._buf = buf[pos:] if pos < end else b""
        return frames


def read_startup(buf: bytes) -> tuple[int, bytes] | None:
    """An untyped startup-phase packet (length, code, payload) from the head of `buf`, or None."""
    if len(buf) < 8:
        return None
    length = _U32.unpack_from(buf, 0)[0]
    if length < 8 or length > MAX_STARTUP_BYTES:
        raise ProtocolViolation(f"invalid startup packet length {length}")
    if len(buf) < length:
        return None
    return length, buf[:length]


def startup_code(packet: bytes) -> int:
    return int(_U32.unpack_from(packet, 4)[0])


def decode_startup_params(packet: bytes) -> dict[str, str]:
    parts = packet[8:].split(b"\x00")
    if len(parts) < 2 or parts[-1] != b"" or parts[-2] != b"":
        raise ProtocolViolation("startup packet is not NUL-terminated")
    items = parts[:-2]
    if len(items) % 2:
        raise ProtocolViolation("startup packet has a key without a value")
    try:
        return {items[i].decode(): items[i + 1].decode() for i in range(0, len(items), 2)}
    except UnicodeDecodeError as exc:
        raise ProtocolViolation("startup packet is not valid UTF-8") from exc


def encode_startup(params: dict[str, str], code: int = PROTOCOL_V3) -> bytes:
    body = (
        b"".join(k.encode() + b"\x00" + v.encode() + b"\x00" for k, v in params.items()) + b"\x00"
    )
    return _U32.pack(len(body) + 8) + _U32.pack(code) + body


def decode_cancel(packet: bytes) -> tuple[int, int]:
    if len(packet) != 16:
        raise ProtocolViolation("invalid CancelRequest length")
    return int(_I32.unpack_from(packet, 8)[0]), int(_I32.unpack_from(packet, 12)[0])


def encode_cancel(pid: int, key: int) -> bytes:
    return _U32.pack(16) + _U32.pack(CANCEL_REQUEST) + _I32.pack(pid) + _I32.pack(key)


def message(mtype: bytes, body: bytes) -> bytes:
    return _HEADER.pack(mtype, len(body) + 4) + body


def cstring(body: bytes, pos: int) -> tuple[str, int]:
    """The NUL-terminated string at `pos` and the position after it."""
    end = body.find(b"\x00", pos)
    if end < 0:
        raise ProtocolViolation("string field is not NUL-terminated")
    try:
        return body[pos:end].decode(), end + 1
    except UnicodeDecodeError as exc:
        raise ProtocolViolation("string field is not valid UTF-8") from exc


# --- frontend messages --------------------------------------------------------------------


def decode_query(body: bytes) -> str:
    return cstring(body, 0)[0]


def decode_parse(body: bytes) -> tuple[str, str, tuple[int, ...]]:
    """Parse: (statement name, query, parameter type OIDs)."""
    name, pos = cstring(body, 0)
    query, pos = cstring(body, pos)
    try:
        (n,) = _I16.unpack_from(body, pos)
        oids = struct.unpack_from(f"!{n}I", body, pos + 2) if n > 0 else ()
    except struct.error as exc:
        raise ProtocolViolation("truncated Parse message") from exc
    return name, query, tuple(oids)


class Bind(NamedTuple):
    portal: str
    statement: str
    param_formats: tuple[int, ...]
    params: tuple[bytes | None, ...]


def decode_bind(body: bytes) -> Bind:
    portal, pos = cstring(body, 0)
    statement, pos = cstring(body, pos)
    try:
        (nf,) = _I16.unpack_from(body, pos)
        formats = struct.unpack_from(f"!{nf}h", body, pos + 2) if nf > 0 else ()
        pos += 2 + 2 * max(nf, 0)
        (np_,) = _I16.unpack_from(body, pos)
        pos += 2
        params: list[bytes | None] = []
        for _ in range(np_):
            (ln,) = _I32.unpack_from(body, pos)
            pos += 4
            if ln < 0:
                params.append(None)
                continue
            if pos + ln > len(body):
                raise ProtocolViolation("truncated Bind parameter")
            params.append(body[pos : pos + ln])
            pos += ln
    except struct.error as exc:
        raise ProtocolViolation("truncated Bind message") from exc
    return Bind(portal, statement, tuple(formats), tuple(params))


def decode_execute(body: bytes) -> tuple[str, int]:
    portal, pos = cstring(body, 0)
    if len(body) < pos + 4:
        raise ProtocolViolation("truncated Execute message")
    return portal, int(_I32.unpack_from(body, pos)[0])


def decode_target(body: bytes) -> tuple[str, str]:
    """Describe/Close: ('S' or 'P', name)."""
    if not body or body[:1] not in (b"S", b"P"):
        raise ProtocolViolation("Describe/Close target must be 'S' or 'P'")
    return body[:1].decode(), cstring(body, 1)[0]


def encode_query(sql: str) -> bytes:
    return message(b"Q", sql.encode() + b"\x00")


def encode_parse(name: str, sql: str, oids: Sequence[int] = ()) -> bytes:
    body = name.encode() + b"\x00" + sql.encode() + b"\x00" + _I16.pack(len(oids))
    return message(b"P", body + b"".join(_U32.pack(o) for o in oids))


# --- backend messages ---------------------------------------------------------------------


def decode_error_fields(body: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    pos = 0
    while pos < len(body) and body[pos] != 0:
        code = chr(body[pos])
        end = body.find(b"\x00", pos + 1)
        if end < 0:
            break
        fields[code] = body[pos + 1 : end].decode(errors="replace")
        pos = end + 1
    return fields


def encode_error(
    sqlstate: str,
    text: str,
    *,
    severity: str = "ERROR",
    hint: str | None = None,
    notice: bool = False,
) -> bytes:
    fields: Iterable[tuple[bytes, str]] = [
        (b"S", severity),
        (b"V", severity),
        (b"C", sqlstate),
        (b"M", text),
    ]
    if hint:
        fields = [*fields, (b"H", hint)]
    body = b"".join(code + value.encode() + b"\x00" for code, value in fields) + b"\x00"
    return message(b"N" if notice else b"E", body)


def encode_ready(status: str) -> bytes:
    return message(b"Z", status.encode())


def decode_backend_key(body: bytes) -> tuple[int, int]:
    return int(_I32.unpack_from(body, 0)[0]), int(_I32.unpack_from(body, 4)[0])


def encode_backend_key(pid: int, key: int) -> bytes:
    return message(b"K", _I32.pack(pid) + _I32.pack(key))


def decode_parameter_status(body: bytes) -> tuple[str, str]:
    name, pos = cstring(body, 0)
    return name, cstring(body, pos)[0]


def decode_command_tag(body: bytes) -> str:
    return (
        body[:-1].decode(errors="replace")
        if body.endswith(b"\x00")
        else body.decode(errors="replace")
    )


def tag_rows(tag: str) -> int | None:
    """Rows a CommandComplete tag reports: 'SELECT 5' → 5, 'INSERT 0 3' → 3, 'BEGIN' → None."""
    last = tag.rpartition(" ")[2]
    return int(last) if last.isdigit() else None


class Field(NamedTuple):
    """One column of a RowDescription."""

    name: str
    table_oid: int
    attnum: int
    type_oid: int
    format: int


def decode_row_description(body: bytes) -> tuple[Field, ...]:
    (n,) = _I16.unpack_from(body, 0)
    pos, out = 2, []
    for _ in range(n):
        name, pos = cstring(body, pos)
        table_oid, attnum, type_oid, _size, _mod, fmt = struct.unpack_from("!IhIhih", body, pos)
        pos += 18
        out.append(Field(name, table_oid, attnum, type_oid, fmt))
    return tuple(out)
