"""The server session as the proxy mirrors it: who the identity is by PostgreSQL's transaction
rules, the transaction block and its savepoints, and the prepared statements and portals.

One `Mirror` holds what the server confirmed; a clone of it, advanced statement by statement as
if each succeeded, predicts what the statements of the message in flight will meet (a failure
skips the rest of that message, so the prediction is right for every statement that runs).
Pure values and transitions: no I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final

from scalple.analysis.lexer import Lexed
from scalple.proxy.codec import Field
from scalple.proxy.commands import PLAIN, Command, Kind
from scalple.proxy.identity import Claim

DEFAULT: Final = Claim(None, "set")  # SET ... TO DEFAULT / RESET: back to the session default


class Block(enum.Enum):
    NONE = "none"  # between transactions
    IMPLICIT = "implicit"  # one message's (or one Sync batch's) own transaction
    EXPLICIT = "explicit"  # BEGIN ... COMMIT


@dataclass(slots=True)
class Prepared:
    """A prepared statement: its text, how the server names it, and when it was made."""

    sql: str
    command: Command
    server_name: str = ""
    by_sql: bool = False  # PREPARE, not the Parse message
    lease: int = 0
    comment: Claim | None = None
    refusal: tuple[str, str, str | None] | None = None
    guc_params: tuple[int, ...] = ()
    fields: tuple[Field, ...] | None = None  # its RowDescription, when described
    raw_parse: bytes = b""  # the Parse message as the server got it (to parse it again)
    large: bool = False  # past the analysis budget: recorded without being parsed
    lexed: Lexed | None = None  # its text as lexed at Parse (analysis need not lex it again)


@dataclass(slots=True)
class Portal:
    """A portal: a bound statement or a cursor, in the transaction that opened it."""

    statement: Prepared
    params: tuple[bytes | None, ...] = ()
    formats: tuple[int, ...] = ()
    hold: bool = False
    tx: int = 0  # the transaction that opened it
    opened: int = 0  # a serial, to tell what a rolled-back savepoint opened
    lease: int = 0
    committed: bool = False  # WITH HOLD, and its transaction committed
    by_sql: bool = False  # DECLARE, not Bind
    fields: tuple[Field, ...] | None = None
    run: object | None = None  # the statement run a later Execute continues
    done: bool = False  # ran to completion: executing it again yields nothing


@dataclass(slots=True)
class Savepoint:
    name: str
    session: Claim | None
    local: Claim | None
    opened: int


@dataclass(slots=True)
class Mirror:
    """One view of the server session (confirmed, or predicted for the message in flight)."""

    session: Claim | None = None  # SET scalple.user, session level (None: never set)
    local: Claim | None = None  # SET LOCAL, until the transaction ends (None: not set)
    block: Block = Block.NONE
    failed: bool = False  # an error in the current block (an explicit one is then aborted)
    start_session: Claim | None = None  # `session` when the block began
    savepoints: list[Savepoint] = field(default_factory=list)
    statements: dict[str, Prepared] = field(default_factory=dict)
    portals: dict[str, Portal] = field(default_factory=dict)
    tx: int = 1  # transactions begun, counting this one
    serial: int = 0
    lease: int = 0  # server-connection leases under transaction pooling

    def clone(self) -> Mirror:
        return Mirror(
            self.session, self.local, self.block, self.failed, self.start_session,
            list(self.savepoints), dict(self.statements), dict(self.portals), self.tx,
            self.serial, self.lease,
        )  # fmt: skip

    # --- identity ------------------------------------------------------------------------

    def claim(self) -> Claim | None:
        """The SET claim in force: SET LOCAL over SET; None when neither (or DEFAULT) holds."""
        claim = self.local if self.local is not None else self.session
        return None if claim is None or claim is DEFAULT else claim

    # --- statements, in the order the server runs them --------------------------------------

    def begin_statement(self) -> None:
        """A statement starts: outside a block, it opens its implicit one."""
        if self.block is Block.NONE:
            self.block = Block.IMPLICIT
            self.failed = False
            self.start_session = self.session

    def apply(self, command: Command, tag: str = "") -> None:
        """`command` completed (`tag` is its command tag, when the server gave one)."""
        kind = command.kind
        if kind is Kind.OTHER:
            return
        if kind is Kind.IDENTITY:
            claim = Claim(command.value, "set", command.local) if command.value else DEFAULT
            if command.local:
                self.local = claim
            else:
                self.session, self.local = claim, None
        elif kind is Kind.RESET_ALL:
            self.session, self.local = DEFAULT, None
        elif kind is Kind.DISCARD_ALL:
            self.session, self.local = DEFAULT, None
            self.statements = {k: v for k, v in self.statements.items() if k == ""}
            self.portals.clear()
        elif kind is Kind.BEGIN:
            self.block = Block.EXPLICIT
        elif kind is Kind.COMMIT or kind is Kind.PREPARE_TX:
            # An aborted transaction's COMMIT rolls back, and says so in its tag.
            self._end(committed=tag != "ROLLBACK" and not self.failed, chain=command.chain)
        elif kind is Kind.ROLLBACK:
            self._end(committed=False, chain=command.chain)
        elif kind is Kind.SAVEPOINT and command.name is not None:
            self.serial += 1
            self.savepoints.append(Savepoint(command.name, self.session, self.local, self.serial))
        elif kind is Kind.RELEASE:
            i = self._savepoint(command.name)
            if i is not None:
                del self.savepoints[i:]
        elif kind is Kind.ROLLBACK_TO:
            i = self._savepoint(command.name)
            if i is not None:
                sp = self.savepoints[i]
                self.session, self.local = sp.session, sp.local
                del self.savepoints[i + 1 :]
                self.failed = False
                self._close_portals(lambda p: p.tx == self.tx and p.opened > sp.opened)
        else:
            self._names(command)

    def _names(self, command: Command) -> None:
        kind, name = command.kind, command.name
        if kind is Kind.PREPARE and name is not None and command.inner is not None:
            self.statements[name] = Prepared(
                command.inner, PLAIN, name, by_sql=True, lease=self.lease
            )
        elif kind is Kind.DEALLOCATE:
            if name is None:
                self.statements = {k: v for k, v in self.statements.items() if k == ""}
            else:
                self.statements.pop(name, None)
        elif kind is Kind.DECLARE and name is not None and command.inner is not None:
            self.serial += 1
            self.portals[name] = Portal(
                Prepared(command.inner, PLAIN), hold=command.hold, tx=self.tx,
                opened=self.serial, lease=self.lease, by_sql=True,
            )  # fmt: skip
        elif kind is Kind.CLOSE:
            if name is None:
                self.portals.clear()
            else:
                self.portals.pop(name, None)

    def _savepoint(self, name: str | None) -> int | None:
        for i in range(len(self.savepoints) - 1, -1, -1):
            if self.savepoints[i].name == name:
                return i
        return None

    def _end(self, *, committed: bool, chain: bool = False) -> None:
        """The transaction ends: SET LOCAL lapses; a rollback undoes SET; portals close."""
        if not committed:
            self.session = self.start_session
        self.local = None
        self.savepoints.clear()
        tx = self.tx
        if committed:
            self._close_portals(lambda p: not p.hold and not p.committed)
            for p in self.portals.values():
                if p.tx == tx:
                    p.committed = True
        else:
            self._close_portals(lambda p: not p.committed)
        self.tx += 1
        self.failed = False
        if chain:
            self.block = Block.EXPLICIT
            self.start_session = self.session
        else:
            self.block = Block.NONE

    def _close_portals(self, closes: object) -> None:
        if not self.portals:
            return
        doomed = [n for n, p in self.portals.items() if closes(p)]  # type: ignore[operator]
        for name in doomed:
            del self.portals[name]

    def error(self) -> None:
        """A statement failed: the block is aborted (explicit) or will roll back (implicit)."""
        self.begin_statement()
        self.failed = True

    def sync(self, status: str, pooled: bool) -> str | None:
        """ReadyForQuery: an implicit block ends (committed unless it failed). Returns what
        disagrees with the server's transaction status, or None when the mirror agrees."""
        if self.block is Block.IMPLICIT:
            self._end(committed=not self.failed)
        expected = "I" if self.block is Block.NONE else ("E" if self.failed else "T")
        if status == "I" and pooled:
            self.lease += 1
        if expected != status:
            return f"the server reports transaction status {status!r}, the mirror {expected!r}"
        return None
