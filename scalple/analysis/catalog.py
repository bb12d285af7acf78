"""The upstream's relations and columns, read over Scalple's own connection (psycopg, async).

Everything but `load`/`refresh` is pure lookup, so analysis stays free of I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

_RELATIONS = """
SELECT c.oid::int8, n.nspname, c.relname, c.relkind::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
"""
_ATTRIBUTES = """
SELECT a.attrelid::int8, a.attnum::int4, a.attname
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""
# Which base-table columns each view's rewrite rule reads: "as far as the catalog says".
_VIEW_DEPS = """
SELECT DISTINCT r.ev_class::int8, d.refobjid::int8, d.refobjsubid::int4
FROM pg_rewrite r
JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid <> r.ev_class AND d.refobjsubid > 0
"""
# Functions and procedures of the database's own (outside the system schemas): analysis does not
# read their bodies, so what is passed to them may go anywhere.
_USER_FUNCTIONS = """
SELECT DISTINCT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
"""


@dataclass(frozen=True)
class Relation:
    oid: int
    schema: str
    name: str
    kind: str  # pg_class.relkind: r table, p partitioned, v view, m matview, f foreign
    columns: tuple[tuple[int, str], ...]  # (attnum, name) in attnum order

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    def column(self, attnum: int) -> str | None:
        for num, name in self.columns:
            if num == attnum:
                return name
        return None


class Catalog:
    """Relations by OID and by qualified name; `version` changes on every (re)load."""

    def __init__(
        self,
        relations: Iterable[Relation] = (),
        view_reads: Mapping[int, Iterable[tuple[int, int]]] | None = None,
        dsn: str | None = None,
        functions: Iterable[str] = (),
    ) -> None:
        self.dsn = dsn
        self.version = 0
        self._set(tuple(relations), view_reads or {}, functions)

    def _set(
        self,
        relations: tuple[Relation, ...],
        view_reads: Mapping[int, Iterable[tuple[int, int]]],
        functions: Iterable[str] = (),
    ) -> None:
        self._by_oid = {r.oid: r for r in relations}
        self._by_name = {r.qualified: r for r in relations}
        self._view_columns = {
            oid: tuple(
                col
                for base, attnum in sorted(pairs)
                if (col := self.column_by_oid(base, attnum)) is not None
            )
            for oid, pairs in view_reads.items()
        }
        self._column_names = frozenset(name for r in relations for _, name in r.columns)
        self.user_functions = frozenset(functions)
        self.version += 1

    @classmethod
    def from_tables(
        cls,
        tables: Mapping[str, Iterable[str]],
        views: Mapping[str, Iterable[str]] | None = None,
        functions: Iterable[str] = (),
    ) -> Catalog:
        """A catalog from {"schema.table": [columns]} (and views: {"schema.view": ["s.t.col"]}),
        with made-up OIDs: for tests and for analysis without a live server."""
        relations = []
        for i, (name, cols) in enumerate(sorted(tables.items())):
            schema, _, rel = name.partition(".")
            kind = "v" if views and name in views else "r"
            relations.append(Relation(16384 + i, schema, rel, kind, tuple(enumerate(cols, 1))))
        by_name = {r.qualified: r for r in relations}
        reads: dict[int, list[tuple[int, int]]] = {}
        for view, cols in (views or {}).items():
            for col in cols:
                table, _, column = col.rpartition(".")
                base = by_name[table]
                attnum = next(n for n, c in base.columns if c == column)
                reads.setdefault(by_name[view].oid, []).append((base.oid, attnum))
        return cls(relations, reads, functions=functions)

    @classmethod
    async def load(cls, dsn: str) -> Catalog:
        catalog = cls(dsn=dsn)
        await catalog.refresh()
        return catalog

    async def refresh(self) -> None:
        """Read the catalog again (after DDL); psycopg.Error if the upstream is unreachable."""
        import psycopg

        if self.dsn is None:
            return
        async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
            rels = await (await conn.execute(_RELATIONS)).fetchall()
            attrs = await (await conn.execute(_ATTRIBUTES)).fetchall()
            deps = await (await conn.execute(_VIEW_DEPS)).fetchall()
            funcs = await (await conn.execute(_USER_FUNCTIONS)).fetchall()
        columns: dict[int, list[tuple[int, str]]] = {}
        for relid, attnum, name in attrs:
            columns.setdefault(relid, []).append((attnum, name))
        view_reads: dict[int, list[tuple[int, int]]] = {}
        for view, base, attnum in deps:
            view_reads.setdefault(view, []).append((base, attnum))
        relations = tuple(
            Relation(oid, schema, name, kind, tuple(columns.get(oid, ())))
            for oid, schema, name, kind in rels
        )
        self._set(relations, view_reads, (name for (name,) in funcs))

    def relation(self, qualified: str) -> Relation | None:
        return self._by_name.get(qualified)

    def by_oid(self, oid: int) -> Relation | None:
        return self._by_oid.get(oid)

    def column_by_oid(self, oid: int, attnum: int) -> str | None:
        """'schema.table.column' for a RowDescription's (table OID, attribute number)."""
        rel = self._by_oid.get(oid)
        name = rel.column(attnum) if rel else None
        return f"{rel.qualified}.{name}" if rel and name else None

    def column_names(self) -> frozenset[str]:
        """Every column name of every relation, unqualified."""
        return self._column_names

    def view_columns(self, qualified: str) -> tuple[str, ...]:
        """Base-table columns a view reads ('schema.table.column'); () for tables."""
        rel = self._by_name.get(qualified)
        return self._view_columns.get(rel.oid, ()) if rel else ()
