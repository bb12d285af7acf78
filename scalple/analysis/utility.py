"""Relations named by utility statements (DDL, GRANT, VACUUM, LOCK, ...), read with PostgreSQL's
own grammar (pglast), which knows every statement sqlglot only passes through as a Command."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from pglast import ast, parse_sql

from scalple.analysis.bind import Names

# Statements that hold a query, whose columns only the sqlglot passes can bind.
_WITH_QUERY: Final = frozenset(
    {
        "SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt", "CopyStmt",
        "ExplainStmt", "PrepareStmt", "DeclareCursorStmt", "CreateTableAsStmt", "ViewStmt",
        "RuleStmt", "CallStmt",
    }
)  # fmt: skip
_RELATION_KINDS: Final = frozenset(
    {
        "OBJECT_TABLE", "OBJECT_VIEW", "OBJECT_MATVIEW", "OBJECT_INDEX", "OBJECT_SEQUENCE",
        "OBJECT_FOREIGN_TABLE",
    }
)  # fmt: skip


@dataclass(frozen=True)
class Utility:
    tables: tuple[str, ...]
    columns: tuple[str, ...]
    has_query: bool  # some statement holds a query (its columns come from the sqlglot passes)


def _walk(node: object) -> Iterator[ast.Node]:
    if isinstance(node, ast.Node):
        yield node
        for attr in getattr(type(node), "__slots__", ()):
            yield from _walk(getattr(node, attr, None))
    elif isinstance(node, tuple | list):
        for item in node:
            yield from _walk(item)


def _names(items: object) -> tuple[str, ...]:
    if not isinstance(items, tuple | list):
        return ()
    return tuple(str(s.sval) for s in items if isinstance(s, ast.String))


class _Collector:
    def __init__(self, names: Names) -> None:
        self.names = names
        self.tables: dict[str, None] = {}
        self.columns: dict[str, None] = {}

    def dotted(self, parts: tuple[str, ...]) -> str | None:
        if not parts:
            return None
        return self.names.qualify(parts[-2] if len(parts) > 1 else None, parts[-1])

    def relation(self, rel: ast.RangeVar) -> str:
        return self.names.qualify(rel.schemaname, str(rel.relname))

    def add(self, qualified: str | None) -> str | None:
        if qualified is not None:
            self.tables[qualified] = None
        return qualified

    def statement(self, stmt: ast.Node) -> None:
        ctes = {n.ctename for n in _walk(stmt) if isinstance(n, ast.CommonTableExpr)}
        for node in _walk(stmt):
            if isinstance(node, ast.RangeVar) and node.relname:
                if node.schemaname or node.relname not in ctes:
                    self.add(self.relation(node))
            elif isinstance(node, ast.VacuumRelation) and node.relation is not None:
                table = self.relation(node.relation)
                self.columns.update((f"{table}.{c}", None) for c in _names(node.va_cols))
        self.named(stmt)

    def named(self, stmt: ast.Node) -> None:
        """Relations a statement names by a plain name rather than a RangeVar."""
        if isinstance(stmt, ast.IndexStmt) and stmt.idxname and stmt.relation is not None:
            table = self.relation(stmt.relation)
            self.add(f"{table.rpartition('.')[0]}.{stmt.idxname}")
        elif isinstance(stmt, ast.RenameStmt) and stmt.relation is not None and stmt.newname:
            if stmt.renameType is not None and stmt.renameType.name in _RELATION_KINDS:
                table = self.relation(stmt.relation)
                self.add(f"{table.rpartition('.')[0]}.{stmt.newname}")
        elif isinstance(stmt, ast.DropStmt) and stmt.removeType is not None:
            if stmt.removeType.name in _RELATION_KINDS:
                for obj in stmt.objects or ():
                    self.add(self.dotted(_names(obj)))
        elif isinstance(stmt, ast.CommentStmt) and stmt.objtype is not None:
            kind = stmt.objtype.name
            self.add(self.dotted(_names(stmt.object)) if kind in _RELATION_KINDS else None)


def utility(sql: str, names: Names) -> Utility | None:
    """Relations (and ANALYZE's columns) named by `sql`, if PostgreSQL's grammar accepts it and
    every statement in it is a utility statement; None otherwise."""
    try:
        stmts = [raw.stmt for raw in parse_sql(sql)]
    except Exception:  # pglast's ParseError, or anything else: the sqlglot result stands
        return None
    kinds = {type(s).__name__ for s in stmts}
    if not stmts or kinds & {"SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"}:
        return None
    c = _Collector(names)
    for stmt in stmts:
        if isinstance(stmt, ast.Node):
            c.statement(stmt)
    return Utility(tuple(c.tables), tuple(c.columns), bool(kinds & _WITH_QUERY))
