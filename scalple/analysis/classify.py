"""Pass 1: pgAudit class (READ, WRITE, FUNCTION, ROLE, DDL, MISC) and the command tag.

Works from the statement's leading keywords, so an unparseable statement is classified too;
the parse tree is consulted only for `WITH ...` (whose verb comes after the CTEs).
"""

from __future__ import annotations

from typing import Final

from sqlglot import exp

from scalple.events import AuditClass

_PRIORITY: Final[tuple[AuditClass, ...]] = ("MISC", "READ", "FUNCTION", "WRITE", "DDL", "ROLE")
_SIMPLE: Final[dict[str, tuple[AuditClass, str]]] = {
    "SELECT": ("READ", "SELECT"),
    "VALUES": ("READ", "SELECT"),
    "TABLE": ("READ", "SELECT"),
    "INSERT": ("WRITE", "INSERT"),
    "UPDATE": ("WRITE", "UPDATE"),
    "DELETE": ("WRITE", "DELETE"),
    "MERGE": ("WRITE", "MERGE"),
    "TRUNCATE": ("WRITE", "TRUNCATE TABLE"),
    "CALL": ("FUNCTION", "CALL"),
    "DO": ("FUNCTION", "DO"),
    "GRANT": ("ROLE", "GRANT"),
    "REVOKE": ("ROLE", "REVOKE"),
    "REASSIGN": ("ROLE", "REASSIGN OWNED"),
    "COMMENT": ("DDL", "COMMENT"),
    "SECURITY": ("DDL", "SECURITY LABEL"),
    "REFRESH": ("DDL", "REFRESH MATERIALIZED VIEW"),
    "IMPORT": ("DDL", "IMPORT FOREIGN SCHEMA"),
    "BEGIN": ("MISC", "BEGIN"),
    "START": ("MISC", "START TRANSACTION"),
    "COMMIT": ("MISC", "COMMIT"),
    "END": ("MISC", "COMMIT"),
    "ROLLBACK": ("MISC", "ROLLBACK"),
    "ABORT": ("MISC", "ROLLBACK"),
    "SAVEPOINT": ("MISC", "SAVEPOINT"),
    "RELEASE": ("MISC", "RELEASE"),
    "LOCK": ("MISC", "LOCK TABLE"),
    "DECLARE": ("MISC", "DECLARE CURSOR"),
}
_ROLE_OBJECTS: Final = {"ROLE", "USER", "GROUP"}
_SKIP: Final = {
    "OR", "REPLACE", "UNIQUE", "TEMP", "TEMPORARY", "UNLOGGED", "GLOBAL", "LOCAL", "RECURSIVE",
    "TRUSTED", "PROCEDURAL", "IF", "NOT", "EXISTS", "CONSTRAINT",
}  # fmt: skip
_TWO_WORD: Final = {"MATERIALIZED", "FOREIGN", "EVENT", "DEFAULT", "TEXT", "ACCESS", "OPERATOR"}
_TREE_VERBS: Final[dict[type[exp.Expression], str]] = {
    exp.Insert: "INSERT",
    exp.Update: "UPDATE",
    exp.Delete: "DELETE",
    exp.Merge: "MERGE",
}


def _object(words: tuple[str, ...]) -> str:
    rest = [w for w in words[1:] if w not in _SKIP]
    if not rest:
        return ""
    if rest[0] in _TWO_WORD and len(rest) > 1:
        return f"{rest[0]} {rest[1]}"
    return "ROLE" if rest[0] in _ROLE_OBJECTS else rest[0]


def _ddl(words: tuple[str, ...]) -> tuple[AuditClass, str]:
    verb, obj = words[0], _object(words)
    if words[:3] == ("ALTER", "DEFAULT", "PRIVILEGES"):
        return "ROLE", "ALTER DEFAULT PRIVILEGES"
    if obj == "ROLE":
        return "ROLE", f"{verb} ROLE"
    return "DDL", f"{verb} {obj}".strip()


def _copy(words: tuple[str, ...], tree: exp.Expression | None) -> tuple[AuditClass, str]:
    if isinstance(tree, exp.Copy):
        return ("WRITE" if tree.args.get("kind") else "READ"), "COPY"
    return ("WRITE" if "FROM" in words else "READ"), "COPY"


def classify_one(words: tuple[str, ...], tree: exp.Expression | None) -> tuple[AuditClass, str]:
    """(class, command tag) of one statement, e.g. ("READ", "SELECT")."""
    if not words:
        return "MISC", ""
    first = words[0]
    if first == "WITH":
        for node_type, verb in _TREE_VERBS.items():
            if isinstance(tree, node_type):
                return _SIMPLE[verb]
        if tree is not None and tree.find(*_TREE_VERBS):
            return "WRITE", "SELECT"  # a data-modifying CTE: the tag says SELECT, rows changed
        return _SIMPLE["SELECT"]
    if first == "SELECT" and isinstance(tree, exp.Select) and tree.args.get("into"):
        return "DDL", "SELECT"
    if words[:2] == ("PREPARE", "TRANSACTION"):
        return "MISC", "PREPARE TRANSACTION"
    if first in ("COMMIT", "ROLLBACK") and words[1:2] == ("PREPARED",):
        return "MISC", f"{first} PREPARED"
    if first in _SIMPLE:
        return _SIMPLE[first]
    if first in ("CREATE", "ALTER", "DROP"):
        return _ddl(words)
    if first == "COPY":
        return _copy(words, tree)
    if first in ("DISCARD", "DEALLOCATE") and len(words) > 1 and words[1] == "ALL":
        return "MISC", f"{first} ALL"
    return "MISC", first


def strongest(classes: list[AuditClass]) -> AuditClass:
    """Of several statements in one message, the class an auditor should see."""
    return max(classes, key=_PRIORITY.index) if classes else "MISC"
