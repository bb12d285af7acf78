"""The analyzer: a statement and its parameters in, a masked, classified StatementAnalysis out.

Shapes are cached by the literal-free key, so a repeated query costs a scan, a lookup and the
per-value work (masking, patterns, subject hashes). It never raises and does no I/O.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import sqlglot
from sqlglot import exp

from scalple.analysis.bind import Names, ident
from scalple.analysis.catalog import Catalog
from scalple.analysis.lexer import Scan, literal_value, scan, split
from scalple.analysis.masking import mask
from scalple.analysis.policy import Policy
from scalple.analysis.results import CopyPlan, ResultField, ResultPlan, decode_value
from scalple.analysis.shape import Action, Shape, failed, learn
from scalple.analysis.subjects import SubjectHasher, SubjectSet
from scalple.events import AuditClass

_MASK_ALL = Action("literal", True, None)
_EMPTY = Shape("", "MISC", "")


@dataclass(frozen=True, slots=True)
class StatementAnalysis:
    statement: str
    params: tuple[str | None, ...]
    fingerprint: str
    audit_class: AuditClass
    command_tag_guess: str
    tables: tuple[str, ...]
    columns: tuple[str, ...]
    masked_fields: tuple[str, ...]
    subjects: tuple[str, ...]
    subjects_capped: bool
    analysis: Literal["ok", "failed", "skipped"]


class _Masker:
    """Per-statement work on one scan: masking, patterns, subjects."""

    def __init__(self, policy: Policy, key: bytes, hasher: SubjectHasher, shape: Shape) -> None:
        self.policy = policy
        self.key = key
        self.hash = hasher
        self.shape = shape
        self.masked: list[str] = []
        self.subjects = SubjectSet(policy.subject_cap)

    def mask_value(self, value: str, action: Action | None) -> str | None:
        """The value to record instead of `value`, or None to keep it."""
        if action is None:
            return self.mask_patterns(value)
        if action.kind is not None:
            self.add_subjects(action.kind, value)
        if action.mask:
            masked = mask(value, self.policy.mask_style, self.key)
            self.masked.append(f"{action.column} → {masked}")
            return masked
        return self.mask_patterns(value)

    def add_subjects(self, kind: str, value: str) -> None:
        if value[:1] == "{":
            for v in _elements(value):
                self.subjects.add_one(self.hash(kind, v))
        else:
            self.subjects.add_one(self.hash(kind, value))

    def mask_patterns(self, text: str) -> str | None:
        spans = self.policy.patterns.find(text)
        if not spans:
            return None
        out, pos = [], 0
        for start, end, name in spans:
            masked = mask(text[start:end], self.policy.mask_style, self.key)
            self.masked.append(f"pattern:{name} → {masked}")
            out += [text[pos:start], masked]
            pos = end
        return "".join(out) + text[pos:]

    def statement(
        self, sql: str, literals: list[int], comments: list[int], actions: tuple[Action | None, ...]
    ) -> str:
        """`sql` with its literals (flat (start, end) offsets, one action each) and comments
        masked. Most literals stop at the cheap pattern pre-check on their raw text."""
        edits: list[tuple[int, int, str]] = []
        maybe = self.policy.patterns.maybe
        style, key, hasher, add = self.policy.mask_style, self.key, self.hash, self.subjects.add_one
        # mask_value, inlined: this loop is most of a cache hit's cost.
        for start, end, action in zip(literals[::2], literals[1::2], actions, strict=True):
            if action is None:
                if not maybe(sql[start:end]):
                    continue
                new = self.mask_patterns(literal_value(sql[start:end]))
            else:
                value = literal_value(sql[start:end])
                if action.kind is not None:
                    if value[:1] == "{":
                        self.add_subjects(action.kind, value)
                    else:
                        add(hasher(action.kind, value))
                if action.mask:
                    new = mask(value, style, key)
                    self.masked.append(f"{action.column} → {new}")
                else:
                    new = self.mask_patterns(value)
            if new is not None:
                edits.append((start, end, "'" + new.replace("'", "''") + "'"))
        for start, end in zip(comments[::2], comments[1::2], strict=True):
            new = self.mask_patterns(sql[start:end])
            if new is not None:
                edits.append((start, end, new))
        if not edits:
            return sql
        if comments:
            edits.sort()
        out: list[str] = []
        pos = 0
        for start, end, text in edits:
            out += (sql[pos:start], text)
            pos = end
        return "".join(out) + sql[pos:]

    def param(self, index: int, raw: bytes | None, fmt: int) -> str | None:
        if raw is None:
            return None
        action = _MASK_ALL if self.shape.mask_all else self.shape.params.get(index)
        text = _param_text(raw, fmt)
        new = self.mask_value(text, action)
        return text if new is None else new


def _param_text(raw: bytes, fmt: int) -> str:
    """Text-format parameters as text; binary ones as text when they are printable UTF-8 (so
    patterns still see e-mail addresses), as an integer for 2/4/8 bytes, else as \\x hex."""
    if fmt == 0:
        return raw.decode("utf-8", "replace")
    try:
        text = raw.decode("utf-8")
        if text.isprintable():
            return text
    except UnicodeDecodeError:
        pass
    if len(raw) in (2, 4, 8):
        return str(int.from_bytes(raw, "big", signed=True))
    return "\\x" + raw.hex()


def _elements(value: str) -> list[str]:
    """An array literal's elements (`{1,2}` from `= ANY($1)`), or the value itself."""
    if len(value) > 1 and value[0] == "{" and value[-1] == "}":
        return [v.strip().strip('"') for v in value[1:-1].split(",") if v.strip()]
    return [value]


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A learned shape laid out for the hit path: one action (or None) per literal, in order."""

    shape: Shape
    actions: tuple[Action | None, ...]


@dataclass(frozen=True, slots=True)
class _Exact:
    """The statement side of one exact text's analysis: everything but its parameters."""

    compiled: _Compiled
    statement: str
    masked: tuple[str, ...]
    subjects: tuple[str, ...]
    capped: bool


