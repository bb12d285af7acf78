"""Pass 2: bind table and column references to schema-qualified names; tables and columns touched.

SELECT scopes come from sqlglot's scope pass; INSERT/UPDATE/DELETE get a scope of their own
(target plus FROM/USING). Names resolve through the catalog when there is one; without it an
unqualified table is in the first `search_path` schema, `*` stays `table.*`, and a column that
could belong to several tables is listed under each of them (over-reporting, never hiding).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from sqlglot import exp
from sqlglot.optimizer.scope import Scope, traverse_scope

from scalple.analysis.catalog import Catalog

Sources = dict[str, str | None]  # alias -> "schema.table", or None for a CTE / derived table
# Without a catalog, an unqualified column of a statement over more tables than this is not
# listed under each of them (that would grow with tables x columns); its values stay masked.
_MAX_GUESSES = 32


@dataclass(frozen=True, slots=True)
class _Link:
    """A scope's sources, then the enclosing scopes' (shared, so building them is linear)."""

    sources: Sources
    next: _Link | None


def _chain(link: _Link | None) -> Iterator[Sources]:
    while link is not None:
        yield link.sources
        link = link.next


@dataclass(frozen=True, slots=True)
class _Tables:
    """One scope's tables, worked out once for all its columns."""

    tables: tuple[str, ...]
    all_listed: bool  # the catalog lists every one of them
    having: dict[str, list[str]]  # column name -> the listed tables that have it


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

    def __init__(
        self,
        catalog: Catalog | None,
        search_path: tuple[str, ...],
        harmless_functions: frozenset[str] = frozenset(),
    ) -> None:
        self.catalog = catalog
        self.search_path = search_path or ("public",)
        self.harmless_functions = harmless_functions

    @property
    def user_functions(self) -> frozenset[str]:
        """The database's own functions whose arguments may go anywhere (so are masked)."""
        found = self.catalog.user_functions if self.catalog is not None else frozenset()
        return found - self.harmless_functions if self.harmless_functions else found

    def table(self, node: exp.Table) -> str:
        db = node.args.get("db")
        return self.qualify(ident(db) if db else None, ident(node.this))

    def qualify(self, schema: str | None, name: str) -> str:
        """'schema.name' for a relation name already folded as PostgreSQL folds it."""
        if schema:
            return f"{schema}.{name}"
        if self.catalog is not None:
            for candidate in ("pg_catalog", *self.search_path):
                if self.catalog.relation(f"{candidate}.{name}") is not None:
                    return f"{candidate}.{name}"
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
        self.ctes: dict[str, exp.CTE] = {}
        # id(sources) -> output names of its CTEs and derived tables; None: not known (a star)
        self.derived: dict[int, frozenset[str] | None] = {}
        self.owner = _Owners(exp.Select())
        self.ups: dict[int, _Link | None] = {}  # id(Scope) -> the chain a child scope sees above
        self.tables_of: dict[int, _Tables] = {}  # id(Sources) -> its tables
        self.alive: list[Sources] = []  # every Sources keyed by id() above, kept so ids stay

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

    def using(self, name: str, sources: Sources) -> None:
        """JOIN ... USING (name): the column of every joined table that has it."""
        for table in dict.fromkeys(t for t in sources.values() if t is not None):
            cols = self.names.columns(table)
            if cols is None or name in cols:
                self.out.columns[f"{table}.{name}"] = None

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
        scopes: _Link | None,
        aliases: frozenset[str] | set[str] = frozenset(),
    ) -> None:
        if isinstance(col.this, exp.Star):
            return
        found = self._candidates(col, scopes, aliases)
        self.out.column_map[id(col)] = found
        for q in found:
            self.out.columns[q] = None

    def _candidates(
        self, col: exp.Column, scopes: _Link | None, aliases: frozenset[str] | set[str]
    ) -> tuple[str, ...]:
        name = ident(col.this)
        qualifier = ident(col.args.get("table")) if col.args.get("table") else ""
        fallback: tuple[str, ...] = ()
        for sources in _chain(scopes):
            if qualifier:
                if qualifier in sources:
                    table = sources[qualifier]
                    return (f"{table}.{name}",) if table else ()
                continue
            derived = self.derived.get(id(sources), frozenset())
            found = self._unqualified(name, sources)
            if found:
                return found
            whole = sources.get(name)
            if whole is not None and found is None:  # `to_jsonb(u)`: the row, every column
                cols = self.names.columns(whole)
                return tuple(f"{whole}.{c}" for c in cols) if cols else (f"{whole}.*",)
            if derived is None or name in derived or name in aliases:
                return ()  # a CTE's or derived table's column, or an output alias
            fallback = fallback or self._guess(name, sources)
            aliases = frozenset()  # the select list's aliases mean nothing in outer scopes
        return fallback

    def _guess(self, name: str, sources: Sources) -> tuple[str, ...]:
        """When the catalog knows no such column anywhere: its only table, rather than hide it."""
        tables = self._tables(sources).tables
        return (f"{tables[0]}.{name}",) if len(tables) == 1 else ()

    def _tables(self, sources: Sources) -> _Tables:
        found = self.tables_of.get(id(sources))
        if found is None:
            tables = tuple(dict.fromkeys(t for t in sources.values() if t is not None))
            having: dict[str, list[str]] = {}
            listed = 0
            for t in tables:
                cols = self.names.columns(t)
                if cols is not None:
                    listed += 1
                    for c in dict.fromkeys(cols):
                        having.setdefault(c, []).append(t)
            found = _Tables(tables, listed == len(tables), having)
            self.tables_of[id(sources)] = found
            self.alive.append(sources)
        return found

    def _unqualified(self, name: str, sources: Sources) -> tuple[str, ...] | None:
        info = self._tables(sources)
        if not info.tables:
            return None
        have = info.having.get(name, ())
        if have or info.all_listed:
            return tuple(f"{t}.{name}" for t in have) or None
        if len(info.tables) == 1:
            return (f"{info.tables[0]}.{name}",)
        if len(info.tables) > _MAX_GUESSES:
            return ()
        policy = [t for t in info.tables if self.known(f"{t}.{name}")]
        return tuple(f"{t}.{name}" for t in (policy or info.tables))

    def up(self, scope: Scope | None, outer: _Link | None) -> _Link | None:
        """The chain of sources a scope inside `scope` sees above itself; each scope's link is
        made once and shared by everything nested in it."""
        pending: list[Scope] = []
        while scope is not None and id(scope) not in self.ups:
            pending.append(scope)
            scope = scope.parent
        link = outer if scope is None else self.ups[id(scope)]
        for s in reversed(pending):
            up: Sources = {
                _key(a, src): (self.names.table(src) if _is_source(self, src) else None)
                for a, (_, src) in s.selected_sources.items()
                if isinstance(src, exp.Table)
            }
            link = _Link(up, link)
            self.ups[id(s)] = link
        return link

    def output_names(self, src: Scope | exp.Expression) -> frozenset[str] | None:
        """The column names a CTE, derived table or table function yields; None if unknown."""
        node: exp.Expression | None
        if isinstance(src, Scope):
            node = src.expression if isinstance(src.expression, exp.Expression) else None
        elif isinstance(src, exp.Table) and src.name and ident(src.this) in self.ctes:
            inner = self.ctes[ident(src.this)].this
            node = inner if isinstance(inner, exp.Expression) else None
        else:
            node = src if isinstance(src, exp.Table | exp.Query | exp.Values) else None
        holder = (
            node.parent
            if node is not None and isinstance(node.parent, exp.Subquery | exp.CTE)
            else node
        )
        alias = holder.args.get("alias") if holder is not None else None
        if isinstance(alias, exp.TableAlias) and alias.columns:
            return frozenset(ident(c) for c in alias.columns)
        if isinstance(node, exp.Query):
            names = node.named_selects
            return None if "*" in names or not names else frozenset(n.lower() for n in names)
        return None


