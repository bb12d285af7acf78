"""The analyzer: a statement and its parameters in, a masked, classified StatementAnalysis out.

Shapes are cached by the literal-free key, so a repeated query costs a scan, a lookup and the
per-value work (masking, patterns, subject hashes). It never raises and does no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import sqlglot
from sqlglot import exp

from scalple.analysis.bind import Names, ident
from scalple.analysis.catalog import Catalog
from scalple.analysis.lexer import Scan, Token, scan
from scalple.analysis.masking import mask
from scalple.analysis.policy import Policy
from scalple.analysis.results import CopyPlan, ResultField, ResultPlan, decode_value
from scalple.analysis.shape import Action, Shape, failed, learn
from scalple.analysis.subjects import SubjectSet, subject_hash
from scalple.events import AuditClass

_MASK_ALL = Action("literal", True, None)


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
    analysis: Literal["ok", "failed"]


class _Masker:
    """Per-statement work on one scan: masking, patterns, subjects."""

    def __init__(self, policy: Policy, key: bytes, shape: Shape) -> None:
        self.policy = policy
        self.key = key
        self.shape = shape
        self.masked: list[str] = []
        self.subjects = SubjectSet(policy.subject_cap)

    def mask_value(self, value: str, action: Action | None) -> str | None:
        """The value to record instead of `value`, or None to keep it."""
        if action is not None and action.kind is not None:
            self.subjects.add(subject_hash(self.key, action.kind, v) for v in _elements(value))
        if action is not None and action.mask:
            masked = mask(value, self.policy.mask_style, self.key)
            self.masked.append(f"{action.column} → {masked}")
            return masked
        return self.mask_patterns(value)

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

    def statement(self, sc: Scan) -> str:
        edits: list[tuple[Token, str]] = []
        for i, tok in enumerate(sc.literals):
            action = _MASK_ALL if self.shape.mask_all else self.shape.literals.get(i)
            new = self.mask_value(tok.value(), action)
            if new is not None:
                edits.append((tok, "'" + new.replace("'", "''") + "'"))
        for tok in sc.comments:
            new = self.mask_patterns(tok.text)
            if new is not None:
                edits.append((tok, new))
        if not edits:
            return sc.sql
        edits.sort(key=lambda e: e[0].start)
        out, pos = [], 0
        for tok, text in edits:
            out += [sc.sql[pos : tok.start], text]
            pos = tok.end
        return "".join(out) + sc.sql[pos:]

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


class Analyzer:
    def __init__(self, policy: Policy, subject_key: bytes, catalog: Catalog | None = None) -> None:
        self.policy = policy
        self.subject_key = subject_key
        self.catalog = catalog
        self.names = Names(catalog, policy.search_path)
        self._shapes: dict[str, Shape] = {}
        self._catalog_version = catalog.version if catalog else 0

    def analyze(
        self, sql: str, params: Sequence[bytes | None] = (), param_formats: Sequence[int] = ()
    ) -> StatementAnalysis:
        """Never raises: on any internal error the statement comes back with everything masked."""
        try:
            return self._analyze(sql, params, param_formats)
        except Exception:
            return self._fail_safe(sql, params)

    def _shape(self, sc: Scan) -> Shape:
        if self.catalog is not None and self.catalog.version != self._catalog_version:
            self._shapes.clear()  # names and `*` may mean something else after DDL
            self._catalog_version = self.catalog.version
        shape = self._shapes.get(sc.key)
        if shape is None:
            shape = learn(sc, self.policy, self.names)
            if len(self._shapes) >= self.policy.cache_size:
                del self._shapes[next(iter(self._shapes))]
            self._shapes[sc.key] = shape
        return shape

    def _analyze(
        self, sql: str, params: Sequence[bytes | None], formats: Sequence[int]
    ) -> StatementAnalysis:
        sc = scan(sql)
        shape = self._shape(sc)
        m = _Masker(self.policy, self.subject_key, shape)
        statement = m.statement(sc)
        values = tuple(m.param(i, raw, _format(formats, i)) for i, raw in enumerate(params))
        return _result(shape, statement, values, m)

    def _fail_safe(self, sql: str, params: Sequence[bytes | None]) -> StatementAnalysis:
        sc = scan(sql)
        shape = failed(sc)
        m = _Masker(self.policy, self.subject_key, shape)
        values = tuple(None if p is None else "***" for p in params)
        return _result(shape, m.statement(sc), values, m)

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
        if not isinstance(tree, exp.Copy) or not isinstance(tree.this, exp.Schema | exp.Table):
            return None
        target = tree.this.this if isinstance(tree.this, exp.Schema) else tree.this
        if not isinstance(target, exp.Table):
            return None
        table = self.names.table(target)
        listed = tree.this.expressions if isinstance(tree.this, exp.Schema) else None
        cols = tuple(ident(i) for i in listed) if listed else self.names.columns(table)
        options = {p.name.upper(): p.args.get("expression") for p in tree.args.get("params") or ()}
        fmt = options.get("FORMAT")
        csv = fmt is not None and fmt.name.lower() == "csv"
        if cols is None or (fmt is not None and not csv):
            return None
        qualified = tuple(f"{table}.{c}" for c in cols)
        wanted = tuple(
            (i, kind) for i, c in enumerate(qualified) if (kind := self.policy.subject_kind(c))
        )
        if not wanted:
            return None
        delim = options.get("DELIMITER")
        delimiter = delim.name if delim is not None else ("," if csv else "\t")
        return CopyPlan(qualified, wanted, self.subject_key, delimiter, "" if csv else "\\N")


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
