"""One client connection's protocol state: turns its traffic into audit events.

Sans-I/O: the shell feeds bytes from either side and gets back a `Step` saying what to forward,
what to answer, and which events must be durable before the forwarded bytes leave.

The session mirrors the server (mirror.py) rather than believing the client: a prepared
statement, portal, identity or transaction state exists once the server confirmed it. Each
statement is written ahead under a prediction — the confirmed state advanced by the earlier
messages of the same batch as if they succeed, which is exact for every statement that runs,
since a failure makes the server skip the rest of the batch. So that a prediction never rests
on an unconfirmed earlier batch, a new batch waits (held here, in order) until the server has
answered the one in flight. What the session cannot follow, it refuses.
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import logging
import secrets
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

import msgspec
from pglast import split as pg_split

from scalple.analysis import Analyzer
from scalple.analysis.lexer import Lexed, lex
from scalple.events import AuditEvent, Status
from scalple.proxy import codec, identity, people
from scalple.proxy.attribution import Attribution, Refusal
from scalple.proxy.codec import Back, Body, Frame, Front, ProtocolViolation
from scalple.proxy.commands import LARGE_WATCH, TRACKED_SETTINGS, Command, Kind, classify, large
from scalple.proxy.identity import GUC, Claim, ConflictingClaims
from scalple.proxy.mirror import Mirror, Portal, Prepared
from scalple.proxy.records import Recorder, Run
from scalple.proxy.signin import SignIn

log = logging.getLogger("scalple.proxy")

PROBE_NAME: Final = "scalple_refused"
_WHOLE_CLIENT: Final = b"QPBEFDCSHXp"
_WHOLE_SERVER: Final = b"RSKZTCEN123stnIGHWAVv"
_EXTENDED: Final = frozenset(b"PBDECS")
OFF_LOOP_BYTES: Final = 1 << 16  # a client message this large is read off the event loop
_BULK: Final = frozenset((Back.DATA_ROW, Back.COPY_DATA))  # counted, not looked at
_NO_BULK: Final = frozenset[int]()


class Phase(enum.Enum):
    STARTUP = "startup"  # before the startup packet, or at an SSLRequest
    PERSON = "person"  # a person signing in to scalple itself
    AUTH = "auth"  # the upstream's sign-in, passed through
    READY = "ready"  # statements


class Owed(enum.Enum):
    """What the upstream owes for a message it was sent, in order."""

    PARSE = "parse"
    REPARSE = "reparse"  # a Parse the proxy sent again itself: its answer is not the client's
    REPARSE_CLOSE = "reparse close"  # and the Close before it
    BIND = "bind"
    DESCRIBE_STATEMENT = "describe statement"
    DESCRIBE_PORTAL = "describe portal"
    EXECUTE = "execute"
    CLOSE_STATEMENT = "close statement"
    CLOSE_PORTAL = "close portal"
    SYNC = "sync"
    QUERY = "query"
    FUNCTION = "function"


# Tuples, not sets: `in` on a tuple compares by identity, while a set hashes, and an Enum's
# hash is a Python-level call.
_ENDS_BATCH: Final = (Owed.SYNC, Owed.QUERY, Owed.FUNCTION)
_STATEMENT: Final = (Owed.EXECUTE, Owed.QUERY, Owed.FUNCTION)


@dataclass(frozen=True, slots=True)
class Policy:
    require_identity: bool = False
    trusted_roles: tuple[str, ...] = ()
    trusted_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    max_message_bytes: int = 256 * 1024 * 1024
    tls: bool = False  # a certificate is configured: SSLRequest is answered S
    require_tls: bool = False
    # proxy_auth: people who sign in to scalple, and the upstream role they then run as
    people: Mapping[str, people.Verifier] = field(default_factory=dict)
    people_role: str = ""
    people_password: str = ""
    # "transaction": the upstream hands each transaction any server connection (PgBouncer),
    # so what a transaction leaves on one (SQL prepared statements, held cursors) may not
    # be there, or be another client's, in the next.
    pool_mode: str = "transaction"
    # Statements larger than this are not parsed: read lightly, recorded with every literal
    # masked (analysis: skipped), refused if they might change what the session mirrors.
    analysis_max_bytes: int = 1 << 20
    # serve --workers: the low `worker_bits` bits of the cancel key a client is given name the
    # worker holding its connection, so a CancelRequest landing on another finds its way.
    worker: int = 0
    worker_bits: int = 0


@dataclass(slots=True)
class Step:
    """What the shell must do next.

    `upstream` may leave only after `write_ahead` is durable; if writing it fails, the shell
    sends `unwritten` instead (each statement replaced by a probe the server rejects, so the
    client is told 58030 and nothing unrecorded runs). `records` go to the ledger unwaited.
    """

    upstream: list[bytes] = field(default_factory=list)
    client: list[bytes] = field(default_factory=list)
    write_ahead: list[AuditEvent] = field(default_factory=list)
    records: list[AuditEvent] = field(default_factory=list)
    unwritten: list[bytes] | None = None
    cancel: tuple[int, int] | None = None
    close: bool = False
    start_tls: bool = False  # `client` holds the S answer: the TLS handshake comes next
    ready: bool = False  # sign-in is over: statements may follow
    backend_key: tuple[int, int] | None = None  # the key the client was given, for cancels
    catalog_changed: bool = False  # DDL succeeded: `*` and OIDs may mean something else now
    release: bool = False  # a large held message is next: call `release()` off the loop

    def send(self, data: bytes, unwritten: bytes | None = None) -> None:
        """Forward `data`; `unwritten` is what goes instead when the write-ahead fails."""
        if unwritten is not None and self.unwritten is None:
            self.unwritten = list(self.upstream)
        self.upstream.append(data)
        if self.unwritten is not None:
            self.unwritten.append(data if unwritten is None else unwritten)


class Pending:
    """One thing the upstream owes: the answer to a message we forwarded."""

    __slots__ = ("guarded", "index", "kind", "name", "refusal", "runs", "target")

    def __init__(
        self,
        kind: Owed,
        name: str = "",
        runs: list[Run] | None = None,
        target: Prepared | Portal | None = None,
    ) -> None:
        self.kind = kind
        self.name = name
        self.runs = runs or []
        self.target = target
        self.index = 0
        self.refusal: Refusal | None = None  # shown to the client instead of the probe's error
        self.guarded = False  # its statements were written ahead

    @property
    def run(self) -> Run | None:
        return self.runs[self.index] if self.index < len(self.runs) else None


def _status_for(sqlstate: str) -> Status:
    return "cancelled" if sqlstate == "57014" else "error"


class Session:
    """Protocol state of one client connection and its upstream connection."""

    def __init__(
        self,
        policy: Policy,
        client_addr: str,
        client_port: int | None,
        now_us: Callable[[], int],
        session_id: str | None = None,
        analyzer: Analyzer | None = None,
    ) -> None:
        self.policy = policy
        self.session_id = session_id or secrets.token_hex(8)
        self.phase = Phase.STARTUP
        self.encrypted = False
        self.client_addr = client_addr
        self.records = Recorder(self.session_id, now_us, analyzer, client_addr, client_port)
        self.attribution = Attribution("", client_addr)
        self.signin: SignIn | None = None
        self._upstream_startup = b""
        self.params: dict[str, str] = self.records.params
        self.encoding = "utf-8"
        self.standard_strings = True
        self.upstream_key: tuple[int, int] | None = None
        self.client_key: tuple[int, int] | None = None
        bits = policy.worker_bits
        self._secret = (secrets.randbits(31) >> bits << bits) | policy.worker
        self._startup_buf = b""
        self._client = codec.Framer(whole_types=_WHOLE_CLIENT, max_size=policy.max_message_bytes)
        self._server = codec.Framer(whole_types=_WHOLE_SERVER)
        self._pooled = policy.pool_mode == "transaction"
        self.mirror = Mirror()  # what the server confirmed
        self._pred: Mirror | None = None  # the batch in flight, as predicted
        self._queue: deque[Pending] = deque()
        self._held: deque[Frame] = deque()
        self._held_bytes = 0
        self._batch_open = False  # extended-protocol messages since the last Sync
        self._awaiting = 0  # ReadyForQuery answers owed
        self._batch_error: tuple[str, str, str | None] | None = None
        self._batch_tracked = False  # the open batch may change how text must be read
        self._copy_in: Run | None = None
        self._suspended: list[tuple[Portal, Run]] = []
        self._names = itertools.count(1)
        self._probe = f"SCALPLE_REFUSED_{secrets.token_hex(4)}"
        self._probe_q: bytes | None = None

    # --- what the shell asks ---------------------------------------------------------------

    @property
    def idle(self) -> bool:
        """Ready, and the upstream owes nothing: the connection can close without losing work."""
        return self.phase is Phase.READY and not self._queue and not self._held

    @property
    def client_pending(self) -> int:
        """Bytes of an incomplete client message held back (for stall detection)."""
        return self._client.pending + len(self._startup_buf)

    def completes_large(self, n: int, large: int) -> bool:
        """Do `n` more bytes complete a client message of more than `large` bytes?"""
        framer = self._client
        return framer.awaited > large and n >= framer.awaited - framer.pending

    @property
    def held_bytes(self) -> int:
        """Bytes of complete client messages waiting for the batch in flight to be answered."""
        return self._held_bytes

    def close_out(self, status: Status = "incomplete") -> list[AuditEvent]:
        """Outcomes for every statement still owed an answer when the connection ends."""
        out: list[AuditEvent] = []
        seen: set[str] = set()
        for item in self._queue:
            for run in item.runs[item.index :]:
                if run.event.event_id not in seen:
                    seen.add(run.event.event_id)
                    out.append(self.records.outcome(run, status))
        for _, run in self._suspended:
            if run.event.event_id not in seen:
                seen.add(run.event.event_id)
                out.append(self.records.outcome(run, "ok"))
        self._queue.clear()
        self._suspended.clear()
        return out

    # --- client → upstream ------------------------------------------------------------------

    def client_data(self, data: bytes) -> Step:
        step = Step()
        if self.phase is Phase.STARTUP:
            data = self._startup(step, data)
            if self.phase is Phase.STARTUP or not data:
                return step
        for frame in self._client.feed(data):
            self._client_frame(step, frame)
            if step.close:
                break
        return step

    def _client_frame(self, step: Step, frame: Frame) -> None:
        mtype = frame.type
        if self.phase is Phase.PERSON:
            assert self.signin is not None
            body = frame.body
            step.client.append(self.signin.answer(mtype, None if body is None else bytes(body)))
            if self.signin.signed_in:
                self.phase = Phase.AUTH
                step.send(self._upstream_startup)
            return
        if self._held or (self._awaiting and self._starts_batch(mtype)):
            self._held.append(frame)
            self._held_bytes += len(frame.raw)
            return
        if frame.body is None or self.phase is not Phase.READY:
            step.send(frame.raw)  # a streamed CopyData piece, or the upstream's sign-in
            return
        self._message(step, mtype, frame.raw, frame.body)

    def _starts_batch(self, mtype: int) -> bool:
        if mtype == Front.QUERY or mtype == Front.FUNCTION_CALL:
            return True
        return mtype in _EXTENDED and not self._batch_open

    def _message(self, step: Step, mtype: int, raw: bytes, body: Body) -> None:
        if mtype == Front.QUERY:
            if self._batch_open:
                raise ProtocolViolation("a simple Query inside an unfinished extended batch")
            self._begin_batch()
            self._awaiting += 1
            self._query(step, raw, body)
        elif mtype in _EXTENDED:
            if not self._batch_open:
                self._begin_batch()
                self._batch_open = True
            self._extended(step, mtype, raw, body)
        elif mtype == Front.FUNCTION_CALL:
            self._begin_batch()
            self._awaiting += 1
            self._function_call(step, raw, body)
        elif mtype == Front.TERMINATE:
            step.send(raw)
            step.close = True
        else:  # CopyData/Done/Fail, Flush, password messages: pass through
            if self._copy_in is not None:
                if mtype == Front.COPY_DATA:
                    Recorder.copy_in(self._copy_in, body)
                elif mtype == Front.COPY_DONE:  # the last line may lack its newline
                    Recorder.copy_in(self._copy_in, b"\n")
            step.send(raw)

    def _begin_batch(self) -> None:
        self._pred = None  # the batch's prediction: the confirmed mirror until it changes
        self._batch_tracked = False

    @property
    def _predicted(self) -> Mirror:
        """The prediction, to change: a clone of the confirmed mirror, made when first needed
        (a batch of plain statements predicts nothing the server has not confirmed)."""
        if self._pred is None:
            self._pred = self.mirror.clone()
        return self._pred

    @property
    def _view(self) -> Mirror:
        """The prediction, to read."""
        return self._pred or self.mirror

    def _extended(self, step: Step, mtype: int, raw: bytes, body: Body) -> None:
        if mtype == Front.PARSE:
            self._parse(step, raw, body)
        elif mtype == Front.BIND:
            self._bind(step, raw, body)
        elif mtype == Front.EXECUTE:
            self._execute(step, raw, body)
        elif mtype == Front.DESCRIBE:
            self._describe(step, raw, body)
        elif mtype == Front.CLOSE:
            self._close(step, raw, body)
        else:  # Sync
            self._queue.append(Pending(Owed.SYNC))
            self._batch_open = False
            self._awaiting += 1
            step.send(raw)

    # --- startup and sign-in ----------------------------------------------------------------

    def _startup(self, step: Step, data: bytes) -> bytes:
        buf = self._startup_buf + data
        while True:
            got = codec.read_startup(buf)
            if got is None:
                self._startup_buf = buf
                return b""
            length, packet = got
            buf = buf[length:]
            code = codec.startup_code(packet)
            if code == codec.SSL_REQUEST and self.policy.tls and not self.encrypted:
                if buf:  # bytes sent in the clear behind the request could be injected ones
                    raise ProtocolViolation("received unencrypted data after SSL request")
                self.encrypted = True
                step.client.append(b"S")
                step.start_tls = True
                self._startup_buf = b""
                return b""
            if code in (codec.SSL_REQUEST, codec.GSSENC_REQUEST):
                step.client.append(b"N")
                continue
            if code == codec.CANCEL_REQUEST:
                step.cancel = codec.decode_cancel(packet)
                step.close = True
                self._startup_buf = b""
                return b""
            if code >> 16 != 3:
                raise ProtocolViolation(
                    f"unsupported protocol version {code >> 16}.{code & 0xFFFF}", "0A000"
                )
            if self.policy.require_tls and not self.encrypted:
                raise ProtocolViolation(
                    "this proxy accepts only encrypted connections: connect with sslmode=require "
                    "(or verify-full)",
                    "28000",
                )
            self._begin(step, packet, code)
            self._startup_buf = b""
            return buf

    def _begin(self, step: Step, packet: bytes, code: int) -> None:
        params = codec.decode_startup_params(packet)
        if "user" not in params:
            raise ProtocolViolation("no PostgreSQL user name specified in startup packet", "28000")
        startup = self._startup_claim(params)
        self._startup_settings(params)
        policy = self.policy
        verifier = policy.people.get(params["user"]) if policy.people else None
        a = self.attribution
        a.role, a.require_identity, a.startup = params["user"], policy.require_identity, startup
        if verifier is not None:
            if startup is not None:
                raise ProtocolViolation(
                    f"{params['user']!r} signs in to scalple as a person and cannot also assert "
                    f"an identity ({GUC})",
                    "42501",
                )
            a.person = Claim(params["user"], "proxy_auth")
            self.params.update(params, user=policy.people_role)  # as the upstream sees it
            self._upstream_startup = codec.encode_startup(self.params, code)
            self.signin = SignIn(
                params["user"], verifier, policy.people_role, policy.people_password
            )
            self.phase = Phase.PERSON
            step.client.append(SignIn.request())
            return
        self.params.update(params)
        a.may_assert = identity.trusted(
            params["user"], self.client_addr, policy.trusted_roles, policy.trusted_networks
        )
        if startup is not None and not a.may_assert:
            raise ProtocolViolation(
                f"role {params['user']!r} from {self.client_addr} may not assert an identity "
                f"({GUC}); ask for it to be added to [identity] trusted_roles/networks",
                "42501",
            )
        self.phase = Phase.AUTH
        step.send(codec.encode_startup(params, code))

    @staticmethod
    def _startup_claim(params: dict[str, str]) -> Claim | None:
        """The identity in the startup packet, taken out of it (it must not reach the server):
        `options=-c scalple.user=…`, or the setting sent as a parameter of its own."""
        claim: Claim | None = None
        for name in [k for k in params if k.lower() == GUC]:
            claim = Claim(params.pop(name) or None, "startup")
        if "options" in params:
            rest, in_options = identity.strip_startup_option(params["options"])
            if in_options is not None:
                claim = in_options
                if rest:
                    params["options"] = rest
                else:
                    del params["options"]
        return claim

    def _startup_settings(self, params: dict[str, str]) -> None:
        """What the client asks for at startup; the server's ParameterStatus confirms it."""
        with contextlib.suppress(ProtocolViolation):  # the server's ParameterStatus decides
            self._set_encoding(params.get("client_encoding", "UTF8"))
        scs = params.get("standard_conforming_strings")
        if scs is not None:
            self._set_standard_strings(scs)

    def _set_encoding(self, pg_name: str) -> None:
        # PgBouncer reports a client's own spelling back, quotes and all ('utf-8').
        found = codec.python_encoding(pg_name.strip(" '\""))
        if found is None:
            raise ProtocolViolation(f"client_encoding {pg_name!r} is not supported", "0A000")
        self.encoding = found

    def _set_standard_strings(self, value: str) -> None:
        self.standard_strings = value.strip().lower() in ("on", "true", "yes", "1")
        self.records.standard_strings = self.standard_strings

    # --- refusals -------------------------------------------------------------------------

    def _probe_parse(self) -> bytes:
        return codec.encode_parse(PROBE_NAME, self._probe)  # ASCII: the same in any encoding

    def _probe_query(self) -> bytes:
        if self._probe_q is None:
            self._probe_q = codec.encode_query(self._probe)
        return self._probe_q

    def _refuse(self, step: Step, item: Pending, refusal: Refusal, runs: Iterable[Run]) -> None:
        """Send a probe the server rejects in place of the message, so the transaction and the
        batch fail as for a real error; the probe's error is replaced by ours coming back.
        The refused statements are recorded whole, as refused."""
        item.refusal = refusal
        for run in runs:
            run.fail("refused", refusal[0], refusal[1])
            step.write_ahead.append(msgspec.structs.replace(run.event, status="refused"))
        probe = self._probe_query() if item.kind in (Owed.QUERY, Owed.FUNCTION) else None
        step.send(probe or self._probe_parse())
        self._queue.append(item)

    def _guard(self, step: Step, item: Pending, raw: bytes, runs: list[Run]) -> None:
        """Write `runs` ahead of `raw`; if that fails, a probe goes instead."""
        item.guarded = True
        step.write_ahead.extend(r.event for r in runs)
        probe = self._probe_query() if item.kind in (Owed.QUERY, Owed.FUNCTION) else None
        step.send(raw, unwritten=probe or self._probe_parse())
        self._queue.append(item)

    # --- extended protocol ------------------------------------------------------------------

    def _parse(self, step: Step, raw: bytes, body: Body) -> None:
        try:
            name, sql, oids = codec.decode_parse(body, self.encoding)
            refusal: Refusal | None = None
        except ProtocolViolation as exc:  # not in the client's encoding: the server refuses it
            name, sql, oids = codec.decode_parse(body, self.encoding, "replace")
            refusal = (exc.sqlstate, str(exc), None)
        pred = self._predicted
        lexed = self._lex(sql)
        refusal = refusal or self._unreadable(lexed)
        command = Command()
        comment = None
        if refusal is None and name and name in pred.statements:
            refusal = ("42P05", f'prepared statement "{name}" already exists', None)
        if refusal is None:
            command = self._classify(sql, lexed)
            refusal, comment = self._claims(command, lexed)
        server_name = f"scalple_{self.session_id[:8]}_{next(self._names)}" if name else ""
        text = _neutral(command) or sql
        prepared = Prepared(
            sql, command, server_name, lease=pred.lease, comment=comment,
            guc_params=command.guc_params, large=lexed.light, lexed=lexed,
        )  # fmt: skip
        item = Pending(Owed.PARSE, name, target=prepared)
        if refusal is not None:
            run = self.records.start(sql, None, command, pred.tx)
            self._refuse(step, item, refusal, [run])
            return
        forwarded = raw if text is sql and server_name == name else (
            codec.encode_parse(server_name, text, oids, self.encoding)
        )  # fmt: skip
        prepared.raw_parse = forwarded
        pred.statements[name] = prepared
        self._queue.append(item)
        step.send(forwarded)

    def _bind(self, step: Step, raw: bytes, body: Body) -> None:
        bind = codec.decode_bind(body, self.encoding)
        pred = self._predicted
        prepared = pred.statements.get(bind.statement)
        item = Pending(Owed.BIND, bind.portal)
        refusal = self._statement_refusal(bind.statement, prepared)
        if refusal is None and prepared is not None:
            refusal = self._check_guc_params(prepared, bind.params, bind.param_formats)
        if refusal is not None or prepared is None:
            run = self.records.start(prepared.sql if prepared else "", None, Command(), pred.tx)
            self._refuse(step, item, refusal or _no_statement(bind.statement), [run])
            return
        self._reparse(step, prepared)
        pred.serial += 1
        portal = Portal(
            prepared, bind.params, bind.param_formats, tx=pred.tx, opened=pred.serial,
            lease=pred.lease,
        )  # fmt: skip
        pred.portals[bind.portal] = portal
        item.target = portal
        self._queue.append(item)
        if prepared.server_name == bind.statement:
            step.send(raw)
        else:
            step.send(codec.encode_bind_renamed(body, bind, prepared.server_name, self.encoding))

    def _reparse(self, step: Step, prepared: Prepared) -> None:
        """Behind transaction pooling, a statement parsed in an earlier transaction may be
        missing from the server connection this one runs on (or, unnamed, be another
        client's): close ours there and parse it again first. The client sees nothing of it."""
        if not self._pooled or prepared.by_sql or prepared.lease == self._view.lease:
            return
        if prepared.server_name:
            self._queue.append(Pending(Owed.REPARSE_CLOSE, prepared.server_name))
            step.send(codec.encode_target(b"C", "S", prepared.server_name, self.encoding))
        self._queue.append(Pending(Owed.REPARSE, prepared.server_name, target=prepared))
        step.send(prepared.raw_parse)

    def _describe(self, step: Step, raw: bytes, body: Body) -> None:
        kind, name = codec.decode_target(body, self.encoding)
        pred = self._predicted
        if kind == "S":
            prepared = pred.statements.get(name)
            item = Pending(Owed.DESCRIBE_STATEMENT, name, target=prepared)
            refusal = self._statement_refusal(name, prepared)
            if refusal is not None or prepared is None:
                self._refuse(step, item, refusal or _no_statement(name), [])
                return
            self._reparse(step, prepared)
            self._queue.append(item)
            if prepared.server_name != name:
                raw = codec.encode_target(b"D", "S", prepared.server_name, self.encoding)
            step.send(raw)
            return
        portal = pred.portals.get(name)
        item = Pending(Owed.DESCRIBE_PORTAL, name, target=portal)
        refusal = self._portal_refusal(name, portal)
        if refusal is not None:
            self._refuse(step, item, refusal, [])
            return
        self._queue.append(item)
        step.send(raw)

    def _close(self, step: Step, raw: bytes, body: Body) -> None:
        kind, name = codec.decode_target(body, self.encoding)
        pred = self._predicted
        if kind == "S":
            prepared = pred.statements.pop(name, None)
            self._queue.append(Pending(Owed.CLOSE_STATEMENT, name, target=prepared))
            if prepared is not None and prepared.server_name != name:
                raw = codec.encode_target(b"C", "S", prepared.server_name, self.encoding)
        else:
            portal = pred.portals.pop(name, None)
            self._queue.append(Pending(Owed.CLOSE_PORTAL, name, target=portal))
        step.send(raw)

    def _execute(self, step: Step, raw: bytes, body: Body) -> None:
        name, _limit = codec.decode_execute(body, self.encoding)
        pred = self._predicted
        portal = pred.portals.get(name)
        item = Pending(Owed.EXECUTE, name, target=portal)
        if portal is not None and (isinstance(portal.run, Run) or portal.done):
            # A portal already running (suspended, or not answered yet: pipelined) goes on, one
            # statement; one that ran to completion yields nothing more. No new record either way.
            if isinstance(portal.run, Run):
                portal.run.suspended = False
                item.runs.append(portal.run)
            self._queue.append(item)
            step.send(raw)
            return
        refusal = self._portal_refusal(name, portal)
        if refusal is not None or portal is None:
            run = self.records.start("", None, Command(), pred.tx, detail=f"Execute {name!r}")
            self._refuse(step, item, refusal or _no_portal(name), [run])
            return
        statement = portal.statement
        run, refusal = self._statement(
            statement.sql, statement.command, statement.comment, portal.params, portal.formats,
            detail=f"Execute of cursor {name!r}" if portal.by_sql else None,
            skip=statement.large, lexed=statement.lexed,
        )  # fmt: skip
        item.runs.append(run)
        if refusal is not None:
            self._refuse(step, item, refusal, [run])
            return
        run.plan = self.records.plan(portal.fields or statement.fields, run)
        portal.run = run
        self._guard(step, item, raw, [run])

    # --- simple query and function call ---------------------------------------------------

    def _lex(self, sql: str) -> Lexed:
        if len(sql) > self.policy.analysis_max_bytes:
            return lex(sql, self.standard_strings, light=True, watch=LARGE_WATCH)
        return lex(sql, self.standard_strings)

    def _classify(self, sql: str, lexed: Lexed) -> Command:
        if lexed.light:
            return large(lexed, self.policy.analysis_max_bytes)
        return classify(sql, lexed, self.standard_strings)

    def _query(self, step: Step, raw: bytes, body: Body) -> None:
        try:
            sql = codec.decode_query(body, self.encoding)
            refusal: Refusal | None = None
        except ProtocolViolation as exc:  # not in the client's encoding: the server refuses it
            sql = codec.decode_query(body, self.encoding, "replace")
            refusal = (exc.sqlstate, str(exc), None)
        lexed = self._lex(sql)
        item = Pending(Owed.QUERY)
        if not lexed.statements and refusal is None:  # an empty query: nothing to record
            self._queue.append(item)
            step.send(raw)
            return
        refusal = refusal or self._unreadable(lexed)
        pieces = self._split(sql, lexed) if refusal is None else [(sql, lexed)]
        if pieces is None:
            refusal = ("42601", "scalple: cannot split this message into statements", None)
            pieces = [(sql, lexed)]
        runs: list[Run] = []
        texts: list[str] = []
        for text, piece in pieces:
            command = self._classify(text, piece) if refusal is None else Command()
            bad, comment = self._claims(command, piece) if refusal is None else (None, None)
            run, bad2 = self._statement(
                text, command, comment, (), (), skip=piece.light, lexed=piece
            )
            refusal = refusal or bad or bad2
            runs.append(run)
            texts.append(_neutral(command) or text)
        item.runs = runs
        if refusal is not None:
            self._refuse(step, item, refusal, runs)
            return
        if any(t is not p[0] for t, p in zip(texts, pieces, strict=True)):
            raw = codec.encode_query(";\n".join(texts), self.encoding)
        self._guard(step, item, raw, runs)

    def _split(self, sql: str, lexed: Lexed) -> list[tuple[str, Lexed]] | None:
        """The statements of one simple Query, each lexed; None when they cannot be told
        apart for certain. A `BEGIN ATOMIC` body holds semicolons that end nothing: there,
        PostgreSQL's own parser splits."""
        spans = lexed.statements
        if len(spans) == 2:
            return [(sql, lexed)]
        if lexed.light and lexed.watched:
            return None  # a large message that may hold a BEGIN ATOMIC body: cannot split it
        if lexed.atomic:
            text = sql if self.standard_strings else None
            if text is None:
                return None  # the grammar reads only standard strings
            try:
                slices = pg_split(text, with_parser=True, only_slices=True)
            except Exception:
                return None
            texts = [sql[s] for s in slices]
        else:
            texts = [sql[a:b].strip() for a, b in zip(spans[::2], spans[1::2], strict=True)]
        return [(t, self._lex(t)) for t in texts]

    def _function_call(self, step: Step, raw: bytes, body: Body) -> None:
        oid = int.from_bytes(body[:4], "big") if len(body) >= 4 else 0
        run, refusal = self._statement(f"-- FunctionCall oid={oid}", Command(), None, (), ())
        item = Pending(Owed.FUNCTION, runs=[run])
        if refusal is not None:
            self._refuse(step, item, refusal, [run])
            return
        self._guard(step, item, raw, [run])

    # --- one statement ------------------------------------------------------------------------

    def _statement(
        self,
        sql: str,
        command: Command,
        comment: Claim | None,
        params: tuple[bytes | None, ...],
        formats: tuple[int, ...],
        detail: str | None = None,
        skip: bool = False,
        lexed: Lexed | None = None,
    ) -> tuple[Run, Refusal | None]:
        """A statement about to run: what it really runs, under whose name, and its record.
        Its effects are applied to the prediction, for the statements after it (a plain
        statement has none: it only reads it)."""
        plain = command.kind is Kind.OTHER and not command.tracked
        pred = self._view if plain else self._predicted
        if not plain:
            pred.begin_statement()
        refusal: Refusal | None = None
        real_sql, real_command = sql, command
        if command.kind is Kind.EXECUTE:
            found = pred.statements.get(command.name or "")
            refusal = self._sql_name_refusal("statement", command.name, found)
            if found is not None and refusal is None:
                real_sql, real_command = found.sql, found.command
                params = tuple(None if a is None else a.encode() for a in command.args)
                formats, detail = (), sql
        elif command.kind is Kind.FETCH:
            cursor = pred.portals.get(command.name or "")
            refusal = self._sql_name_refusal("portal", command.name, cursor)
            if cursor is not None and refusal is None:
                real_sql, detail = cursor.statement.sql, sql
                params, formats = cursor.params, cursor.formats
        for kind, name in command.uses:
            if refusal is None:
                got = (pred.statements if kind == "statement" else pred.portals).get(name)
                refusal = self._sql_name_refusal(kind, name, got)
        if command.kind is Kind.IDENTITY:
            refusal = refusal or self.attribution.may_claim(f"SET {GUC}")
            if refusal is None:
                pred.apply(command)
        claim = self.attribution.claim(comment, pred.claim())
        refusal = refusal or self.attribution.unattributed(real_command, claim)
        skip = skip or len(real_sql) > self.policy.analysis_max_bytes
        run = self.records.start(
            real_sql, claim, command, pred.tx, params, formats, detail, skip=skip,
            lexed=lexed if real_sql is sql else None,
        )  # fmt: skip
        if not plain and command.kind is not Kind.IDENTITY:
            pred.apply(command, "")
        if command.tracked:
            self._batch_tracked = True
        return run, refusal

    def _claims(self, command: Command, lexed: Lexed) -> tuple[Refusal | None, Claim | None]:
        """A refusal the statement's own text earns, and its comment's claim."""
        if command.refusal is not None:
            return (*command.refusal, None), None
        try:
            comment = identity.comment_claim(lexed.sql, lexed.comments)
        except ConflictingClaims as exc:
            return ("42601", f"scalple: {exc}", None), None
        if comment is not None:
            bad = self.attribution.may_claim("comment")
            if bad is not None:
                return bad, None
        return self._tracked_refusal(), comment

    def _tracked_refusal(self) -> Refusal | None:
        if not self._batch_tracked:
            return None
        return (
            "0A000",
            "scalple: a statement after a change of standard_conforming_strings or "
            "client_encoding in the same batch cannot be read for certain; send Sync first",
            None,
        )

    def _unreadable(self, lexed: Lexed) -> Refusal | None:
        if lexed.crowded:
            return ("54000", "scalple: too many comments that could name someone", None)
        if lexed.unterminated:
            return ("42601", f"scalple: unterminated {lexed.unterminated}", None)
        if lexed.ambiguous:
            return ("42601", f"scalple: ambiguous text ({lexed.ambiguous})", None)
        if lexed.unicode_strings and not self.standard_strings:
            return ("22P06", "unsafe use of string constant with Unicode escapes", None)
        return None

    def _check_guc_params(
        self, prepared: Prepared, params: tuple[bytes | None, ...], formats: tuple[int, ...]
    ) -> Refusal | None:
        """set_config($n, …): the setting's name arrives here, in the Bind."""
        for number in prepared.guc_params:
            raw = params[number - 1] if 0 < number <= len(params) else None
            name = raw.decode(self.encoding, "replace").strip().lower() if raw else ""
            if name == GUC:
                return ("42601", f"scalple: set_config('{GUC}', …) is refused; use SET", None)
            if name in TRACKED_SETTINGS:
                self._batch_tracked = True
        return None

    def _statement_refusal(self, name: str, prepared: Prepared | None) -> Refusal | None:
        if prepared is None:
            return _no_statement(name)
        return self._lease_refusal("prepared statement", name, prepared.by_sql, prepared.lease)

    def _portal_refusal(self, name: str, portal: Portal | None) -> Refusal | None:
        if portal is None:
            return _no_portal(name)
        return self._lease_refusal("cursor", name, portal.committed, portal.lease)

    def _sql_name_refusal(
        self, kind: str, name: str | None, found: Prepared | Portal | None
    ) -> Refusal | None:
        if found is None:
            return _no_statement(name or "") if kind == "statement" else _no_portal(name or "")
        if isinstance(found, Prepared):
            return self._statement_refusal(name or "", found)
        return self._portal_refusal(name or "", found)

    def _lease_refusal(self, what: str, name: str, outlives: bool, lease: int) -> Refusal | None:
        """Under transaction pooling, what outlives its transaction on the server connection
        may not be on the next one (or be another client's there): refuse to guess."""
        if not outlives or not self._pooled or lease == self._view.lease:
            return None
        sqlstate = "26000" if what == "prepared statement" else "34000"
        return (
            sqlstate,
            f'scalple: {what} "{name}" was made in an earlier transaction; behind transaction '
            "pooling it may not be on this server connection, or be another client's",
            'use it within the transaction that makes it, or set pool_mode = "session" when '
            "the upstream keeps one server connection per client",
        )

    # --- upstream → client -------------------------------------------------------------------

    def server_data(self, data: bytes) -> Step:
        """The upstream's bytes: forwarded as they came, in one piece, unless a message must be
        replaced; rows are only counted unless their subjects are read."""
        step = Step()
        reading = self.records.reads_subjects
        found = codec.scan(self._server, data, _NO_BULK if reading else _BULK)
        buf, marks = found.buf, found.marks
        edits: list[tuple[int, int, bytes]] = []
        upto = len(buf)
        for i in range(0, len(marks), 4):
            mtype, start, end, rows = marks[i], marks[i + 1], marks[i + 2], marks[i + 3]
            if rows:
                self._count_rows(rows)
            if mtype == Back.DATA_ROW or mtype == Back.COPY_DATA:  # subjects are read
                run = self._queue[0].run if self._queue else None
                if run is not None:
                    Recorder.count_row(run, mtype, buf[start + 5 : end])
                continue
            replacement = self._server_message(step, mtype, buf[start + 5 : end])
            if replacement is not None:
                edits.append((start, end, replacement))
            if step.close:
                upto = end  # nothing after this message reaches the client
                break
        else:
            if found.bulk_after:
                self._count_rows(found.bulk_after)
        if not edits and upto == len(buf):
            if buf:
                step.client.append(buf)
            return step
        pos = 0
        out = step.client
        for start, end, replacement in edits:
            if start > pos:
                out.append(buf[pos:start])
            if replacement:
                out.append(replacement)
            pos = end
        if upto > pos:
            out.append(buf[pos:upto])
        return step

    def _count_rows(self, rows: int) -> None:
        run = self._queue[0].run if self._queue else None
        if run is not None:
            run.rows += rows

    def _server_message(self, step: Step, mtype: int, body: bytes) -> bytes | None:
        queue = self._queue
        head = queue[0] if queue else None
        if mtype == Back.COMMAND_COMPLETE:
            self._complete(step, head, codec.decode_command_tag(body))
        elif mtype == Back.READY:
            return self._ready(step, body)
        elif mtype == Back.ERROR:
            return self._error(step, head, body)
        elif mtype == Back.EMPTY_QUERY:
            self._complete(step, head, "")
        elif mtype == Back.PORTAL_SUSPENDED:
            if head is not None and head.kind is Owed.EXECUTE and head.runs:
                run = head.runs[0]
                run.suspended = True
                if isinstance(head.target, Portal):
                    self._suspended.append((head.target, run))
                queue.popleft()
        elif mtype == Back.ROW_DESCRIPTION:
            self._row_description(head, body)
        elif mtype == Back.NO_DATA:
            if head is not None and head.kind in (Owed.DESCRIBE_STATEMENT, Owed.DESCRIBE_PORTAL):
                queue.popleft()
        elif mtype in (Back.PARSE_COMPLETE, Back.BIND_COMPLETE, Back.CLOSE_COMPLETE):
            return self._confirmed(head)
        elif mtype == Back.COPY_IN or mtype == Back.COPY_OUT:
            copying = head.run if head else None
            if copying is not None:
                self.records.copy_plan(copying)
                if mtype == Back.COPY_IN:
                    self._copy_in = copying
        elif mtype == Back.FUNCTION_RESULT:
            self._complete(step, head, "FUNCTION CALL")
        elif mtype == Back.BACKEND_KEY:  # the server's pid goes through; the secret is ours
            self.upstream_key = codec.decode_backend_key(body)
            self.client_key = (self.upstream_key[0], self._secret)
            step.backend_key = self.client_key
            return codec.encode_backend_key(*self.client_key)
        elif mtype == Back.AUTHENTICATION and self.signin is not None:
            if self.signin.upstream_pending:
                client, answer = self.signin.upstream(body)
                if answer is not None:
                    step.send(answer)
                return client
        elif mtype == Back.PARAMETER_STATUS:
            self._parameter_status(step, body)
        return None

    def _parameter_status(self, step: Step, body: bytes) -> None:
        name, value = codec.decode_parameter_status(body, self.encoding)
        if name == "application_name":
            self.params["application_name"] = value
        elif name == "client_encoding":
            self._set_encoding(value)
        elif name == "standard_conforming_strings":
            self._set_standard_strings(value)

    def _confirmed(self, head: Pending | None) -> bytes | None:
        """ParseComplete, BindComplete, CloseComplete: the server made or dropped a name."""
        if head is None:
            return None
        self._queue.popleft()
        mirror, kind, target = self.mirror, head.kind, head.target
        if kind is Owed.PARSE and isinstance(target, Prepared):
            mirror.statements[head.name] = target
        elif kind is Owed.REPARSE or kind is Owed.REPARSE_CLOSE:
            if isinstance(target, Prepared):
                target.lease = mirror.lease
            return b""  # the client did not send this: the answer is not for it
        elif kind is Owed.BIND and isinstance(target, Portal):
            mirror.portals[head.name] = target
        elif kind is Owed.CLOSE_STATEMENT:
            mirror.statements.pop(head.name, None)
        elif kind is Owed.CLOSE_PORTAL:
            mirror.portals.pop(head.name, None)
        return None

    def _row_description(self, head: Pending | None, body: bytes) -> None:
        if head is None:
            return
        kind = head.kind
        if kind is Owed.DESCRIBE_STATEMENT or kind is Owed.DESCRIBE_PORTAL:
            self._queue.popleft()
        if not self.records.reads_subjects:
            return
        fields = codec.decode_row_description(body)
        target = head.target
        if kind is Owed.DESCRIBE_PORTAL and isinstance(target, Portal):
            target.fields = fields
            if isinstance(target.run, Run) and target.run.plan is None:
                target.run.plan = self.records.plan(fields, target.run)
        elif kind is Owed.DESCRIBE_STATEMENT and isinstance(target, Prepared):
            target.fields = fields
        elif kind in _STATEMENT and head.run is not None:
            head.run.plan = self.records.plan(fields, head.run)

    def _complete(self, step: Step, head: Pending | None, tag: str) -> None:
        self._copy_in = None
        if head is None or head.kind not in _STATEMENT:
            return
        run = head.run
        if run is not None and not run.done:
            run.tag = tag
            step.records.append(self.records.outcome(run))
            self.mirror.begin_statement()
            self.mirror.apply(run.command, tag)
            if run.analysis is not None and run.analysis.audit_class == "DDL":
                step.catalog_changed = True
            target = head.target
            if isinstance(target, Portal) and target.run is run:
                target.run = None
                target.done = True
        if head.kind is Owed.EXECUTE:
            self._queue.popleft()
        else:  # QUERY and FUNCTION items stay until their ReadyForQuery
            head.index += 1

    def _error(self, step: Step, head: Pending | None, body: bytes) -> bytes | None:
        fields = codec.decode_error_fields(body, self.encoding)
        sqlstate, message = fields.get("C", "XX000"), fields.get("M", "")
        self._copy_in = None
        if self.phase is not Phase.READY:
            return None
        self.mirror.error()
        if head is not None and head.kind in (Owed.QUERY, Owed.FUNCTION):
            replacement = self._replaced(step, head, message)
            if replacement is not None:
                head.index = len(head.runs)
                return replacement
            run = head.run
            if run is not None and not run.done:
                run.fail(_status_for(sqlstate), sqlstate, message, fields.get("R"))
                step.records.append(self.records.outcome(run))
                head.index += 1
                for rest in head.runs[head.index :]:
                    step.records.append(self.records.outcome(rest, "skipped"))
                head.index = len(head.runs)
            return None
        # Extended protocol: the server skips everything up to Sync; so do we. The error is the
        # failed message's: its statement's when it was an Execute of one not yet answered.
        # What comes after never ran: skipped, the first one with the error that stopped it
        # when the error was no statement's own (a failed Parse or Bind).
        routine = fields.get("R")
        replacement = None
        placed = False
        while self._queue and self._queue[0].kind is not Owed.SYNC:
            item = self._queue.popleft()
            if item is head:
                replacement = self._replaced(step, item, message)
                placed = replacement is not None
                for run in item.runs[item.index :] if not placed else ():
                    if not run.done:
                        run.fail(_status_for(sqlstate), sqlstate, message, routine)
                        step.records.append(self.records.outcome(run))
                        placed = True
                continue
            for run in item.runs[item.index :]:
                if run.done or run.suspended:
                    continue
                if not placed:  # its own Parse or Bind failing (a plan's error) is its error
                    status = _status_for(sqlstate) if _prepares(head, item) else "skipped"
                    run.fail(status, sqlstate, message, routine)
                    step.records.append(self.records.outcome(run))
                    placed = True
                else:
                    step.records.append(self.records.outcome(run, "skipped"))
        if not placed:
            self._batch_error = (sqlstate, message, routine)
        return replacement

    def _replaced(self, step: Step, item: Pending, message: str) -> bytes | None:
        """Our error in place of a probe's: a refusal, or a write-ahead that failed."""
        refusal = item.refusal
        if refusal is None and item.guarded and self._probe in message:
            refusal = (
                "58030",
                "scalple: statement refused: its audit record could not be written",
                None,
            )
            for run in item.runs[item.index :]:  # never written: record them whole now
                run.fail("refused", refusal[0], refusal[1])
                step.records.append(msgspec.structs.replace(
                    run.event, status="refused", sqlstate=refusal[0], error=refusal[1]
                ))  # fmt: skip
        elif refusal is not None:
            for run in item.runs[item.index :]:
                step.records.append(self.records.outcome(run, "refused"))
        else:
            return None
        return codec.encode_error(*refusal[:2], hint=refusal[2], encoding=self.encoding)

    def _ready(self, step: Step, body: bytes) -> bytes | None:
        status = body[:1].decode() if body else "I"
        if self.phase is Phase.AUTH:
            self.phase = Phase.READY
            step.ready = True
            return None
        while self._queue:
            item = self._queue.popleft()
            for run in item.runs[item.index :]:
                if run.done:
                    continue
                if self._batch_error is not None and item.kind is Owed.EXECUTE:
                    run.fail("skipped", *self._batch_error)  # an earlier message failed
                    step.records.append(self.records.outcome(run))
                    self._batch_error = None
                elif not run.suspended:
                    step.records.append(self.records.outcome(run, "skipped"))
            if item.kind in _ENDS_BATCH:
                break
        self._batch_error = None
        drift = self.mirror.sync(status, self._pooled)
        self._end_suspended(step)
        if self._awaiting:
            self._awaiting -= 1
        if not self._awaiting and not self._batch_open:
            self._pred = None
        if drift is not None:
            log.error("session %s: %s; closing the connection", self.session_id, drift)
            step.close = True
            return codec.encode_ready(status) + codec.encode_error(
                "08P01",
                "scalple: lost track of the transaction state; reconnect",
                severity="FATAL",
                encoding=self.encoding,
            )
        self._release_held(step)
        return None

    def _end_suspended(self, step: Step) -> None:
        """A suspended portal that the transaction's end closed: its statement is done."""
        if not self._suspended:
            return
        alive = []
        for portal, run in self._suspended:
            if self.mirror.portals.get(_portal_name(self.mirror, portal)) is portal:
                alive.append((portal, run))
            elif run.suspended:
                step.records.append(self.records.outcome(run))
        self._suspended = alive

    def release(self) -> Step:
        """What waited behind the batch in flight, read now (the shell calls this off the
        event loop when `Step.release` said a large message is next)."""
        step = Step()
        self._release_held(step, large_too=True)
        return step

    def _release_held(self, step: Step, large_too: bool = False) -> None:
        """The batch in flight is answered: what waited behind it goes now, in order."""
        held = self._held
        while held and not (self._awaiting and self._starts_batch(held[0].type)):
            if len(held[0].raw) > OFF_LOOP_BYTES and not large_too:
                step.release = True  # too large to read on the event loop: the shell will
                return
            large_too = False
            frame = held.popleft()
            self._held_bytes -= len(frame.raw)
            if frame.body is None or self.phase is not Phase.READY:
                step.send(frame.raw)
                continue
            self._message(step, frame.type, frame.raw, frame.body)
            if step.close:
                return


def _prepares(failed: Pending | None, item: Pending) -> bool:
    """Is `failed` the Parse, Bind or Describe that made what Execute `item` runs?"""
    portal = item.target
    if failed is None or not isinstance(portal, Portal):
        return False
    return failed.target is portal or failed.target is portal.statement


def _portal_name(mirror: Mirror, portal: Portal) -> str:
    for name, p in mirror.portals.items():
        if p is portal:
            return name
    return "\x00"  # no such portal


def _neutral(command: Command) -> str | None:
    """The text an identity SET becomes upstream: same tag and transaction rules, no value."""
    if command.kind is not Kind.IDENTITY:
        return None
    return identity.NEUTRAL_SET_LOCAL if command.local else identity.NEUTRAL_SET


def _no_statement(name: str) -> Refusal:
    return ("26000", f'prepared statement "{name}" does not exist', None)


def _no_portal(name: str) -> Refusal:
    return ("34000", f'portal "{name}" does not exist', None)
