"""Pass 2: bind table and column references to schema-qualified names; tables and columns touched.

SELECT scopes come from sqlglot's scope pass; INSERT/UPDATE/DELETE get a scope of their own
(target plus FROM/USING). Names resolve through the catalog when there is one; without it an
unqualified table is in the first `search_path` schema, `*` stays `table.*`, and a column that
could belong to several tables is listed under each of them (over-reporting, never hiding).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlglot import exp
from sqlglot.optimizer.scope import Scope, traverse_scope

from scalple.analysis.catalog import Catalog

Sources = dict[str, str | None]  # alias -> "schema.table", or None for a CTE / derived table
_DML = (exp.Insert, exp.Update, exp.Delete)
_QUERY = (exp.Select, exp.SetOperation)


def ident(node: exp.Expression | None) -> str:
    """An identifier as PostgreSQL sees it: folded to lower case unless quoted."""
    if node is None:
        return ""
    if isinstance(node, exp.Identifier):
        return str(node.this) if node.quoted else str(node.this).lower()
    return node.name.lower()


class Names:
    """Resolves names against the catalog (if any) and `search_path`."""

    def __init__(self, catalog: Catalog | None, search_path: tuple[str, ...]) -> None:
        self.catalog = catalog
        self.search_path = search_path or ("public",)

    def table(self, node: exp.Table) -> str:
        name = ident(node.this)
        if node.args.get("db"):
            return f"{ident(node.args['db'])}.{name}"
        if self.catalog is not None:
            for schema in ("pg_catalog", *self.search_path):
                if self.catalog.relation(f"{schema}.{name}") is not None:
                    return f"{schema}.{name}"
        return f"{self.search_path[0]}.{name}"

    def columns(self, table: str) -> tuple[str, ...] | None:
        rel = self.catalog.relation(table) if self.catalog else None
        return tuple(name for _, name in rel.columns) if rel else None


@dataclass
class Binding:
    tables: dict[str, None] = field(default_factory=dict)
    columns: dict[str, None] = field(default_factory=dict)
    # id(Column node) -> the qualified columns it may be
    column_map: dict[int, tuple[str, ...]] = field(default_factory=dict)
    # Each INSERT: (node, target table, target column names in VALUES order, or None if unknown)
    inserts: list[tuple[exp.Insert, str, tuple[str, ...] | None]] = field(default_factory=list)

    def of(self, column: exp.Column) -> tuple[str, ...]:
        return self.column_map.get(id(column), ())


class _Binder:
    def __init__(self, names: Names, known: Callable[[str], bool]) -> None:
        self.names = names
        self.known = known
        self.out = Binding()
        self.ctes: set[str] = set()

    def add_table(self, qualified: str) -> None:
        self.out.tables[qualified] = None
        if self.names.catalog is not None:
            for col in self.names.catalog.view_columns(qualified):
                self.out.tables[col.rpartition(".")[0]] = None
                self.out.columns[col] = None

    def source(self, table: exp.Table) -> str | None:
        if not table.args.get("db") and ident(table.this) in self.ctes:
            return None
        if not table.name:  # a table function such as unnest(...) or generate_series(...)
            return None
        qualified = self.names.table(table)
        self.add_table(qualified)
        return qualified

    def star(self, sources: Sources, only: str | None = None) -> None:
        for alias, table in sources.items():
            if table is None or (only is not None and alias != only):
                continue
            cols = self.names.columns(table)
            for name in cols if cols is not None else ("*",):
                self.out.columns[f"{table}.{name}"] = None

    def resolve(
        self,
        col: exp.Column,
        scopes: list[Sources],
        aliases: frozenset[str] | set[str] = frozenset(),
    ) -> None:
        if isinstance(col.this, exp.Star):
            return
        found = self._candidates(col, scopes, aliases)
        self.out.column_map[id(col)] = found
        for q in found:
            self.out.columns[q] = None

    def _candidates(
        self, col: exp.Column, scopes: list[Sources], aliases: frozenset[str] | set[str]
    ) -> tuple[str, ...]:
        name = ident(col.this)
        qualifier = ident(col.args.get("table")) if col.args.get("table") else ""
        for sources in scopes:
            if qualifier:
                if qualifier in sources:
                    table = sources[qualifier]
                    return (f"{table}.{name}",) if table else ()
                continue
            found = self._unqualified(name, sources)
            if found is not None:
                return found
            if name in aliases:
                return ()
        return ()

    def _unqualified(self, name: str, sources: Sources) -> tuple[str, ...] | None:
        tables = list(dict.fromkeys(t for t in sources.values() if t is not None))
        if not tables:
            return None
        if len(tables) == 1:
            return (f"{tables[0]}.{name}",)
        listed = [t for t in tables if self.names.columns(t) is not None]
        have = [t for t in listed if name in (self.names.columns(t) or ())]
        if have or len(listed) == len(tables):
            return tuple(f"{t}.{name}" for t in have) or None
        policy = [t for t in tables if self.known(f"{t}.{name}")]
        return tuple(f"{t}.{name}" for t in (policy or tables))


def _owner(node: exp.Expression) -> exp.Expression | None:
    parent = node.parent
    while parent is not None and not isinstance(parent, _QUERY + _DML):
        parent = parent.parent
    return parent


def _bind_scope(b: _Binder, scope: Scope, outer: list[Sources]) -> Sources:
    sources: Sources = {}
    for alias, src in scope.sources.items():
        sources[alias.lower()] = b.source(src) if isinstance(src, exp.Table) else None
    chain = [sources]
    parent = scope.parent
    while parent is not None:
        chain.append(
            {
                a.lower(): (
                    b.names.table(s)
                    if isinstance(s, exp.Table) and ident(s.this) not in b.ctes
                    else None
                )
                for a, s in parent.sources.items()
            }
        )
        parent = parent.parent
    select = scope.expression
    aliases: set[str] = set()
    if isinstance(select, exp.Select):
        aliases = {p.alias.lower() for p in select.expressions if isinstance(p, exp.Alias)}
        for proj in select.expressions:
            if isinstance(proj, exp.Star):
                b.star(sources)
            elif isinstance(proj, exp.Column) and isinstance(proj.this, exp.Star):
                b.star(sources, ident(proj.args.get("table")))
    for col in scope.columns:
        # sqlglot also lists a subquery's unqualified columns in the enclosing scope, in case
        # they are correlated; each column is bound once, by the scope that owns it.
        if _owner(col) is select:
            b.resolve(col, chain + outer, aliases)
    return sources


def _dml_sources(b: _Binder, node: exp.Expression) -> tuple[Sources, str]:
    target = node.this.this if isinstance(node.this, exp.Schema) else node.this
    sources: Sources = {}
    qualified = b.source(target) if isinstance(target, exp.Table) else None
    if isinstance(target, exp.Table):
        sources[target.alias_or_name.lower()] = qualified
        sources.setdefault(ident(target.this), qualified)
    sources["excluded"] = qualified  # ON CONFLICT DO UPDATE's proposed row
    extra = [node.args.get("from_"), *(node.args.get("using") or [])]
    for part in extra:
        for table in part.find_all(exp.Table) if part is not None else ():
            if _owner(table) is node:
                sources[table.alias_or_name.lower()] = b.source(table)
    return sources, qualified or ""


def _bind_dml(b: _Binder, node: exp.Expression) -> Sources:
    sources, target = _dml_sources(b, node)
    if isinstance(node, exp.Insert) and target:
        listed = node.this.expressions if isinstance(node.this, exp.Schema) else None
        cols = tuple(ident(i) for i in listed) if listed else b.names.columns(target)
        b.out.inserts.append((node, target, cols))
        for name in cols if cols is not None else ("*",):
            b.out.columns[f"{target}.{name}"] = None
    returning = node.args.get("returning")
    if returning is not None and any(isinstance(e, exp.Star) for e in returning.expressions):
        b.star({k: v for k, v in sources.items() if k != "excluded"}, None)
    for col in node.find_all(exp.Column):
        if _owner(col) is node:
            b.resolve(col, [sources])
    return sources


def _bind_copy(b: _Binder, node: exp.Copy) -> None:
    target = node.this.this if isinstance(node.this, exp.Schema) else node.this
    if not isinstance(target, exp.Table):
        return
    table = b.source(target)
    listed = node.this.expressions if isinstance(node.this, exp.Schema) else None
    cols = tuple(ident(i) for i in listed) if listed else b.names.columns(table or "")
    for name in cols if cols is not None else ("*",):
        b.out.columns[f"{table}.{name}"] = None


def _query_roots(tree: exp.Expression) -> list[exp.Expression]:
    found: list[exp.Expression] = list(tree.find_all(*_QUERY))
    return [n for n in found if not isinstance(_owner(n), _QUERY)]


def bind(
    tree: exp.Expression, names: Names, known: Callable[[str], bool] = lambda _: False
) -> Binding:
    """Tables and columns `tree` reads or writes. `known(col)` says the policy names a column,
    which picks the table of an ambiguous column when the catalog cannot."""
    b = _Binder(names, known)
    b.ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    dml_sources = {id(n): _bind_dml(b, n) for n in tree.find_all(*_DML)}
    for root in _query_roots(tree):
        owner = _owner(root)
        outer = [dml_sources[id(owner)]] if owner is not None and id(owner) in dml_sources else []
        for scope in traverse_scope(root):
            _bind_scope(b, scope, outer)
    for copy in tree.find_all(exp.Copy):
        _bind_copy(b, copy)
    for table in tree.find_all(exp.Table):
        if table.name and not isinstance(_owner(table), _QUERY + _DML):
            b.source(table)
    return b.out
