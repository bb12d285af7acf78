"""What a statement does to the session the proxy mirrors: identity, transaction control, and
the prepared statements and cursors it creates, uses or drops.

Most statements do none of that and are told apart by their first word and a glance at their
literal-free text. The few that may are read by PostgreSQL's own grammar (pglast), so a name,
a savepoint or a GUC spelled any way the server accepts is seen as the server sees it.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any, Final

from pglast import ast, parse_sql
from pglast.enums import DiscardMode, TransactionStmtKind, VariableSetKind
from pglast.visitors import Visitor

from scalple.analysis.lexer import Lexed, literal_value
from scalple.proxy.identity import GUC

# Settings whose value changes how the proxy must read what the client sends next.
TRACKED_SETTINGS: Final = frozenset({"standard_conforming_strings", "client_encoding"})
_CURSOR_HOLD: Final = 0x0020  # CURSOR_OPT_HOLD in parsenodes.h

# Scalple's own syntax: PostgreSQL rejects `scalple.user` unquoted (USER is reserved), so this
# never reaches the server as it is. `?` is a literal in the lexed key.
_IDENTITY_SET: Final = re.compile(
    r"""\s*SET\s+(?P<scope>SESSION\s+|LOCAL\s+)?scalple\s*\.\s*user\s*(?:=|\bTO\b)\s*
        (?P<value>\?|DEFAULT\b|[A-Za-z_][\w.@+-]*)\s*;?\s*\Z
      | \s*RESET\s+scalple\s*\.\s*user\s*;?\s*\Z""",
    re.IGNORECASE | re.VERBOSE,
)
_FIRST_WORD: Final = re.compile(r"\s*([A-Za-z_]+)")
# Words that, anywhere in a statement, may touch what the proxy mirrors.
_SUSPECT: Final = re.compile(r"set_config|current\s+of|\bexecute\b|u&", re.IGNORECASE)
_SIMPLE_TX: Final = re.compile(
    r"\s*(?:(?P<begin>BEGIN|START\s+TRANSACTION)(?:\s+(?:WORK|TRANSACTION))?"
    r"|(?P<commit>COMMIT|END)(?:\s+(?:WORK|TRANSACTION))?"
    r"|(?P<rollback>ROLLBACK|ABORT)(?:\s+(?:WORK|TRANSACTION))?)\s*;?\s*\Z",
    re.IGNORECASE,
)
# First words of statements that are read by the grammar.
_READ_BY_GRAMMAR: Final = frozenset(
    {
        "SET", "RESET", "BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT", "SAVEPOINT",
        "RELEASE", "PREPARE", "EXECUTE", "DEALLOCATE", "DECLARE", "FETCH", "MOVE", "CLOSE",
        "DISCARD", "ALTER", "CREATE", "DO", "EXPLAIN", "COMMENT",
    }
)  # fmt: skip
# What, in a statement too large to parse, may change the mirrored session or its splitting.
LARGE_WATCH: Final = re.compile(
    r"set_config|current\s+of|\bexecute\b|u&|\bbegin\s+atomic\b", re.IGNORECASE
)
# Statements that end or change the transaction and run without identity.
TX_CONTROL: Final = frozenset(
    {"begin", "commit", "rollback", "savepoint", "release", "rollback_to", "prepare_tx"}
)


class Kind(enum.Enum):
    OTHER = "other"
    IDENTITY = "identity"  # SET [LOCAL] scalple.user / RESET scalple.user
    RESET_ALL = "reset_all"
    DISCARD_ALL = "discard_all"
    BEGIN = "begin"
    COMMIT = "commit"
    ROLLBACK = "rollback"
    SAVEPOINT = "savepoint"
    RELEASE = "release"
    ROLLBACK_TO = "rollback_to"
    PREPARE_TX = "prepare_tx"
    PREPARE = "prepare"
    EXECUTE = "execute"
    DEALLOCATE = "deallocate"
    DECLARE = "declare"
    FETCH = "fetch"
    CLOSE = "close"


@dataclass(frozen=True, slots=True)
class Command:
    """What one statement does to the mirrored session.

    `name` is the prepared statement, cursor or savepoint it names (None for ALL); `value` the
    identity a SET claims (None: back to the default); `inner` the statement a PREPARE or
    DECLARE holds; `args` EXECUTE's arguments as text (None where not a plain constant);
    `uses` the (kind, name) pairs it reads elsewhere in its text; `guc_params` the $n of a
    set_config whose setting name arrives at Bind; `tracked` says it may change a setting the
    proxy reads text by; `refusal` is (SQLSTATE, message) when the proxy cannot let it run.
    """

    kind: Kind = Kind.OTHER
    name: str | None = None
    value: str | None = None
    local: bool = False
    chain: bool = False
    hold: bool = False
    inner: str | None = None
    args: tuple[str | None, ...] = ()
    uses: tuple[tuple[str, str], ...] = ()
    guc_params: tuple[int, ...] = ()
    tracked: bool = False
    refusal: tuple[str, str] | None = None

    @property
    def tx_control(self) -> bool:
        return self.kind.value in TX_CONTROL  # by value: an Enum member hashes in Python


PLAIN: Final = Command()
_BEGIN, _COMMIT, _ROLLBACK = Command(Kind.BEGIN), Command(Kind.COMMIT), Command(Kind.ROLLBACK)


def classify(sql: str, lexed: Lexed, standard_strings: bool = True) -> Command:
    """The command `sql` (one statement, lexed as `lexed`) is, for the session."""
    key = lexed.key
    first = _FIRST_WORD.match(key)
    word = first.group(1).upper() if first else ""
    if word not in _READ_BY_GRAMMAR and not _suspect(key):
        return PLAIN
    if word in ("SET", "RESET"):
        own = _IDENTITY_SET.match(key)
        if own is not None:
            return _own_identity(own, lexed, standard_strings)
    if word in ("BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT"):
        simple = _SIMPLE_TX.match(key)
        if simple is not None:
            return _BEGIN if simple["begin"] else _COMMIT if simple["commit"] else _ROLLBACK
    return _by_grammar(sql, lexed, standard_strings)


def large(lexed: Lexed, limit: int) -> Command:
    """A statement too large to parse (read lightly): plain, unless it may change the session,
    which cannot be known for certain within the budget: then refused."""
    first = _FIRST_WORD.match(lexed.key)
    word = first.group(1).upper() if first else ""
    if word in _READ_BY_GRAMMAR or lexed.watched:
        return Command(refusal=(
            "54000",
            f"scalple: a statement over {limit} bytes that may change the session (identity, "
            "transaction, prepared statements or cursors) cannot be read within the analysis "
            "budget",
        ))  # fmt: skip
    return PLAIN


def _suspect(key: str) -> bool:
    """Does the literal-free text name something that may touch the mirrored session? Plain
    substring tests first (an IGNORECASE regex over every statement cost ten times more)."""
    low = key.lower()
    if "set_config" in low or "u&" in low or "current" in low or "execute" in low:
        return _SUSPECT.search(key) is not None
    return False


def _own_identity(m: re.Match[str], lexed: Lexed, standard_strings: bool) -> Command:
    local = (m["scope"] or "").strip().upper() == "LOCAL"
    value = m["value"]
    if value is None or value.upper() == "DEFAULT":
        return Command(Kind.IDENTITY, local=local)
    if value == "?":
        start, end = lexed.literals[0], lexed.literals[1]
        value = literal_value(lexed.sql[start:end], standard_strings)
    return Command(Kind.IDENTITY, value=value or None, local=local)


def _with_e_strings(sql: str, lexed: Lexed) -> str:
    """`sql` as a server with standard_conforming_strings on reads it: plain strings get an E,
    so their backslash escapes mean what they mean with the setting off."""
    out: list[str] = []
    pos = 0
    for start in lexed.literals[::2]:
        if sql[start] == "'":
            out += (sql[pos:start], "E")
            pos = start
    return "".join(out) + sql[pos:]


def _by_grammar(sql: str, lexed: Lexed, standard_strings: bool) -> Command:
    text = sql if standard_strings else _with_e_strings(sql, lexed)
    try:
        raw = parse_sql(text)
    except Exception:  # pglast.parser.ParseError: the server will reject it too
        if "scalple" in sql.lower():
            return Command(refusal=("42601", "scalple: cannot read a statement that names scalple"))
        return PLAIN
    if len(raw) != 1:
        return Command(refusal=("42601", "scalple: expected one statement here"))
    stmt = raw[0].stmt
    found = _Finder()
    if stmt is not None:
        found(stmt)
    if found.refusal is not None:
        return Command(refusal=found.refusal)
    command = _top(stmt, text, lexed, standard_strings)
    if command.kind is Kind.PREPARE and found.guc_params:
        return Command(refusal=("42601", "scalple: set_config($n) in PREPARE cannot be audited"))
    if found.nested_identity and command.kind is not Kind.IDENTITY:
        return Command(refusal=(
            "42601",
            f"scalple: {GUC} may only be set by SET [LOCAL] {GUC} = 'name' alone in a statement",
        ))  # fmt: skip
    return _merge(command, found)


def _merge(command: Command, found: _Finder) -> Command:
    if not (found.uses or found.guc_params or found.tracked):
        return command
    return Command(
        command.kind, command.name, command.value, command.local, command.chain, command.hold,
        command.inner, command.args, (*command.uses, *found.uses), tuple(found.guc_params),
        command.tracked or found.tracked, command.refusal,
    )  # fmt: skip


def _top(stmt: Any, text: str, lexed: Lexed, standard_strings: bool) -> Command:
    """The statement's own effect, from its top node."""
    if isinstance(stmt, ast.VariableSetStmt):
        return _variable_set(stmt)
    if isinstance(stmt, ast.TransactionStmt):
        return _transaction(stmt)
    if isinstance(stmt, ast.PrepareStmt):
        return Command(Kind.PREPARE, name=stmt.name, inner=_inner(text, lexed, "AS"))
    if isinstance(stmt, ast.ExecuteStmt):
        return Command(Kind.EXECUTE, name=stmt.name, args=_constants(stmt.params))
    if isinstance(stmt, ast.DeallocateStmt):
        return Command(Kind.DEALLOCATE, name=None if stmt.isall else stmt.name)
    if isinstance(stmt, ast.DeclareCursorStmt):
        hold = bool((stmt.options or 0) & _CURSOR_HOLD)
        inner = _inner(text, lexed, "FOR")
        return Command(Kind.DECLARE, name=stmt.portalname, hold=hold, inner=inner)
    if isinstance(stmt, ast.FetchStmt):
        return Command(Kind.FETCH, name=stmt.portalname)
    if isinstance(stmt, ast.ClosePortalStmt):
        return Command(Kind.CLOSE, name=stmt.portalname)
    if isinstance(stmt, ast.DiscardStmt) and stmt.target == DiscardMode.DISCARD_ALL:
        return Command(Kind.DISCARD_ALL)
    if isinstance(stmt, ast.DoStmt | ast.CreateFunctionStmt) and GUC in text.lower():
        return Command(refusal=("42601", f"scalple: server-side code may not set {GUC}"))
    return PLAIN


