"""One client connection's protocol state: turns its traffic into audit events.

Sans-I/O: the shell feeds bytes from either side and gets back a `Step` saying what to forward,
what to answer, and which events must be durable before the forwarded bytes leave. Every
statement-bearing message (Query, Execute, FunctionCall) is matched to its answer through a queue
of what the upstream still owes, so pipelined traffic is attributed exactly.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

import msgspec
from pglast import split as pg_split

from scalple.analysis import (
    Analyzer,
    CopyPlan,
    ResultField,
    ResultPlan,
    StatementAnalysis,
    SubjectSet,
)
from scalple.events import AuditEvent, Status
from scalple.proxy import codec, identity, people
from scalple.proxy.codec import Frame, ProtocolViolation
from scalple.proxy.identity import Claim

log = logging.getLogger("scalple.proxy")

# Queue item kinds: what the upstream owes us, in order.
PARSE, BIND, DESCRIBE_S, DESCRIBE_P, EXECUTE, CLOSE, SYNC, QUERY, FUNCTION = range(9)
PROBE_NAME: Final = "scalple_refused"
PLAN_CACHE: Final = 256
PROBE_SQL: Final = "SCALPLE REFUSED THIS STATEMENT"
_UNATTRIBUTED_HINT: Final = (
    "attribute it with SET scalple.user = 'name', a /*user='name'*/ comment, "
    "or options=-c scalple.user=name in the connection string"
)


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


@dataclass(slots=True)
class Step:
    """What the shell must do next. `upstream` may leave only after `write_ahead` is durable."""

    upstream: list[bytes] = field(default_factory=list)
    client: list[bytes] = field(default_factory=list)
    write_ahead: list[AuditEvent] = field(default_factory=list)
    records: list[AuditEvent] = field(default_factory=list)
    cancel: tuple[int, int] | None = None
    close: bool = False
    start_tls: bool = False  # `client` holds the S answer: the TLS handshake comes next
    # Upstream pieces that carry a write-ahead statement, by index, with the item to refuse.
    guarded: list[tuple[int, Pending]] = field(default_factory=list)


class Run:
    """A statement between its write-ahead record and its outcome."""

    __slots__ = (
        "analysis",
        "carry",
        "copy",
        "error",
        "event",
        "plan",
        "rows",
        "sql",
        "sqlstate",
        "status",
        "subjects",
        "suspended",
        "tag",
    )

    def __init__(self, event: AuditEvent, sql: str = "") -> None:
        self.event = event
        self.sql = sql
        self.plan: ResultPlan | None = None
        self.analysis: StatementAnalysis | None = None
        self.copy: CopyPlan | None = None
        self.subjects: SubjectSet | None = None
        self.carry = b""
        self.rows = 0
        self.tag: str | None = None
        self.status: Status = "ok"
        self.sqlstate: str | None = None
        self.error: str | None = None
        self.suspended = False


class Pending:
    """One thing the upstream still owes: a response to a message we forwarded."""

    __slots__ = ("index", "kind", "name", "refusal", "runs")

    def __init__(self, kind: int, name: str = "", runs: list[Run] | None = None) -> None:
        self.kind = kind
        self.name = name
        self.runs = runs or []
        self.index = 0
        # (sqlstate, message, hint) to show the client in place of the probe's error
        self.refusal: tuple[str, str, str | None] | None = None

    @property
    def run(self) -> Run | None:
        return self.runs[self.index] if self.index < len(self.runs) else None


@dataclass(slots=True)
class Prepared:
    sql: str
    claim: Claim | None = None
    refusal: tuple[str, str, str | None] | None = None
    fields: tuple[codec.Field, ...] | None = None
    # The statement's comment claim, parsed once at Parse rather than at every Execute.
    comment: Claim | bool | None = False


@dataclass(slots=True)
class Portal:
    statement: Prepared
    params: tuple[bytes | None, ...]
    formats: tuple[int, ...]
    run: Run | None = None
    fields: tuple[codec.Field, ...] | None = None


def _status_for(sqlstate: str) -> Status:
    return "cancelled" if sqlstate == "57014" else "error"


def _format(formats: tuple[int, ...], i: int) -> int:
    """Bind's format codes: none means text, one applies to all, else one per parameter."""
    if not formats:
        return 0
    return formats[0] if len(formats) == 1 else formats[i]