# Where a column sits, as far as telling an output alias from a column goes.
_CLAUSES = (exp.Select, exp.Order, exp.Distinct, exp.Qualify, exp.Having, exp.Window)
_ALIAS_CLAUSES = (exp.Order, exp.Distinct, exp.Qualify)


class _Owners:
    """The query or statement each node belongs to (MERGE's WHEN actions belong to the MERGE),
    and each query's own columns, for the whole tree in one top-down pass. (Asking a deep
    node's parents one by one, as sqlglot's `Scope.columns` does, is quadratic in the depth
    of `a = 1 OR a = 2 OR ...`.)"""

    def __init__(self, tree: exp.Expression) -> None:
        self._of: dict[int, object] = {}
        self._clause: dict[int, object] = {}
        self._columns: dict[int, list[exp.Column]] = {}
        owners = _QUERY + _DML + (exp.Merge,)
        queue: deque[tuple[exp.Expression, object, object]] = deque([(tree, None, None)])
        while queue:  # breadth first: each query's columns come in the order they are written
            node, owner, clause = queue.popleft()
            key = id(node)
            self._of[key] = owner
            self._clause[key] = clause
            if isinstance(node, exp.Column):
                self._columns.setdefault(id(owner), []).append(node)
                continue  # its identifiers own nothing
            if isinstance(node, owners) and not isinstance(node.parent, exp.When):
                owner = node
            if isinstance(node, _CLAUSES):
                clause = node
            for value in node.args.values():
                if isinstance(value, exp.Expression):
                    queue.append((value, owner, clause))
                elif isinstance(value, list):
                    queue += ((v, owner, clause) for v in value if isinstance(v, exp.Expression))

    def __call__(self, node: exp.Expression) -> object:
        return self._of.get(id(node))

    def columns(self, query: object) -> list[exp.Column]:
        """`query`'s own columns, less the output aliases named in ORDER BY / DISTINCT ON."""
        names = set(query.named_selects) if isinstance(query, exp.Select) else set()
        return [
            c
            for c in self._columns.get(id(query), ())
            if c.table or c.name not in names or not self._alias_clause(c)
        ]

    def _alias_clause(self, col: exp.Column) -> bool:
        clause = self._clause.get(id(col))
        return isinstance(clause, _ALIAS_CLAUSES) and not isinstance(
            clause.parent, exp.Window | exp.WithinGroup
        )