def _variable_set(stmt: Any) -> Command:
    name = (stmt.name or "").lower()
    kind = stmt.kind
    if kind == VariableSetKind.VAR_RESET_ALL:
        return Command(Kind.RESET_ALL)
    if name != GUC:
        return Command(tracked=name in TRACKED_SETTINGS)
    if kind in (VariableSetKind.VAR_SET_DEFAULT, VariableSetKind.VAR_RESET):
        return Command(Kind.IDENTITY, local=bool(stmt.is_local))
    args: tuple[Any, ...] = tuple(stmt.args or ())
    if kind != VariableSetKind.VAR_SET_VALUE or len(args) != 1:
        return Command(refusal=("42601", f"scalple: use SET [LOCAL] {GUC} = 'name'"))
    value = _constant(args[0])
    if value is None:
        return Command(refusal=("42601", f"scalple: use SET [LOCAL] {GUC} = 'name'"))
    return Command(Kind.IDENTITY, value=value or None, local=bool(stmt.is_local))


def _transaction(stmt: Any) -> Command:
    k = stmt.kind
    chain = bool(stmt.chain)
    if k in (TransactionStmtKind.TRANS_STMT_BEGIN, TransactionStmtKind.TRANS_STMT_START):
        return _BEGIN
    if k == TransactionStmtKind.TRANS_STMT_COMMIT:
        return Command(Kind.COMMIT, chain=chain)
    if k == TransactionStmtKind.TRANS_STMT_ROLLBACK:
        return Command(Kind.ROLLBACK, chain=chain)
    if k == TransactionStmtKind.TRANS_STMT_SAVEPOINT:
        return Command(Kind.SAVEPOINT, name=stmt.savepoint_name)
    if k == TransactionStmtKind.TRANS_STMT_RELEASE:
        return Command(Kind.RELEASE, name=stmt.savepoint_name)
    if k == TransactionStmtKind.TRANS_STMT_ROLLBACK_TO:
        return Command(Kind.ROLLBACK_TO, name=stmt.savepoint_name)
    if k == TransactionStmtKind.TRANS_STMT_PREPARE:
        return Command(Kind.PREPARE_TX)
    return PLAIN  # COMMIT/ROLLBACK PREPARED: another transaction, not this session's