def _text_param(value: bytes | None, fmt: int) -> str | None:
    if value is None:
        return None
    if fmt == 1:
        return "\\x" + value.hex()
    return value.decode(errors="replace")


def split_statements(sql: str) -> list[str]:
    """The statements of one simple Query; the text whole when it cannot be split."""
    if ";" not in sql.rstrip().rstrip(";"):
        return [sql]
    try:
        parts = list(pg_split(sql, with_parser=False))
    except Exception:
        return [sql]
    return parts or [sql]


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
        self.analyzer = analyzer
        self._copy_in: Run | None = None
        self.ddl_done = False  # a DDL statement succeeded: the catalog may have changed
        # Result rows are read for subjects only when some column names one.
        self._subject_columns = bool(analyzer and analyzer.policy.subject_columns)
        self._plans: dict[tuple[object, ...], ResultPlan | None] = {}
        self.client_addr = client_addr
        self.client_port = client_port
        self.now_us = now_us
        self.session_id = session_id or secrets.token_hex(8)
        self.phase = "startup"
        self.encrypted = False
        self.person: Claim | None = None  # signed in to scalple itself (proxy_auth)
        self._exchange: people.ServerExchange | None = None
        self._login: people.UpstreamLogin | None = None
        self._upstream_startup = b""
        self.params: dict[str, str] = {}
        self.may_assert = False
        self.startup_claim: Claim | None = None
        self.set_claim: Claim | None = None
        self.local_claim: Claim | None = None
        self.tx_status = "I"
        self.tx_seq = 0
        self.upstream_key: tuple[int, int] | None = None
        self.client_key = (secrets.randbits(31), secrets.randbits(31))
        self._ids = itertools.count(1)
        self._startup_buf = b""
        self._client = codec.Framer(whole_types=b"QPBEFDCSHXp", max_size=policy.max_message_bytes)
        self._server = codec.Framer(whole_types=b"RSKZTCEN123stnIGHWAVv")
        self._queue: deque[Pending] = deque()
        self._prepared: dict[str, Prepared] = {}
        self._portals: dict[str, Portal] = {}
        self._batch_error: tuple[str, str] | None = None
        self._upstream_done = False

    # --- identity ----------------------------------------------------------------------------

    def current_claim(self, comment: Claim | None = None) -> Claim | None:
        if self.person is not None:
            return self.person
        for claim in (comment, self.local_claim, self.set_claim, self.startup_claim):
            if claim is not None and claim.actor:
                return claim
        return None

    @property
    def idle(self) -> bool:
        """Ready, and the upstream owes nothing: the connection can close without losing work."""
        return self.phase == "ready" and not self._queue

    @property
    def client_pending(self) -> int:
        """Bytes of an incomplete client message held back (for stall detection)."""
        return self._client.pending + len(self._startup_buf)

    # --- events --------------------------------------------------------------------------------

    def _run(
        self,
        sql: str,
        claim: Claim | None,
        raw_params: tuple[bytes | None, ...] = (),
        formats: tuple[int, ...] = (),
    ) -> Run:
        """A statement's write-ahead record: who, from where, and what, with PII masked."""
        analyzer = self.analyzer
        a = None
        if analyzer is None:
            params = tuple(_text_param(v, _format(formats, i)) for i, v in enumerate(raw_params))
            analysis: dict[str, object] = {"statement": sql, "params": params}
        else:
            a = analyzer.analyze(sql, raw_params, formats)
            analysis = {
                "statement": a.statement,
                "params": a.params,
                "fingerprint": a.fingerprint,
                "audit_class": a.audit_class,
                "tables": a.tables,
                "columns": a.columns,
                "masked_fields": a.masked_fields,
                "subjects": a.subjects,
                "subjects_capped": a.subjects_capped,
                "analysis": a.analysis,
            }
        event = AuditEvent(
            kind="statement",
            event_id=f"{self.session_id}-{next(self._ids)}",
            ts_start=self.now_us(),
            actor=claim.actor if claim else None,
            actor_email=claim.email if claim else None,
            identity_source=claim.source if claim else "none",  # type: ignore[arg-type]
            db_role=self.params.get("user"),
            database=self.params.get("database") or self.params.get("user"),
            application_name=self.params.get("application_name"),
            client_addr=self.client_addr,
            client_port=self.client_port,
            session_id=self.session_id,
            tx_seq=self.tx_seq,
            **analysis,  # type: ignore[arg-type]
        )
        run = Run(event, sql)
        run.analysis = a
        return run

    def _outcome(self, run: Run, status: Status | None = None) -> AuditEvent:
        end = self.now_us()
        started = run.event.ts_start
        rows = run.rows if run.rows else (codec.tag_rows(run.tag) if run.tag else None)
        return AuditEvent(
            kind="outcome",
            event_id=run.event.event_id,
            ts_start=started,
            ts_end=end,
            duration_us=max(0, end - started),
            session_id=self.session_id,
            tx_seq=run.event.tx_seq,
            command_tag=run.tag,
            rows=rows,
            status=status or run.status,
            sqlstate=run.sqlstate,
            error=self._mask(run.error),
            subjects=run.subjects.subjects if run.subjects else (),
            subjects_capped=run.subjects.capped if run.subjects else False,
        )

    def _mask(self, text: str | None) -> str | None:
        """Server messages can quote values (`invalid input syntax: "alice@x.io"`)."""
        if text is None or self.analyzer is None:
            return text
        return self.analyzer.mask_text(text)

    def close_out(self, status: Status = "incomplete") -> list[AuditEvent]:
        """Outcomes for every statement still owed an answer when the connection ends."""
        out: list[AuditEvent] = []
        seen: set[str] = set()
        for item in self._queue:
            for run in item.runs[item.index :]:
                if run.event.event_id not in seen:
                    seen.add(run.event.event_id)
                    out.append(self._outcome(run, status))
        for portal in self._portals.values():
            if portal.run is not None and portal.run.event.event_id not in seen:
                out.append(self._outcome(portal.run, "ok"))
        self._queue.clear()
        self._portals.clear()
        return out

    # --- client → upstream ----------------------------------------------------------------------

    def client_data(self, data: bytes) -> Step:
        step = Step()
        if self.phase == "startup":
            data = self._startup(step, data)
            if self.phase == "startup" or not data:
                return step
        for frame in self._client.feed(data):
            if self.phase == "person":
                self._sign_in(step, frame)
                continue
            if frame.body is None:
                step.upstream.append(frame.raw)
                continue
            self._client_message(step, frame)
            if step.close:
                break
        return step

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
        if "options" in params:
            rest, claim = identity.strip_startup_option(params["options"])
            if claim is not None:
                self.startup_claim = claim
                if rest:
                    params["options"] = rest
                else:
                    del params["options"]
        verifier = self.policy.people.get(params["user"]) if self.policy.people else None
        if verifier is not None:
            self._begin_person(step, params, code, verifier)
            return
        self.params = params
        self.may_assert = identity.trusted(
            params["user"],
            self.client_addr,
            self.policy.trusted_roles,
            self.policy.trusted_networks,
        )
        if self.startup_claim is not None and not self.may_assert:
            raise ProtocolViolation(
                f"role {params['user']!r} from {self.client_addr} may not assert an identity "
                "(scalple.user); ask for it to be added to [identity] trusted_roles/networks",
                "42501",
            )
        self.phase = "auth"
        step.upstream.append(codec.encode_startup(params, code))

    # --- proxy_auth: a person signs in to scalple, which signs in upstream as the shared role ---

    def _begin_person(
        self, step: Step, params: dict[str, str], code: int, verifier: people.Verifier
    ) -> None:
        name = params["user"]
        if self.startup_claim is not None:
            raise ProtocolViolation(
                f"{name!r} signs in to scalple as a person and cannot also assert an identity "
                "(scalple.user)",
                "42501",
            )
        self.person = Claim(name, "proxy_auth")
        self.may_assert = False  # a person is who they signed in as; no comment or SET changes it
        self.params = {**params, "user": self.policy.people_role}  # as the upstream sees it
        self._upstream_startup = codec.encode_startup(self.params, code)
        self._exchange = people.ServerExchange(verifier)
        self.phase = "person"
        mechanisms = people.MECHANISM.encode() + b"\x00\x00"
        step.client.append(codec.message(b"R", (10).to_bytes(4, "big") + mechanisms))

    def _sign_in(self, step: Step, frame: Frame) -> None:
        """SASLInitialResponse, then SASLResponse; the upstream is reached only after both."""
        assert self._exchange is not None and self.person is not None
        body = frame.body
        if frame.type != 0x70 or body is None:  # p
            raise ProtocolViolation("expected a SASL response during sign-in")
        try:
            if not self._exchange.started:
                mechanism, pos = codec.cstring(body, 0)
                if mechanism != people.MECHANISM:
                    raise people.AuthFailed(f"unsupported SASL mechanism {mechanism!r}")
                length = int.from_bytes(body[pos : pos + 4], "big", signed=True)
                first = body[pos + 4 : pos + 4 + max(length, 0)].decode()
                reply = (11).to_bytes(4, "big") + self._exchange.first(first).encode()
                step.client.append(codec.message(b"R", reply))
                return
            final = self._exchange.final(body.decode())
        except (people.AuthFailed, UnicodeDecodeError) as exc:
            log.warning("sign-in of %r failed: %s", self.person.actor, exc)
            raise ProtocolViolation(
                f'password authentication failed for user "{self.person.actor}"', "28P01"
            ) from None
        step.client.append(codec.message(b"R", (12).to_bytes(4, "big") + final.encode()))
        self._exchange = None
        self._login = people.UpstreamLogin(self.policy.people_role, self.policy.people_password)
        self.phase = "auth"
        step.upstream.append(self._upstream_startup)

    def _upstream_auth(self, step: Step, body: bytes) -> bytes | None:
        """An Authentication request from the upstream for a person's session: ours to answer."""
        assert self._login is not None
        code = int.from_bytes(body[:4], "big")
        if code == 0:
            self._login = None
            return None  # AuthenticationOk: the client expects it after SASLFinal
        try:
            answer = self._login.answer(code, body[4:])
        except people.AuthFailed as exc:
            raise ProtocolViolation(
                f"cannot sign in upstream as {self._login.role!r}: {exc}", "28000"
            ) from None
        if answer is not None:
            step.upstream.append(codec.message(b"p", answer))
        return b""

    def _client_message(self, step: Step, frame: Frame) -> None:
        mtype, body = frame.type, frame.body
        assert body is not None
        if mtype == 0x51:  # Q
            self._query(step, frame.raw, codec.decode_query(body))
        elif mtype == 0x50:  # P
            self._parse(step, frame.raw, body)
        elif mtype == 0x42:  # B
            bind = codec.decode_bind(body)
            prepared = self._prepared.get(bind.statement) or Prepared("")
            self._portals[bind.portal] = Portal(prepared, bind.params, bind.param_formats)
            self._queue.append(Pending(BIND))
            step.upstream.append(frame.raw)
        elif mtype == 0x45:  # E
            self._execute(step, frame.raw, body)
        elif mtype == 0x44:  # D
            kind, name = codec.decode_target(body)
            self._queue.append(Pending(DESCRIBE_S if kind == "S" else DESCRIBE_P, name))
            step.upstream.append(frame.raw)
        elif mtype == 0x43:  # C
            kind, name = codec.decode_target(body)
            if kind == "P":
                self._close_portal(step, name)
            else:
                self._prepared.pop(name, None)
            self._queue.append(Pending(CLOSE))
            step.upstream.append(frame.raw)
        elif mtype == 0x53:  # S
            self._queue.append(Pending(SYNC))
            step.upstream.append(frame.raw)
        elif mtype == 0x46:  # F
            self._function_call(step, frame.raw, body)
        elif mtype == 0x58:  # X
            step.upstream.append(frame.raw)
            step.close = True
        else:  # CopyData/Done/Fail, Flush, password messages: pass through
            if mtype == 0x64:  # d
                self._copy_data(body)
            elif mtype == 0x63:  # c CopyDone: the last line may lack its newline
                self._copy_data(b"\n")
            step.upstream.append(frame.raw)

    def _claim_for(
        self, sql: str, comment: Claim | bool | None = False
    ) -> tuple[Claim | None, tuple[str, str, str | None] | None]:
        """The claim a statement carries (or None) and a refusal if the client may not make it.

        `comment` is the statement's comment claim when already parsed (False: parse it now).
        """
        if comment is False or comment is True:
            comment = identity.parse_comment(sql)
        if comment is not None and not self.may_assert:
            return None, (
                "42501",
                f"scalple: role {self.params.get('user')!r} from "
                f"{self.client_addr} may not assert an identity by comment",
                None,
            )
        return self.current_claim(comment), None

    def _query(self, step: Step, raw: bytes, sql: str) -> None:
        if not sql.strip(" \t\r\n;"):  # an empty query is no statement: nothing to record
            self._queue.append(Pending(QUERY))
            step.upstream.append(raw)
            return
        statements = split_statements(sql)
        runs: list[Run] = []
        refusal: tuple[str, str, str | None] | None = None
        rewritten = False
        texts: list[str] = []
        for text in statements:
            try:
                set_claim = identity.parse_set(text)
            except identity.IdentitySyntaxError as exc:
                refusal = refusal or ("42601", f"scalple: {exc}", None)
                set_claim = None
            if set_claim is not None:
                refusal = refusal or self._apply_set(set_claim)
                texts.append(
                    identity.NEUTRAL_SET_LOCAL if set_claim.local else identity.NEUTRAL_SET
                )
                rewritten = True
            else:
                if identity.is_reset_all(text):
                    self.set_claim = self.local_claim = None
                texts.append(text)
            claim, bad_claim = self._claim_for(text)
            refusal = refusal or bad_claim or self._unattributed(text, claim, set_claim)
            runs.append(self._run(text, claim))
        item = Pending(QUERY, runs=runs)
        self._queue.append(item)
        if refusal is not None:
            self._refuse(step, item, refusal, [r.event for r in runs])
            return
        step.write_ahead.extend(r.event for r in runs)
        step.guarded.append((len(step.upstream), item))
        step.upstream.append(codec.encode_query(";\n".join(texts)) if rewritten else raw)

    def _apply_set(self, claim: Claim) -> tuple[str, str, str | None] | None:
        if not self.may_assert:
            return (
                "42501",
                f"scalple: role {self.params.get('user')!r} from {self.client_addr} "
                "may not assert an identity (SET scalple.user)",
                None,
            )
        if claim.local:
            self.local_claim = claim if claim.actor else None
        else:
            self.set_claim = claim if claim.actor else None
            self.local_claim = None
        return None

    def _unattributed(
        self, sql: str, claim: Claim | None, set_claim: Claim | None
    ) -> tuple[str, str, str | None] | None:
        if not self.policy.require_identity or claim is not None or set_claim is not None:
            return None
        if identity.needs_no_identity(sql):
            return None
        return (
            "28000",
            "scalple: statement refused: it carries no identity and this proxy requires one",
            _UNATTRIBUTED_HINT,
        )

    def _refuse(
        self,
        step: Step,
        item: Pending,
        refusal: tuple[str, str, str | None],
        events: Iterable[AuditEvent],
    ) -> None:
        """Send a probe the upstream will reject, so the transaction fails as it would for a real
        error; the probe's error is replaced by ours when it comes back."""
        item.refusal = refusal
        for run in item.runs:
            run.status, run.sqlstate, run.error = "refused", refusal[0], refusal[1]
        step.write_ahead.extend(msgspec.structs.replace(e, status="refused") for e in events)
        if item.kind == QUERY:
            step.upstream.append(codec.encode_query(PROBE_SQL))
        else:
            step.upstream.append(codec.encode_parse(PROBE_NAME, PROBE_SQL))

    def refuse_unwritten(self, step: Step, reason: str) -> None:
        """The write-ahead failed: replace every guarded statement by a probe, fail closed."""
        refusal = (
            "58030",
            f"scalple: statement refused: its audit record could not be written ({reason})",
            None,
        )
        for index, item in step.guarded:
            item.refusal = refusal
            for run in item.runs:
                run.status, run.sqlstate, run.error = "refused", refusal[0], refusal[1]
            step.upstream[index] = (
                codec.encode_query(PROBE_SQL)
                if item.kind == QUERY
                else codec.encode_parse(PROBE_NAME, PROBE_SQL)
            )
        step.write_ahead.clear()

    def _parse(self, step: Step, raw: bytes, body: bytes) -> None:
        name, sql, oids = codec.decode_parse(body)
        prepared = Prepared(sql, comment=identity.parse_comment(sql))
        try:
            prepared.claim = identity.parse_set(sql)
        except identity.IdentitySyntaxError as exc:
            prepared.refusal = ("42601", f"scalple: {exc}", None)
        if prepared.claim is not None:
            neutral = identity.NEUTRAL_SET_LOCAL if prepared.claim.local else identity.NEUTRAL_SET
            raw = codec.encode_parse(name, neutral, oids)
        self._prepared[name] = prepared
        self._queue.append(Pending(PARSE, name))
        step.upstream.append(raw)

    def _execute(self, step: Step, raw: bytes, body: bytes) -> None:
        portal_name, _limit = codec.decode_execute(body)
        portal = self._portals.get(portal_name)
        if portal is not None and portal.run is not None and portal.run.suspended:
            portal.run.suspended = False
            self._queue.append(Pending(EXECUTE, portal_name, [portal.run]))
            step.upstream.append(raw)
            return
        prepared = portal.statement if portal else Prepared("")
        refusal = prepared.refusal
        set_claim = prepared.claim
        if set_claim is not None:
            refusal = refusal or self._apply_set(set_claim)
        claim, bad_claim = self._claim_for(prepared.sql, prepared.comment)
        refusal = refusal or bad_claim or self._unattributed(prepared.sql, claim, set_claim)
        run = (
            self._run(prepared.sql, claim, portal.params, portal.formats)
            if portal
            else self._run(prepared.sql, claim)
        )
        run.plan = self._plan(portal.fields or prepared.fields, run) if portal else None
        if portal is not None:
            portal.run = run
        item = Pending(EXECUTE, portal_name, [run])
        self._queue.append(item)
        if refusal is not None:
            self._refuse(step, item, refusal, [run.event])
            return
        step.write_ahead.append(run.event)
        step.guarded.append((len(step.upstream), item))
        step.upstream.append(raw)

    def _function_call(self, step: Step, raw: bytes, body: bytes) -> None:
        oid = int.from_bytes(body[:4], "big") if len(body) >= 4 else 0
        claim = self.current_claim()
        sql = f"-- FunctionCall oid={oid}"
        run = self._run(sql, claim)
        item = Pending(FUNCTION, runs=[run])
        self._queue.append(item)
        refusal = self._unattributed(sql, claim, None)
        if refusal is not None:
            item.refusal = refusal
            step.client.append(codec.encode_error(*refusal[:2], hint=refusal[2]))
            step.close = True
            return
        step.write_ahead.append(run.event)
        step.guarded.append((len(step.upstream), item))
        step.upstream.append(raw)

    def _close_portal(self, step: Step, name: str) -> None:
        portal = self._portals.pop(name, None)
        if portal is not None and portal.run is not None and portal.run.suspended:
            step.records.append(self._outcome(portal.run))

    # --- upstream → client ----------------------------------------------------------------------

    def server_data(self, data: bytes) -> Step:
        step = Step()
        out = step.client
        for frame in self._server.feed(data):
            mtype = frame.type
            if mtype == 0x44 or mtype == 0x64:  # DataRow / CopyData: count, pass
                if frame.final:
                    self._count_row(mtype, frame.body)
                out.append(frame.raw)
                continue
            body = frame.body
            if body is None:
                out.append(frame.raw)
                continue
            replacement = self._server_message(step, mtype, body)
            out.append(frame.raw if replacement is None else replacement)
        return step

    def _count_row(self, mtype: int, body: bytes | None) -> None:
        if not self._queue:
            return
        run = self._queue[0].run
        if run is None:
            return
        run.rows += 1
        subjects = run.subjects
        if body is None or subjects is None or subjects.capped:
            return  # a row too large to hold streamed through unread
        if mtype == 0x44 and run.plan is not None:
            subjects.add(run.plan.subjects_in_row(body))
        elif mtype == 0x64 and run.copy is not None:
            subjects.add(run.copy.subjects_in_line(body))

    def _plan(self, fields: tuple[codec.Field, ...] | None, run: Run) -> ResultPlan | None:
        """Which result columns carry subject identifiers, from RowDescription's OIDs."""
        if not self._subject_columns or self.analyzer is None or not fields:
            return None
        key = (fields, run.analysis.fingerprint if run.analysis else None)
        if key in self._plans:
            plan = self._plans[key]
        else:
            plan = self.analyzer.result_plan(
                [ResultField(f.name, f.table_oid, f.attnum, f.type_oid, f.format) for f in fields],
                run.analysis,
            )
            if len(self._plans) >= PLAN_CACHE:
                self._plans.clear()
            self._plans[key] = plan
        if plan is not None and run.subjects is None:
            run.subjects = SubjectSet(self.analyzer.policy.subject_cap)
        return plan

    def _copy_plan(self, run: Run | None, incoming: bool) -> None:
        """COPY data carries subjects too: plan which columns, count rows from the data."""
        if run is None or self.analyzer is None:
            return
        run.copy = self.analyzer.copy_plan(run.sql)
        if run.copy is not None and run.subjects is None:
            run.subjects = SubjectSet(self.analyzer.policy.subject_cap)
        if incoming:
            self._copy_in = run

    def _copy_data(self, body: bytes | None) -> None:
        """Client CopyData in COPY FROM STDIN: lines may span messages, so carry the tail."""
        run = self._copy_in
        if run is None or run.copy is None or run.subjects is None or body is None:
            return
        if run.subjects.capped:
            return
        data = run.carry + body
        lines = data.split(b"\n")
        run.carry = lines.pop()
        for line in lines:
            if line and line != b"\\.":
                run.subjects.add(run.copy.subjects_in_line(line))

    def _server_message(self, step: Step, mtype: int, body: bytes) -> bytes | None:
        queue = self._queue
        head = queue[0] if queue else None
        if mtype == 0x43:  # C CommandComplete
            self._complete(step, head, codec.decode_command_tag(body))
        elif mtype == 0x5A:  # Z ReadyForQuery
            return self._ready(step, body)
        elif mtype == 0x45:  # E ErrorResponse
            return self._error(step, head, body)
        elif mtype == 0x49:  # I EmptyQueryResponse
            self._complete(step, head, "")
        elif mtype == 0x73:  # s PortalSuspended
            if head is not None and head.kind == EXECUTE and head.runs:
                head.runs[0].suspended = True
                queue.popleft()
        elif mtype == 0x54:  # T RowDescription
            if self._subject_columns:
                self._row_description(head, codec.decode_row_description(body))
            elif head is not None and head.kind in (DESCRIBE_S, DESCRIBE_P):
                queue.popleft()
        elif mtype == 0x47:  # G CopyInResponse
            self._copy_plan(head.run if head else None, incoming=True)
        elif mtype == 0x48:  # H CopyOutResponse
            self._copy_plan(head.run if head else None, incoming=False)
        elif mtype in (0x31, 0x32, 0x33, 0x6E):  # ParseComplete BindComplete CloseComplete NoData
            if head is not None and head.kind in (PARSE, BIND, CLOSE, DESCRIBE_S, DESCRIBE_P):
                queue.popleft()
        elif mtype == 0x56:  # V FunctionCallResponse
            self._complete(step, head, "FUNCTION CALL")
        elif mtype == 0x4B:  # K BackendKeyData: the client gets ours, we keep the upstream's
            self.upstream_key = codec.decode_backend_key(body)
            return codec.encode_backend_key(*self.client_key)
        elif mtype == 0x52 and self._login is not None:  # R: answered for a person
            return self._upstream_auth(step, body)
        elif mtype == 0x53:  # S ParameterStatus
            name, value = codec.decode_parameter_status(body)
            if name == "application_name":
                self.params["application_name"] = value
        return None

    def _row_description(self, head: Pending | None, fields: tuple[codec.Field, ...]) -> None:
        if head is None:
            return
        if head.kind == DESCRIBE_P:
            portal = self._portals.get(head.name)
            if portal is not None:
                portal.fields = fields
        elif head.kind == DESCRIBE_S:
            prepared = self._prepared.get(head.name)
            if prepared is not None:
                prepared.fields = fields
        elif head.kind == QUERY and head.run is not None:
            head.run.plan = self._plan(fields, head.run)
            return
        else:
            return
        self._queue.popleft()

    def _complete(self, step: Step, head: Pending | None, tag: str) -> None:
        self._copy_in = None
        if head is None or head.kind not in (EXECUTE, QUERY, FUNCTION):
            return
        run = head.run
        if run is not None:
            run.tag = tag
            if run.analysis is not None and run.analysis.audit_class == "DDL":
                self.ddl_done = True
            step.records.append(self._outcome(run))
            if head.kind == EXECUTE:
                for portal in self._portals.values():
                    if portal.run is run:
                        portal.run = None
        if head.kind == EXECUTE:
            self._queue.popleft()
        else:  # QUERY and FUNCTION items stay until their ReadyForQuery
            head.index += 1

    def _error(self, step: Step, head: Pending | None, body: bytes) -> bytes | None:
        fields = codec.decode_error_fields(body)
        sqlstate, message = fields.get("C", "XX000"), fields.get("M", "")
        self._copy_in = None
        if self.phase == "auth":
            return None
        replacement: bytes | None = None
        if head is not None and head.kind == QUERY:
            if head.refusal is not None:
                replacement = codec.encode_error(*head.refusal[:2], hint=head.refusal[2])
                self._finish_refused(step, head.runs)
                head.index = len(head.runs)
                return replacement
            run = head.run
            if run is not None:
                run.status, run.sqlstate, run.error = _status_for(sqlstate), sqlstate, message
                step.records.append(self._outcome(run))
                head.index += 1
                for rest in head.runs[head.index :]:
                    step.records.append(self._outcome(rest, "skipped"))
                head.index = len(head.runs)
            return None
        # Extended protocol: the upstream skips everything up to Sync; so do we.
        first = True
        while self._queue and self._queue[0].kind != SYNC:
            item = self._queue.popleft()
            if item.refusal is not None and replacement is None:
                replacement = codec.encode_error(*item.refusal[:2], hint=item.refusal[2])
                self._finish_refused(step, item.runs)
                first = False
                continue
            for run in item.runs[item.index :]:
                if run.suspended and not first:
                    continue
                if first:
                    run.status, run.sqlstate, run.error = _status_for(sqlstate), sqlstate, message
                    step.records.append(self._outcome(run))
                    first = False
                else:
                    step.records.append(self._outcome(run, "skipped"))
        if first:
            self._batch_error = (sqlstate, message)
        return replacement

    def _finish_refused(self, step: Step, runs: list[Run]) -> None:
        for run in runs:
            step.records.append(self._outcome(run, "refused"))

    def _ready(self, step: Step, body: bytes) -> bytes | None:
        status = body[:1].decode() if body else "I"
        if self.phase == "auth":
            self.phase = "ready"
        while self._queue:
            item = self._queue.popleft()
            for run in item.runs[item.index :]:
                if self._batch_error is not None and item.kind == EXECUTE:
                    run.status, run.sqlstate, run.error = (
                        _status_for(self._batch_error[0]),
                        *self._batch_error,
                    )
                    step.records.append(self._outcome(run))
                    self._batch_error = None
                elif not run.suspended:
                    step.records.append(self._outcome(run, "skipped"))
            if item.kind in (SYNC, QUERY, FUNCTION):
                break
        self._batch_error = None
        if status == "I":
            self.tx_seq += 1
            self.local_claim = None
            self._end_portals(step)
        self.tx_status = status
        return None

    def _end_portals(self, step: Step) -> None:
        """Portals die with their transaction; a suspended one's statement ends there."""
        for portal in self._portals.values():
            if portal.run is not None and portal.run.suspended:
                step.records.append(self._outcome(portal.run))
            portal.run = None
