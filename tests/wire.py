"""A raw PostgreSQL v3 frontend for tests: send any message sequence, read typed answers.

Unlike a driver, it never fixes up what it is told to send: several Parse/Bind/Execute/Sync
batches can be pipelined before reading, names can be reused or left dangling, and startup
parameters (options, standard_conforming_strings, client_encoding, application_name) go out as
given. Framing and decoding reuse scalple.proxy.codec.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import struct
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from scramp import ScramClient

from scalple.proxy import codec
from scalple.sandbox import ROLES

# PostgreSQL encoding names → Python codecs, for the encodings tests use.
ENCODINGS: Mapping[str, str] = {"UTF8": "utf-8", "LATIN1": "latin-1", "SQL_ASCII": "ascii"}


# --- backend messages, typed ---------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    """Any backend message; subclasses carry the decoded fields."""


# Messages without fields: the type says it all (a subclass of a frozen dataclass that adds
# no field needs no decorator of its own).
class ParseComplete(Backend):
    """1"""


class BindComplete(Backend):
    """2"""


class CloseComplete(Backend):
    """3"""


class NoData(Backend):
    """n"""


class PortalSuspended(Backend):
    """s"""


class EmptyQueryResponse(Backend):
    """I"""


@dataclass(frozen=True)
class CommandComplete(Backend):
    tag: str


@dataclass(frozen=True)
class ReadyForQuery(Backend):
    status: str  # I, T or E


@dataclass(frozen=True)
class RowDescription(Backend):
    fields: tuple[codec.Field, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)


@dataclass(frozen=True)
class DataRow(Backend):
    values: tuple[bytes | None, ...]


@dataclass(frozen=True)
class ParameterDescription(Backend):
    oids: tuple[int, ...]


@dataclass(frozen=True)
class ParameterStatus(Backend):
    name: str
    value: str


@dataclass(frozen=True)
class BackendKeyData(Backend):
    pid: int
    key: int


@dataclass(frozen=True)
class ErrorResponse(Backend):
    fields: Mapping[str, str]

    @property
    def sqlstate(self) -> str:
        return self.fields.get("C", "")

    @property
    def message(self) -> str:
        return self.fields.get("M", "")


@dataclass(frozen=True)
class NoticeResponse(Backend):
    fields: Mapping[str, str]


@dataclass(frozen=True)
class Other(Backend):
    """A message this driver does not decode (COPY, notifications, ...)."""

    type: str
    body: bytes


def decode_backend(mtype: int, body: bytes) -> Backend:
    t = chr(mtype)
    simple: dict[str, Backend] = {
        "1": ParseComplete(),
        "2": BindComplete(),
        "3": CloseComplete(),
        "n": NoData(),
        "s": PortalSuspended(),
        "I": EmptyQueryResponse(),
    }
    if t in simple:
        return simple[t]
    if t == "C":
        return CommandComplete(codec.decode_command_tag(body))
    if t == "Z":
        return ReadyForQuery(body[:1].decode())
    if t == "T":
        return RowDescription(codec.decode_row_description(body))
    if t == "D":
        return DataRow(_data_row(body))
    if t == "t":
        (n,) = struct.unpack_from("!h", body, 0)
        return ParameterDescription(struct.unpack_from(f"!{n}I", body, 2))
    if t == "S":
        return ParameterStatus(*codec.decode_parameter_status(body))
    if t == "K":
        return BackendKeyData(*codec.decode_backend_key(body))
    if t == "E":
        return ErrorResponse(codec.decode_error_fields(body))
    if t == "N":
        return NoticeResponse(codec.decode_error_fields(body))
    return Other(t, body)


def _data_row(body: bytes) -> tuple[bytes | None, ...]:
    (n,) = struct.unpack_from("!h", body, 0)
    pos, out = 2, []
    for _ in range(n):
        (length,) = struct.unpack_from("!i", body, pos)
        pos += 4
        if length < 0:
            out.append(None)
            continue
        out.append(body[pos : pos + length])
        pos += length
    return tuple(out)


# --- frontend messages ------------------------------------------------------------------------


def _cstr(text: str, encoding: str) -> bytes:
    return text.encode(encoding) + b"\x00"


def query(sql: str, encoding: str = "utf-8") -> bytes:
    return codec.message(b"Q", _cstr(sql, encoding))


def parse(name: str, sql: str, oids: Sequence[int] = (), encoding: str = "utf-8") -> bytes:
    body = _cstr(name, encoding) + _cstr(sql, encoding) + struct.pack("!h", len(oids))
    return codec.message(b"P", body + b"".join(struct.pack("!I", o) for o in oids))


def bind(
    portal: str,
    statement: str,
    params: Sequence[str | bytes | None] = (),
    formats: Sequence[int] = (),
    result_formats: Sequence[int] = (),
    encoding: str = "utf-8",
) -> bytes:
    body = _cstr(portal, encoding) + _cstr(statement, encoding)
    body += struct.pack(f"!h{len(formats)}h", len(formats), *formats)
    body += struct.pack("!h", len(params))
    for p in params:
        if p is None:
            body += struct.pack("!i", -1)
            continue
        raw = p.encode(encoding) if isinstance(p, str) else p
        body += struct.pack("!i", len(raw)) + raw
    body += struct.pack(f"!h{len(result_formats)}h", len(result_formats), *result_formats)
    return codec.message(b"B", body)


def describe(kind: str, name: str, encoding: str = "utf-8") -> bytes:
    return codec.message(b"D", kind.encode() + _cstr(name, encoding))


def execute(portal: str = "", max_rows: int = 0, encoding: str = "utf-8") -> bytes:
    return codec.message(b"E", _cstr(portal, encoding) + struct.pack("!i", max_rows))


def close(kind: str, name: str, encoding: str = "utf-8") -> bytes:
    return codec.message(b"C", kind.encode() + _cstr(name, encoding))


def sync() -> bytes:
    return codec.message(b"S", b"")


def flush() -> bytes:
    return codec.message(b"H", b"")


def terminate() -> bytes:
    return codec.message(b"X", b"")


def ready_count(messages: Iterable[bytes]) -> int:
    """How many ReadyForQuery a batch of frontend messages earns: one per Query and Sync."""
    return sum(1 for m in messages if m[:1] in (b"Q", b"S"))


def options(settings: Mapping[str, str]) -> str:
    """A libpq `options` value: `-c name=value` each, spaces and backslashes escaped."""

    def esc(s: str) -> str:
        return s.replace("\\", "\\\\").replace(" ", "\\ ")

    return " ".join(f"-c {esc(k)}={esc(v)}" for k, v in settings.items())


# --- the connection ---------------------------------------------------------------------------


class WireError(Exception):
    """The peer closed, timed out, or refused the connection during startup."""

    def __init__(self, message: str, received: Sequence[Backend] = ()) -> None:
        super().__init__(message)
        self.received = list(received)


@dataclass
class Wire:
    """One frontend connection: `send` any messages, `read` until the expected ReadyForQuery."""

    sock: socket.socket
    encoding: str = "utf-8"
    timeout: float = 10.0
    parameters: dict[str, str] = field(default_factory=dict)
    backend_key: tuple[int, int] | None = None
    status: str = "I"
    _framer: codec.Framer = field(default_factory=lambda: codec.Framer(inspect_limit=1 << 30))
    _pending: list[Backend] = field(default_factory=list)
    _raw: deque[tuple[int, bytes]] = field(default_factory=deque)

    @classmethod
    def connect(
        cls,
        port: int,
        user: str,
        database: str,
        *,
        password: str | None = None,
        params: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> Wire:
        """Start up and authenticate (trust, password, md5 or SCRAM-SHA-256) as `user`."""
        sock = socket.create_connection(("127.0.0.1", port), timeout)
        sock.settimeout(timeout)
        startup = {"user": user, "database": database, **(params or {})}
        encoding = ENCODINGS.get(startup.get("client_encoding", "UTF8").upper(), "utf-8")
        wire = cls(sock, encoding, timeout)
        secret = ROLES.get(user, ("", ""))[0] if password is None else password
        try:
            sock.sendall(codec.encode_startup(startup))
            wire._authenticate(user, secret)
            wire.read()
        except (OSError, WireError):
            sock.close()
            raise
        return wire

    def _authenticate(self, user: str, password: str) -> None:
        scram: ScramClient | None = None
        while True:
            mtype, body = self._next_raw()
            if mtype == ord("E"):
                raise WireError(f"startup refused: {decode_backend(mtype, body)}")
            if mtype != ord("R"):
                raise WireError(f"expected Authentication, got {chr(mtype)!r}")
            code = int.from_bytes(body[:4], "big")
            if code == 0:
                return
            if code == 3:
                self._send(codec.message(b"p", _cstr(password, "utf-8")))
            elif code == 5:
                inner = hashlib.md5((password + user).encode()).hexdigest()
                outer = hashlib.md5(inner.encode() + body[4:8]).hexdigest()
                self._send(codec.message(b"p", _cstr("md5" + outer, "utf-8")))
            elif code == 10:
                mechanisms = [m for m in body[4:].decode().split("\x00") if m]
                scram = ScramClient(mechanisms, user, password)
                first = scram.get_client_first().encode()
                name = _cstr(scram.mechanism_name, "utf-8")
                self._send(codec.message(b"p", name + struct.pack("!i", len(first)) + first))
            elif code == 11 and scram is not None:
                scram.set_server_first(body[4:].decode())
                self._send(codec.message(b"p", scram.get_client_final().encode()))
            elif code == 12 and scram is not None:
                scram.set_server_final(body[4:].decode())
            else:
                raise WireError(f"unsupported authentication request {code}")

    def _send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, *messages: bytes) -> None:
        """Write frontend messages as one write: a pipeline when they hold several Syncs."""
        self._send(b"".join(messages))

    def _next_raw(self) -> tuple[int, bytes]:
        while not self._raw:
            try:
                data = self.sock.recv(1 << 16)
            except TimeoutError as exc:
                raise WireError(f"no answer within {self.timeout}s", self._pending) from exc
            except OSError as exc:
                raise WireError(f"connection failed: {exc}", self._pending) from exc
            if not data:
                said = [f"{e.sqlstate} {e.message}" for e in errors(self._pending)]
                reason = "the server closed the connection" + (f": {said[-1]}" if said else "")
                raise WireError(reason, self._pending)
            self._raw.extend((f.type, f.body or b"") for f in self._framer.feed(data))
        return self._raw.popleft()

    def read(self, ready: int = 1) -> list[Backend]:
        """Backend messages up to and including the `ready`-th ReadyForQuery.

        Raises WireError (with what was received so far) if the peer closes or stalls."""
        out: list[Backend] = []
        self._pending = out
        while ready > 0:
            mtype, body = self._next_raw()
            msg = decode_backend(mtype, body)
            out.append(msg)
            if isinstance(msg, ParameterStatus):
                self.parameters[msg.name] = msg.value
            elif isinstance(msg, BackendKeyData):
                self.backend_key = (msg.pid, msg.key)
            elif isinstance(msg, ReadyForQuery):
                self.status = msg.status
                ready -= 1
        return out

    def roundtrip(self, *messages: bytes) -> list[Backend]:
        """Send the messages, then read one ReadyForQuery per Query and Sync among them."""
        self.send(*messages)
        return self.read(ready_count(messages))

    def simple(self, sql: str) -> list[Backend]:
        return self.roundtrip(query(sql, self.encoding))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._send(terminate())
        self.sock.close()

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def rows(messages: Iterable[Backend]) -> list[tuple[str | None, ...]]:
    """The text values of every DataRow, in order."""
    return [
        tuple(None if v is None else v.decode() for v in m.values)
        for m in messages
        if isinstance(m, DataRow)
    ]


def errors(messages: Iterable[Backend]) -> list[ErrorResponse]:
    return [m for m in messages if isinstance(m, ErrorResponse)]
