"""PostgreSQL protocol v3 codec: frame a byte stream into messages, decode what the audit needs,
encode what the proxy says itself. Bytes in, values out; no sockets.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Sequence
from time import sleep
from typing import Final, NamedTuple

from scalple.errors import ScalpleError

PROTOCOL_V3: Final = 196608
SSL_REQUEST: Final = 80877103
GSSENC_REQUEST: Final = 80877104
CANCEL_REQUEST: Final = 80877102
MAX_STARTUP_BYTES: Final = 10_000


class Front:
    """Frontend (client → server) message types."""

    BIND: Final = 0x42  # B
    CLOSE: Final = 0x43  # C
    COPY_DATA: Final = 0x64  # d
    COPY_DONE: Final = 0x63  # c
    COPY_FAIL: Final = 0x66  # f
    DESCRIBE: Final = 0x44  # D
    EXECUTE: Final = 0x45  # E
    FLUSH: Final = 0x48  # H
    FUNCTION_CALL: Final = 0x46  # F
    PARSE: Final = 0x50  # P
    PASSWORD: Final = 0x70  # p (password, SASL responses)
    QUERY: Final = 0x51  # Q
    SYNC: Final = 0x53  # S
    TERMINATE: Final = 0x58  # X


class Back:
    """Backend (server → client) message types."""

    AUTHENTICATION: Final = 0x52  # R
    BACKEND_KEY: Final = 0x4B  # K
    BIND_COMPLETE: Final = 0x32  # 2
    CLOSE_COMPLETE: Final = 0x33  # 3
    COMMAND_COMPLETE: Final = 0x43  # C
    COPY_BOTH: Final = 0x57  # W
    COPY_DATA: Final = 0x64  # d
    COPY_IN: Final = 0x47  # G
    COPY_OUT: Final = 0x48  # H
    DATA_ROW: Final = 0x44  # D
    EMPTY_QUERY: Final = 0x49  # I
    ERROR: Final = 0x45  # E
    FUNCTION_RESULT: Final = 0x56  # V
    NO_DATA: Final = 0x6E  # n
    NOTICE: Final = 0x4E  # N
    PARAMETER_DESCRIPTION: Final = 0x74  # t
    PARAMETER_STATUS: Final = 0x53  # S
    PARSE_COMPLETE: Final = 0x31  # 1
    PORTAL_SUSPENDED: Final = 0x73  # s
    READY: Final = 0x5A  # Z
    ROW_DESCRIPTION: Final = 0x54  # T


PASSWORD: Final = Front.PASSWORD

# PostgreSQL's client encodings and the Python codec that reads each. SQL_ASCII is bytes with no
# meaning above 0x7F: latin-1 keeps each byte as one character, as the server's scanner does.
ENCODINGS: Final = {
    "UTF8": "utf-8", "SQL_ASCII": "latin-1", "LATIN1": "latin-1", "LATIN2": "iso8859-2",
    "LATIN3": "iso8859-3", "LATIN4": "iso8859-4", "LATIN5": "iso8859-9", "LATIN6": "iso8859-10",
    "LATIN7": "iso8859-13", "LATIN8": "iso8859-14", "LATIN9": "iso8859-15",
    "LATIN10": "iso8859-16", "ISO_8859_5": "iso8859-5", "ISO_8859_6": "iso8859-6",
    "ISO_8859_7": "iso8859-7", "ISO_8859_8": "iso8859-8", "WIN866": "cp866", "WIN874": "cp874",
    "WIN1250": "cp1250", "WIN1251": "cp1251", "WIN1252": "cp1252", "WIN1253": "cp1253",
    "WIN1254": "cp1254", "WIN1255": "cp1255", "WIN1256": "cp1256", "WIN1257": "cp1257",
    "WIN1258": "cp1258", "KOI8R": "koi8-r", "KOI8U": "koi8-u", "EUC_JP": "euc_jp",
    "EUC_KR": "euc_kr", "EUC_CN": "gb2312", "SJIS": "shift_jis", "BIG5": "big5", "GBK": "gbk",
    "GB18030": "gb18030", "UHC": "cp949", "JOHAB": "johab", "EUC_JIS_2004": "euc_jis_2004",
    "SHIFT_JIS_2004": "shift_jis_2004",
}  # fmt: skip


def python_encoding(pg_name: str) -> str | None:
    """The codec for a PostgreSQL client_encoding name (any spelling the server accepts)."""
    key = pg_name.upper().replace("-", "").replace("_", "")
    for name, codec_name in ENCODINGS.items():
        if name.replace("_", "") == key:
            return codec_name
    aliases = {"UNICODE": "utf-8", "WIN": "cp1251", "ALT": "cp866", "SHIFTJIS": "shift_jis"}
    return aliases.get(key)


Body = bytes | memoryview  # a message's payload; a memoryview for a large one, not copied
_NUL = re.compile(b"\x00")
_WINDOW: Final = 1 << 20

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

    `body` is the payload when the whole message is here and small enough to inspect, else None
    (a message larger than the inspect limit that is held whole anyway — a statement — has a
    memoryview into `raw` as its body, so it is not copied). `raw` is exactly the bytes to
    forward for this frame. `final` is False for all but the last piece of a streamed message.
    """

    type: int
    body: Body | None
    raw: bytes
    final: bool = True