def _constant(node: Any) -> str | None:
    """A constant's text (through casts), or None when the node is not one."""
    while isinstance(node, ast.TypeCast):
        node = node.arg
    if not isinstance(node, ast.A_Const) or node.isnull:
        return None
    val = node.val
    for attr in ("sval", "ival", "fval", "boolval", "bsval"):
        got = getattr(val, attr, None)
        if got is not None:
            if isinstance(got, bool):
                return "true" if got else "false"
            return str(got)
    return None


def _constants(params: Any) -> tuple[str | None, ...]:
    return tuple(_constant(p) for p in params or ())


_PREPARE_AS: Final = re.compile(
    r"""\s*PREPARE\s+(?:"[^"]*(?:""[^"]*)*"|[^\s(]+)\s*(?:\((?:[^()]|\([^()]*\))*\)\s*)?AS\s""",
    re.IGNORECASE,
)
_DECLARE_FOR: Final = re.compile(
    r"\s*DECLARE\s.*?\bCURSOR\b(?:\s+WITH(?:OUT)?\s+HOLD)?\s+FOR\s", re.IGNORECASE | re.DOTALL
)
_INNER_RE: Final = {"AS": _PREPARE_AS, "FOR": _DECLARE_FOR}


def _inner(text: str, lexed: Lexed, word: str) -> str | None:
    """The statement a PREPARE ... AS or DECLARE ... FOR holds, cut from the text.

    Found in the text with its literals and comments blanked (offsets kept), so neither can
    hide or fake the keyword."""
    blank = _blanked(lexed)
    m = _INNER_RE[word].match(blank)
    if m is None:
        return None
    return lexed.sql[m.end() :].strip().rstrip(";").strip() or None