def _compile(shape: Shape, n_literals: int) -> _Compiled:
    if shape.mask_all:
        return _Compiled(shape, (_MASK_ALL,) * n_literals)
    return _Compiled(shape, tuple(shape.literals.get(i) for i in range(n_literals)))


# `Key (email)=(a@b.com) already exists.` and the like, in unique/foreign-key/exclusion details.
_KEY_DETAIL: Final = re.compile(
    r"\bKey \((?P<cols>[^()]*)\)=\((?P<vals>.*?)\)(?=\s+(?:already|is|conflicts)\b|\.?\s*$)",
    re.MULTILINE,
)
_FAILING_ROW: Final = re.compile(r"\bFailing row contains \((?P<vals>.*)\)", re.MULTILINE)


class Analyzer:
    def __init__(self, policy: Policy, subject_key: bytes, catalog: Catalog | None = None) -> None:
        self.policy = policy
        self.subject_key = subject_key
        self._hasher = SubjectHasher(subject_key)
        self.catalog = catalog
        self.names = Names(catalog, policy.search_path)
        self._shapes: dict[str, _Compiled] = {}
        # Statements that take parameters or have no literals, by their exact text (such a text
        # comes back again and again): the whole statement side of the work, done once.
        self._exact: dict[str, _Exact] = {}
        self._catalog_version = catalog.version if catalog else 0
        names = {c.rpartition(".")[2] for c in (*policy.pii_columns, *policy.subject_columns)}
        self._sensitive_names = frozenset(names)

    def analyze(
        self,
        sql: str,
        params: Sequence[bytes | None] = (),
        param_formats: Sequence[int] = (),
        *,
        standard_strings: bool = True,
    ) -> StatementAnalysis:
        """Never raises: on any internal error the statement comes back with everything masked.

        With standard_conforming_strings off a backslash escapes in plain strings, which the
        shapes learned here do not model: such a statement is masked whole."""
        try:
            if not standard_strings and "\\" in sql:
                return self._fail_safe(sql, params, standard_strings=False)
            return self._analyze(sql, params, param_formats)
        except Exception:
            return self._fail_safe(sql, params, standard_strings=standard_strings)

    def _check_catalog(self) -> None:
        if self.catalog is not None and self.catalog.version != self._catalog_version:
            self._shapes.clear()  # names and `*` may mean something else after DDL
            self._exact.clear()
            self._catalog_version = self.catalog.version

    def _compiled(self, sql: str, key: str, n_literals: int) -> _Compiled:
        compiled = self._shapes.get(key)
        if compiled is not None and len(compiled.actions) == n_literals:
            return compiled
        fresh = _compile(learn(scan(sql), self.policy, self.names), n_literals)
        if compiled is None:  # else two texts share a key but not a literal count: keep the first
            if len(self._shapes) >= self.policy.cache_size:
                del self._shapes[next(iter(self._shapes))]
            self._shapes[key] = fresh
        return fresh

    def _analyze(
        self, sql: str, params: Sequence[bytes | None], formats: Sequence[int]
    ) -> StatementAnalysis:
        self._check_catalog()
        exact = self._exact.get(sql)
        if exact is not None:
            compiled, statement = exact.compiled, exact.statement
            m = _Masker(self.policy, self.subject_key, self._hasher, compiled.shape)
            m.masked += exact.masked
            m.subjects.restore(exact.subjects, exact.capped)
        else:
            key, literals, comments = split(sql)
            compiled = self._compiled(sql, key, len(literals) // 2)
            m = _Masker(self.policy, self.subject_key, self._hasher, compiled.shape)
            statement = m.statement(sql, literals, comments, compiled.actions)
            if params or not literals:
                if len(self._exact) >= self.policy.cache_size:
                    del self._exact[next(iter(self._exact))]
                self._exact[sql] = _Exact(
                    compiled, statement, tuple(m.masked), m.subjects.subjects, m.subjects.capped
                )
        values = (
            tuple(m.param(i, raw, _format(formats, i)) for i, raw in enumerate(params))
            if params
            else ()
        )
        return _result(compiled.shape, statement, values, m)

    def skipped(
        self,
        sql: str,
        params: Sequence[bytes | None] = (),
        param_formats: Sequence[int] = (),
        *,
        standard_strings: bool = True,
    ) -> StatementAnalysis:
        """A statement past the analysis budget: never parsed, every literal masked."""
        result = self._fail_safe(sql, params, standard_strings=standard_strings)
        return dataclasses.replace(result, analysis="skipped")

    def _fail_safe(
        self, sql: str, params: Sequence[bytes | None], *, standard_strings: bool = True
    ) -> StatementAnalysis:
        key, literals, comments = split(sql, standard_strings)
        shape = failed(Scan(sql, key, (), ()))
        m = _Masker(self.policy, self.subject_key, self._hasher, shape)
        values = tuple(None if p is None else "***" for p in params)
        statement = m.statement(sql, literals, comments, (_MASK_ALL,) * (len(literals) // 2))
        return _result(shape, statement, values, m)

    def mask_text(self, text: str) -> str:
        """Free text, such as a server error message or notice, as it may be recorded: value
        patterns masked anywhere, and the values in `Key (col)=(...)` details (when a column has
        the name of a PII or subject column) and `Failing row contains (...)` masked whole, since
        the table is not known. Never raises."""
        try:
            return self._mask_text(text)
        except Exception:
            return mask(text, "redact", self.subject_key)

    def _mask_text(self, text: str) -> str:
        style, key = self.policy.mask_style, self.subject_key
        if self._sensitive_names and ("Key (" in text or "Failing row" in text):

            def key_values(m: re.Match[str]) -> str:
                cols = {c.strip().strip('"').lower() for c in m["cols"].split(",")}
                if not cols & self._sensitive_names:
                    return m[0]
                return f"Key ({m['cols']})=({mask(m['vals'], style, key)})"

            text = _KEY_DETAIL.sub(key_values, text)
            text = _FAILING_ROW.sub(
                lambda m: f"Failing row contains ({mask(m['vals'], style, key)})", text
            )
        masked = _Masker(self.policy, key, self._hasher, _EMPTY).mask_patterns(text)
        return text if masked is None else masked

    def result_plan(
        self, fields: Sequence[ResultField], statement: StatementAnalysis | None = None
    ) -> ResultPlan | None:
        """Subject columns of a result, from RowDescription; None if it has none. Without a
        catalog, OIDs stay unresolved and a field is matched by name to `statement`'s columns."""
        columns = tuple(self._field_column(f, statement) for f in fields)
        wanted = tuple(
            (i, kind, f.format, f.type_oid)
            for i, (f, col) in enumerate(zip(fields, columns, strict=True))
            if col is not None and (kind := self.policy.subject_kind(col)) is not None
        )
        return ResultPlan(columns, wanted, self.subject_key) if wanted else None

    def _field_column(self, f: ResultField, statement: StatementAnalysis | None) -> str | None:
        if self.catalog is not None and f.table_oid:
            return self.catalog.column_by_oid(f.table_oid, f.attnum)
        if statement is None or not f.table_oid:
            return None
        matches = [c for c in statement.columns if c.rpartition(".")[2] == f.name]
        return matches[0] if len(matches) == 1 else None

    def copy_plan(self, sql: str) -> CopyPlan | None:
        """For `COPY table [(cols)] FROM STDIN / TO STDOUT` in text or CSV format with subject
        columns: which fields of each data line are subjects. None otherwise."""
        try:
            tree = sqlglot.parse_one(sql, read="postgres")
        except Exception:
            return None
        if not isinstance(tree, exp.Copy):
            return None
        qualified: tuple[str, ...] | None
        if isinstance(tree.this, exp.Subquery):  # COPY (query) TO STDOUT: a bulk read too
            qualified = self._output_columns(tree.this.this)
        elif isinstance(tree.this, exp.Schema | exp.Table):
            target = tree.this.this if isinstance(tree.this, exp.Schema) else tree.this
            if not isinstance(target, exp.Table):
                return None
            table = self.names.table(target)
            listed = tree.this.expressions if isinstance(tree.this, exp.Schema) else None
            cols = tuple(ident(i) for i in listed) if listed else self.names.columns(table)
            qualified = tuple(f"{table}.{c}" for c in cols) if cols is not None else None
        else:
            return None
        options = {p.name.upper(): p.args.get("expression") for p in tree.args.get("params") or ()}
        fmt = options.get("FORMAT")
        csv = fmt is not None and fmt.name.lower() == "csv"
        if qualified is None or (fmt is not None and not csv):
            return None
        wanted = tuple(
            (i, kind) for i, c in enumerate(qualified) if (kind := self.policy.subject_kind(c))
        )
        if not wanted:
            return None
        delim = options.get("DELIMITER")
        delimiter = delim.name if delim is not None else ("," if csv else "\t")
        return CopyPlan(qualified, wanted, self.subject_key, delimiter, "" if csv else "\\N")

    def _output_columns(self, query: exp.Expression) -> tuple[str, ...] | None:
        """The source column of each output field of a plain SELECT ("" for a computed one),
        or None when the number of fields cannot be known (a set operation, an unknown `*`)."""
        if not isinstance(query, exp.Select):
            return None
        sources: dict[str, str] = {}
        order: list[str] = []
        joins = query.args.get("joins") or []
        for node in [query.args.get("from_"), *joins]:
            table = node.this if node is not None else None
            if not isinstance(table, exp.Table):
                continue  # a subquery or function in FROM: its columns stay unknown
            name = self.names.table(table)
            sources[table.alias_or_name] = name
            order.append(name)
        out: list[str] = []
        for item in query.expressions:
            inner = item.this if isinstance(item, exp.Alias) else item
            if isinstance(inner, exp.Star) or (
                isinstance(inner, exp.Column) and isinstance(inner.this, exp.Star)
            ):
                qualifier = inner.table if isinstance(inner, exp.Column) else ""
                if qualifier and qualifier not in sources:
                    return None
                for table in [sources[qualifier]] if qualifier else order:
                    cols = self.names.columns(table)
                    if cols is None:
                        return None
                    out += (f"{table}.{c}" for c in cols)
                continue
            source = ""
            if isinstance(inner, exp.Column):
                qualifier = inner.table
                only = order[0] if len(order) == 1 else None
                table = sources.get(qualifier) if qualifier else only
                if table is not None:
                    source = f"{table}.{inner.name}"
            out.append(source)
        return tuple(out)


def _format(formats: Sequence[int], i: int) -> int:
    # Bind's format codes: none means all text, one applies to all, else one per parameter.
    if not formats:
        return 0
    return formats[0] if len(formats) == 1 else (formats[i] if i < len(formats) else 0)


def _result(
    shape: Shape, statement: str, params: tuple[str | None, ...], m: _Masker
) -> StatementAnalysis:
    return StatementAnalysis(
        statement=statement,
        params=params,
        fingerprint=shape.fingerprint,
        audit_class=shape.audit_class,
        command_tag_guess=shape.command_tag,
        tables=shape.tables,
        columns=shape.columns,
        masked_fields=tuple(m.masked),
        subjects=m.subjects.subjects,
        subjects_capped=m.subjects.capped,
        analysis=shape.analysis,
    )


__all__ = ["Analyzer", "ResultField", "ResultPlan", "StatementAnalysis", "decode_value"]