def _key(alias: str, src: object) -> str:
    """A source's name as a column qualifier would spell it (quoted aliases keep their case)."""
    if isinstance(src, exp.Table):
        node = src.args.get("alias")
        return ident(node.this if node is not None and node.this else src.this)
    return alias.lower()


def _is_source(b: _Binder, src: object) -> bool:
    return isinstance(src, exp.Table) and bool(src.name) and ident(src.this) not in b.ctes


def _bind_scope(b: _Binder, scope: Scope, outer: _Link | None) -> Sources:
    sources: Sources = {}
    derived: set[str] | None = set()
    # The sources its FROM names (`scope.sources` also holds every CTE defined before it).
    for alias, (_, src) in scope.selected_sources.items():
        key = _key(alias, src)
        sources[key] = b.source(src) if isinstance(src, exp.Table) else None
        if sources[key] is None:
            names = b.output_names(src)
            if names is None or derived is None:
                derived = None
            else:
                derived |= names
    b.derived[id(sources)] = frozenset(derived) if derived is not None else None
    b.alive.append(sources)
    chain = _Link(sources, outer if scope.is_cte else b.up(scope.parent, outer))
    select = scope.expression
    aliases: set[str] = set()
    if isinstance(select, exp.Select):
        aliases = {p.alias.lower() for p in select.expressions if isinstance(p, exp.Alias)}
        for proj in select.expressions:
            if isinstance(proj, exp.Star):
                b.star(sources)
            elif isinstance(proj, exp.Column) and isinstance(proj.this, exp.Star):
                b.star(sources, ident(proj.args.get("table")))
        for join in select.args.get("joins") or ():
            for name in join.args.get("using") or ():
                b.using(ident(name), sources)
    # Each column is bound once, by the scope that owns it (sqlglot also lists a subquery's
    # unqualified columns in the enclosing scope, in case they are correlated).
    for col in b.owner.columns(select):
        b.resolve(col, chain, aliases)
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
            if b.owner(table) is node:
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
        if b.owner(col) is node:
            b.resolve(col, _Link(sources, None))
    return sources