class Framer:
    """Splits typed messages out of a stream, holding back an incomplete tail.

    Messages of `whole_types` are always held until complete (they are audited) and refused past
    `max_size`; any other message larger than `inspect_limit` streams through in pieces so that
    no large row or COPY chunk is ever held in memory whole. An incomplete message is kept as
    a list of the pieces received and joined once, when its last byte arrives: linear in its
    size however finely it is cut.
    """

    __slots__ = (
        "_left", "_need", "_parts", "_stream_type", "_tail", "inspect_limit", "max_size",
        "whole_types",
    )  # fmt: skip

    def __init__(
        self, *, whole_types: bytes = b"", max_size: int = 1 << 30, inspect_limit: int = 1 << 20
    ) -> None:
        self._parts: list[bytes] = []  # an incomplete message, as received
        self._tail = 0  # bytes in _parts
        self._need = 0  # bytes _parts must reach before it can be read again
        self._left = 0
        self._stream_type = 0
        self.whole_types = frozenset(whole_types)
        self.max_size = max_size
        self.inspect_limit = inspect_limit

    @property
    def pending(self) -> int:
        """Bytes held back: an incomplete message, or what remains of a streamed one."""
        return self._tail + self._left

    @property
    def awaited(self) -> int:
        """The size of the incomplete message held back (0 when none is)."""
        return self._need if self._parts else 0

    def feed(self, data: bytes) -> list[Frame]:
        frames: list[Frame] = []
        if self._left:
            n = min(len(data), self._left)
            self._left -= n
            frames.append(Frame(self._stream_type, None, data[:n], self._left == 0))
            data = data[n:]
        if self._parts:
            self._parts.append(data)
            self._tail += len(data)
            if self._tail < self._need:
                return frames
            buf = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
            self._parts, self._tail, self._need = [], 0, 0
        else:
            buf = data
        pos, end = 0, len(buf)
        inspect_limit = self.inspect_limit
        while end - pos >= 5:
            mtype = buf[pos]
            length = _U32.unpack_from(buf, pos + 1)[0]
            if length < 4:
                raise ProtocolViolation(f"invalid message length {length} for type {chr(mtype)!r}")
            stop = pos + 1 + length
            if stop <= end:
                raw = buf[pos:stop]
                if length <= inspect_limit:
                    frames.append(Frame(mtype, raw[5:], raw))
                else:
                    frames.append(Frame(mtype, memoryview(raw)[5:], raw))
                pos = stop
                continue
            if mtype in self.whole_types:
                if length > self.max_size:
                    raise ProtocolViolation(
                        f"message of {length} bytes exceeds the limit of {self.max_size}", "54000"
                    )
                self._need = 1 + length
                break
            if length <= inspect_limit:
                self._need = 1 + length
                break
            self._stream_type = mtype
            self._left = stop - end
            frames.append(Frame(mtype, None, buf[pos:end], False))
            pos = end
        if pos < end:
            self._parts = [buf[pos:]]
            self._tail = end - pos
            self._need = self._need or 5
        return frames