def _blanked(lexed: Lexed) -> str:
    sql = lexed.sql
    spans = sorted(
        [*zip(lexed.literals[::2], lexed.literals[1::2], strict=True),
         *zip(lexed.comments[::2], lexed.comments[1::2], strict=True)]
    )  # fmt: skip
    out: list[str] = []
    pos = 0
    for start, end in spans:
        out += (sql[pos:start], " " * (end - start))
        pos = end
    return "".join(out) + sql[pos:]


class _Finder(Visitor):
    """Everything in a statement's tree that reaches the mirrored session."""

    def __init__(self) -> None:
        self.refusal: tuple[str, str] | None = None
        self.nested_identity = False
        self.uses: list[tuple[str, str]] = []
        self.guc_params: list[int] = []
        self.tracked = False

    def visit_VariableSetStmt(self, ancestors: Any, node: Any) -> None:
        if (node.name or "").lower() == GUC and ancestors.parent is not None:
            self.nested_identity = True

    def visit_FuncCall(self, ancestors: Any, node: Any) -> None:
        names = [getattr(n, "sval", "") for n in node.funcname or ()]
        if not names or names[-1] != "set_config" or names[:-1] not in ([], ["pg_catalog"]):
            return
        args = node.args or ()
        first = args[0] if args else None
        while isinstance(first, ast.TypeCast):
            first = first.arg
        if isinstance(first, ast.ParamRef):
            self.guc_params.append(int(first.number or 0))
            return
        setting = _constant(first) if first is not None else None
        if setting is None:
            self.refusal = (
                "42601",
                "scalple: set_config with a setting name that is not a constant cannot be "
                "audited; name the setting as a literal",
            )
        elif setting.lower() == GUC:
            self.refusal = (
                "42601",
                f"scalple: set_config('{GUC}', …) would stay on the pooled server connection "
                f"and name nobody here; use SET [LOCAL] {GUC} = 'name', which scalple answers",
            )
        elif setting.lower() in TRACKED_SETTINGS:
            self.tracked = True

    def visit_ExecuteStmt(self, ancestors: Any, node: Any) -> None:
        if ancestors.parent is not None:
            self.uses.append(("statement", node.name))

    def visit_CurrentOfExpr(self, ancestors: Any, node: Any) -> None:
        if node.cursor_name:
            self.uses.append(("portal", node.cursor_name))