def _bind_merge(b: _Binder, node: exp.Merge) -> None:
    target = node.this
    if not isinstance(target, exp.Table):
        return
    table = b.source(target)
    own: Sources = {_key("", target): table, ident(target.this): table}
    sources = dict(own)
    using = node.args.get("using")
    if isinstance(using, exp.Table) and _is_source(b, using):
        sources[_key("", using)] = b.source(using)
    elif using is not None:
        sources[using.alias_or_name.lower()] = None
        b.derived[id(sources)] = b.output_names(
            using.this if isinstance(using, exp.Subquery) else using
        )
    assigned: set[int] = set()  # INSERT (cols) and UPDATE SET cols: the target's own columns
    for when in node.find_all(exp.When):
        then = when.args.get("then")
        if isinstance(then, exp.Insert) and isinstance(then.this, exp.Tuple | exp.Schema):
            assigned |= {id(c) for c in then.this.expressions}
        elif isinstance(then, exp.Update):
            assigned |= {id(e.this) for e in then.expressions if isinstance(e, exp.EQ)}
    for col in node.find_all(exp.Column):
        if b.owner(col) is node:
            b.resolve(col, _Link(own if id(col) in assigned else sources, None))


def _bind_copy(b: _Binder, node: exp.Copy) -> None:
    target = node.this.this if isinstance(node.this, exp.Schema) else node.this
    if not isinstance(target, exp.Table):
        return
    table = b.source(target)
    listed = node.this.expressions if isinstance(node.this, exp.Schema) else None
    cols = tuple(ident(i) for i in listed) if listed else b.names.columns(table or "")
    for name in cols if cols is not None else ("*",):
        b.out.columns[f"{table}.{name}"] = None


def _query_roots(b: _Binder, tree: exp.Expression) -> list[exp.Expression]:
    found: list[exp.Expression] = list(tree.find_all(*_QUERY))
    return [n for n in found if not isinstance(b.owner(n), _QUERY)]


def bind(
    tree: exp.Expression, names: Names, known: Callable[[str], bool] = lambda _: False
) -> Binding:
    """Tables and columns `tree` reads or writes. `known(col)` says the policy names a column,
    which picks the table of an ambiguous column when the catalog cannot."""
    b = _Binder(names, known)
    b.owner = _Owners(tree)
    b.ctes = {cte.alias_or_name.lower(): cte for cte in tree.find_all(exp.CTE)}
    dml_sources = {
        id(n): _bind_dml(b, n) for n in tree.find_all(*_DML) if not isinstance(n.parent, exp.When)
    }
    for merge in tree.find_all(exp.Merge):
        _bind_merge(b, merge)
    for root in _query_roots(b, tree):
        owner = b.owner(root)
        outer = (
            _Link(dml_sources[id(owner)], None)
            if owner is not None and id(owner) in dml_sources
            else None
        )
        for scope in traverse_scope(root):
            _bind_scope(b, scope, outer)
    for copy in tree.find_all(exp.Copy):
        _bind_copy(b, copy)
    for table in tree.find_all(exp.Table):
        if table.name and not isinstance(b.owner(table), _QUERY + _DML):
            b.source(table)
    return b.out