class Scan(NamedTuple):
    """What `scan` found: `buf` to forward as it is, and where its messages are."""

    buf: bytes
    marks: list[int]  # type, start, end, bulk messages before it: four ints a message
    bulk_after: int  # bulk messages after the last mark


def scan(framer: Framer, data: bytes, bulk: frozenset[int]) -> Scan:
    """Split `data` into messages without an object per message: bulk ones (DataRow, CopyData)
    are only counted, every other complete one gets a mark. What `framer` holds back or streams
    (an incomplete or very large message) goes through `Framer.feed` as usual."""
    marks: list[int] = []
    count = 0
    pos, end = 0, len(data)
    if not (framer._parts or framer._left):
        unpack = _U32.unpack_from
        limit = framer.inspect_limit
        while end - pos >= 5:
            mtype = data[pos]
            length = unpack(data, pos + 1)[0]
            stop = pos + 1 + length
            if length < 4 or stop > end or length > limit:
                break  # incomplete, too large to hold, or malformed: `feed` deals with it
            if mtype in bulk:
                count += 1
            else:
                marks += (mtype, pos, stop, count)
                count = 0
            pos = stop
        if pos == end:
            return Scan(data, marks, count)
    pieces = [data[:pos]] if pos else []
    for frame in framer.feed(data[pos:] if pos else data):
        if frame.type in bulk:
            count += frame.final
        elif frame.body is not None:
            marks += (frame.type, pos, pos + len(frame.raw), count)
            count = 0
        pieces.append(frame.raw)
        pos += len(frame.raw)
    return Scan(b"".join(pieces), marks, count)


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


def _find_nul(body: Body, pos: int) -> int:
    """The first NUL at or after `pos`, searched a megabyte at a time: a worker thread reading a
    50 MB message gives the GIL up between windows, so the event loop is never held long."""
    n = len(body)
    while pos < n:
        found = _NUL.search(body, pos, min(n, pos + _WINDOW))
        if found is not None:
            return found.start()
        pos += _WINDOW
        sleep(0)
    return -1


def cstring(
    body: Body, pos: int, encoding: str = "utf-8", errors: str = "strict"
) -> tuple[str, int]:
    """The NUL-terminated string at `pos` and the position after it."""
    end = body.find(b"\x00", pos) if type(body) is bytes else _find_nul(body, pos)
    if end < 0:
        raise ProtocolViolation("string field is not NUL-terminated")
    try:
        return str(body[pos:end], encoding, errors), end + 1
    except UnicodeDecodeError as exc:
        raise ProtocolViolation(
            f"invalid byte sequence for the client encoding ({encoding})", "22021"
        ) from exc


# --- frontend messages --------------------------------------------------------------------


def decode_query(body: Body, encoding: str = "utf-8", errors: str = "strict") -> str:
    return cstring(body, 0, encoding, errors)[0]


def decode_parse(
    body: Body, encoding: str = "utf-8", errors: str = "strict"
) -> tuple[str, str, tuple[int, ...]]:
    """Parse: (statement name, query, parameter type OIDs)."""
    name, pos = cstring(body, 0, encoding, errors)
    query, pos = cstring(body, pos, encoding, errors)
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
    rest: int  # where the fields after the two names start


def decode_bind(body: Body, encoding: str = "utf-8") -> Bind:
    portal, pos = cstring(body, 0, encoding)
    statement, pos = cstring(body, pos, encoding)
    rest = pos
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
            params.append(bytes(body[pos : pos + ln]))
            pos += ln
    except struct.error as exc:
        raise ProtocolViolation("truncated Bind message") from exc
    return Bind(portal, statement, tuple(formats), tuple(params), rest)


def encode_bind_renamed(body: Body, bind: Bind, statement: str, encoding: str = "utf-8") -> bytes:
    """The Bind in `body` naming `statement` instead (the name the server knows it by)."""
    names = bind.portal.encode(encoding) + b"\x00" + statement.encode(encoding) + b"\x00"
    return message(b"B", names + body[bind.rest :])


def decode_execute(body: Body, encoding: str = "utf-8") -> tuple[str, int]:
    portal, pos = cstring(body, 0, encoding)
    if len(body) < pos + 4:
        raise ProtocolViolation("truncated Execute message")
    return portal, int(_I32.unpack_from(body, pos)[0])


def decode_target(body: Body, encoding: str = "utf-8") -> tuple[str, str]:
    """Describe/Close: ('S' or 'P', name)."""
    kind = bytes(body[:1])
    if kind not in (b"S", b"P"):
        raise ProtocolViolation("Describe/Close target must be 'S' or 'P'")
    return kind.decode(), cstring(body, 1, encoding)[0]


def encode_target(mtype: bytes, kind: str, name: str, encoding: str = "utf-8") -> bytes:
    """A Describe (b"D") or Close (b"C") of statement ('S') or portal ('P') `name`."""
    return message(mtype, kind.encode() + name.encode(encoding) + b"\x00")


def encode_query(sql: str, encoding: str = "utf-8") -> bytes:
    return message(b"Q", sql.encode(encoding) + b"\x00")


def encode_parse(name: str, sql: str, oids: Sequence[int] = (), encoding: str = "utf-8") -> bytes:
    body = name.encode(encoding) + b"\x00" + sql.encode(encoding) + b"\x00"
    body += _I16.pack(len(oids))
    return message(b"P", body + b"".join(_U32.pack(o) for o in oids))


# --- backend messages ---------------------------------------------------------------------


def decode_error_fields(body: bytes, encoding: str = "utf-8") -> dict[str, str]:
    fields: dict[str, str] = {}
    pos = 0
    while pos < len(body) and body[pos] != 0:
        code = chr(body[pos])
        end = body.find(b"\x00", pos + 1)
        if end < 0:
            break
        fields[code] = body[pos + 1 : end].decode(encoding, "replace")
        pos = end + 1
    return fields


def encode_error(
    sqlstate: str,
    text: str,
    *,
    severity: str = "ERROR",
    hint: str | None = None,
    notice: bool = False,
    encoding: str = "utf-8",
) -> bytes:
    fields: Iterable[tuple[bytes, str]] = [
        (b"S", severity),
        (b"V", severity),
        (b"C", sqlstate),
        (b"M", text),
    ]
    if hint:
        fields = [*fields, (b"H", hint)]
    body = b"".join(code + value.encode(encoding, "replace") + b"\x00" for code, value in fields)
    return message(b"N" if notice else b"E", body + b"\x00")


def encode_ready(status: str) -> bytes:
    return message(b"Z", status.encode())


def decode_backend_key(body: bytes) -> tuple[int, int]:
    return int(_I32.unpack_from(body, 0)[0]), int(_I32.unpack_from(body, 4)[0])


def encode_backend_key(pid: int, key: int) -> bytes:
    return message(b"K", _I32.pack(pid) + _I32.pack(key))


def decode_parameter_status(body: bytes, encoding: str = "utf-8") -> tuple[str, str]:
    name, pos = cstring(body, 0, encoding)
    return name, cstring(body, pos, encoding)[0]


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
