"""The analyzer: a statement and its parameters in, a masked, classified StatementAnalysis out.

Shapes are cached by the literal-free key, so a repeated query costs a scan, a lookup and the
per-value work (masking, patterns, subject hashes). It never raises and does no I/O. One worker
thread may call it while the event loop's thread does: the caches are guarded, and a shape
learned while the catalog changed is not kept.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from time import sleep
from typing import Generic, Literal, TypeVar

from scalple.analysis.bind import Names
from scalple.analysis.catalog import Catalog
from scalple.analysis.copying import copy_plan
from scalple.analysis.lexer import YIELD_EVERY, Lexed, scan, split
from scalple.analysis.masker import MASK_ALL, Masker
from scalple.analysis.masking import mask
from scalple.analysis.messages import mask_message
from scalple.analysis.policy import Policy
from scalple.analysis.results import CopyPlan, ResultField, ResultPlan, decode_value
from scalple.analysis.shape import Analysis, Shape, learn, standard_text, unparsed
from scalple.analysis.subjects import SubjectHasher
from scalple.analysis.verdict import Action, Verdicts
from scalple.events import AuditClass

_EMPTY = Shape("", "MISC", "")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


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
    more_masked: int
    subjects: tuple[str, ...]
    capped: bool


def squash_in_lists(sql: str, literals: list[int]) -> tuple[str, list[int]] | None:
    """`sql` with each `IN (l1, l2, …, ln)` of plain literals of one kind cut to `IN (l1)`, and
    for each literal of `sql` the index of the literal of the cut text that stands for it.

    Every element of such a list is compared with the same expression, so it plays the role
    its first plays, and the shape learned from the cut text holds for any length: an ORM's
    lists of varying length share one cache entry, and a 100,000-id list is parsed as a one-id
    list instead of holding the loop for seconds. Anything else between the literals (a sign, a
    cast, a comment, a prefixed string) leaves the list as it is. None when nothing was cut.
    """
    n = len(literals) // 2
    cuts: list[tuple[int, int]] = []
    index: list[int] = []
    removed = 0
    i = 0
    while i < n:
        start = literals[2 * i]
        kind = _plain_kind(sql[start])
        j = i
        while (
            kind
            and j + 1 < n
            and _plain_kind(sql[literals[2 * j + 2]]) == kind
            and sql[literals[2 * j + 1] : literals[2 * j + 2]].strip() == ","
        ):
            j += 1
            if not j & YIELD_EVERY:
                sleep(0)  # a long list: let the event loop run (lexer.YIELD_EVERY)
        if j > i and _opens_in_list(sql, start) and _closes_list(sql, literals[2 * j + 1]):
            cuts.append((literals[2 * i + 1], literals[2 * j + 1]))
            index.extend([i - removed] * (j - i + 1))
            removed += j - i
        else:
            index.extend(range(i - removed, j + 1 - removed))
        i = j + 1
    if not cuts:
        return None
    pieces: list[str] = []
    at = 0
    for cut_from, cut_to in cuts:
        pieces.append(sql[at:cut_from])
        at = cut_to
    pieces.append(sql[at:])
    return "".join(pieces), index


def _plain_kind(first: str) -> str:
    if first == "'":
        return "string"
    return "number" if first in "0123456789." else ""


def _opens_in_list(sql: str, start: int) -> bool:
    head = sql[max(0, start - 64) : start].rstrip()
    if not head.endswith("("):
        return False
    head = head[:-1].rstrip()
    return head[-2:].lower() == "in" and not (len(head) > 2 and _word_char(head[-3]))


def _closes_list(sql: str, end: int) -> bool:
    return sql[end : end + 64].lstrip().startswith(")")


def _word_char(c: str) -> bool:
    return c.isalnum() or c in '_$"'


def _compile(shape: Shape, n_literals: int) -> _Compiled:
    if shape.mask_all or len(shape.literals) != n_literals:
        return _Compiled(shape, (MASK_ALL,) * n_literals)
    return _Compiled(shape, shape.literals)


class _Cache(Generic[K, V]):
    """A bounded dict, oldest out first. Reads are single dict operations (atomic); writes and
    evictions take a lock, so two threads never evict the same key."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._d: dict[K, V] = {}
        self._lock = threading.Lock()
        self.get = self._d.get  # the dict is only ever cleared in place

    def put(self, key: K, value: V, still_valid: Callable[[], bool]) -> None:
        with self._lock:
            if key in self._d or not still_valid():
                return
            while self._d and len(self._d) >= self.size:
                del self._d[next(iter(self._d))]
            self._d[key] = value

    def clear(self) -> None:
        with self._lock:
            self._d.clear()

    def __len__(self) -> int:
        return len(self._d)


# Statements (and shapes) longer than this are not cached: 10,000 entries of such a size could
# hold gigabytes, and a statement that large rarely comes back the same.
_CACHE_MAX = 64 * 1024


class Analyzer:
    def __init__(self, policy: Policy, subject_key: bytes, catalog: Catalog | None = None) -> None:
        self.policy = policy
        self.subject_key = subject_key
        self._hasher = SubjectHasher(subject_key)
        self.catalog = catalog
        self.names = Names(catalog, policy.search_path, policy.harmless_functions)
        self._shapes: _Cache[tuple[bool, str], _Compiled] = _Cache(policy.cache_size)
        # Statements that take parameters or have no literals, by their exact text (such a text
        # comes back again and again): the whole statement side of the work, done once.
        self._exact: _Cache[tuple[bool, str], _Exact] = _Cache(policy.cache_size)
        self._lock = threading.Lock()
        self._catalog_version = catalog.version if catalog else 0
        names = {c.rpartition(".")[2] for c in (*policy.pii_columns, *policy.subject_columns)}
        self._sensitive_names = frozenset(names)
        self._renew()

    def _renew(self) -> None:
        """What depends on the catalog, built again when it changes."""
        self._verdicts = Verdicts(self.policy, self.catalog)
        known = self.catalog.column_names() if self.catalog is not None else frozenset()
        self._column_names = self._sensitive_names | known

    def analyze(
        self,
        sql: str,
        params: Sequence[bytes | None] = (),
        param_formats: Sequence[int] = (),
        *,
        standard_strings: bool = True,
        lexed: Lexed | None = None,
    ) -> StatementAnalysis:
        """Never raises: on any internal error the statement comes back with everything masked.
        `standard_strings` is the session's standard_conforming_strings; `lexed` is `sql` as
        the caller already lexed it with that setting (then it is not lexed again)."""
        try:
            return self._analyze(sql, params, param_formats, standard_strings, lexed)
        except Exception:
            return self._masked_all(sql, params, param_formats, standard_strings, "failed")

    def skipped(
        self,
        sql: str,
        params: Sequence[bytes | None] = (),
        param_formats: Sequence[int] = (),
        *,
        standard_strings: bool = True,
    ) -> StatementAnalysis:
        """For a statement the proxy will not have parsed (too big, or past its time budget):
        linear in its length, never parses. Every literal, parameter and comment is masked
        (comments keep their identity keys); it is classified by its leading words, and
        reports `analysis="skipped"`."""
        return self._masked_all(sql, params, param_formats, standard_strings, "skipped")

    def _check_catalog(self) -> int:
        """The catalog version this analysis works with (caches cleared when it moved)."""
        if self.catalog is None or self.catalog.version == self._catalog_version:
            return self._catalog_version
        with self._lock:
            if self.catalog is not None and self.catalog.version != self._catalog_version:
                self._shapes.clear()  # names and `*` may mean something else after DDL
                self._exact.clear()
                self._catalog_version = self.catalog.version
                self._renew()
            return self._catalog_version

    def _current(self, version: int) -> Callable[[], bool]:
        return lambda: self.catalog is None or self.catalog.version == version

    def _compiled(
        self, sql: str, key: tuple[bool, str], n_literals: int, version: int
    ) -> _Compiled:
        compiled = self._shapes.get(key)
        if compiled is not None and len(compiled.actions) == n_literals:
            return compiled
        read = scan(sql, key[0])
        shape = learn(
            read if key[0] else standard_text(read), self.policy, self.names, self._verdicts
        )
        fresh = _compile(shape, n_literals)
        # Two texts may share a key but not a literal count: the first stays.
        if compiled is None and len(key[1]) <= _CACHE_MAX:
            self._shapes.put(key, fresh, self._current(version))
        return fresh

    def _analyze(
        self,
        sql: str,
        params: Sequence[bytes | None],
        formats: Sequence[int],
        standard: bool,
        lexed: Lexed | None = None,
    ) -> StatementAnalysis:
        version = self._check_catalog()
        exact = self._exact.get((standard, sql))
        if exact is not None:
            compiled, statement = exact.compiled, exact.statement
            m = self._masker(compiled.shape, standard)
            m.masked += exact.masked
            m.more_masked = exact.more_masked
            m.subjects.restore(exact.subjects, exact.capped)
        else:
            if lexed is not None and lexed.sql is sql and not lexed.light:
                key, literals, comments = lexed.key, lexed.literals, lexed.comments
            else:
                key, literals, comments = split(sql, standard)
            squashed = squash_in_lists(sql, literals) if "(?," in key or "(? ," in key else None
            if squashed is None:
                compiled = self._compiled(sql, (standard, key), len(literals) // 2, version)
                actions = compiled.actions
            else:
                cut, index = squashed
                cut_key, cut_literals, _ = split(cut, standard)
                compiled = self._compiled(cut, (standard, cut_key), len(cut_literals) // 2, version)
                acts = compiled.actions
                actions = tuple(acts[k] for k in index) if len(acts) > index[-1] else ()
                if len(actions) != len(literals) // 2:  # the cut text read otherwise: mask all
                    actions = (MASK_ALL,) * (len(literals) // 2)
            m = self._masker(compiled.shape, standard)
            statement = m.statement(sql, literals, comments, actions)
            if (params or not literals) and len(sql) <= _CACHE_MAX:
                self._exact.put(
                    (standard, sql),
                    _Exact(
                        compiled,
                        statement,
                        tuple(m.masked),
                        m.more_masked,
                        m.subjects.subjects,
                        m.subjects.capped,
                    ),
                    self._current(version),
                )
        values = self._params(m, params, formats) if params else ()
        return _result(compiled.shape, statement, values, m)

    def _masker(self, shape: Shape, standard: bool) -> Masker:
        return Masker(self.policy, self.subject_key, self._hasher, shape, standard)

    def _params(
        self, m: Masker, params: Sequence[bytes | None], formats: Sequence[int]
    ) -> tuple[str | None, ...]:
        return tuple(m.param(i, raw, _format(formats, i)) for i, raw in enumerate(params))

    def _masked_all(
        self,
        sql: str,
        params: Sequence[bytes | None],
        formats: Sequence[int],
        standard: bool,
        analysis: Analysis,
    ) -> StatementAnalysis:
        try:
            key, literals, comments = split(sql, standard)
            shape = unparsed(key, analysis)
            m = self._masker(shape, standard)
            statement = m.redacted(sql, literals, comments)
            return _result(shape, statement, self._params(m, params, formats), m)
        except Exception:  # not even the lexer: nothing of the text can be kept
            shape = Shape("", "MISC", "", mask_all=True, analysis=analysis)
            m = self._masker(shape, standard)
            values = tuple(None if p is None else "***" for p in params)
            return _result(shape, mask(sql, "redact", self.subject_key), values, m)

    def mask_text(
        self, text: str, *, sqlstate: str | None = None, routine: str | None = None
    ) -> str:
        """A server error or notice text (message or detail) as it may be recorded: its shape
        kept, quoted values masked; the whole text masked when user code wrote it (pass the
        ErrorResponse's SQLSTATE and routine, R, fields so RAISE can be told). Never raises."""
        try:
            style, key = self.policy.mask_style, self.subject_key
            text = mask_message(
                text,
                lambda v: mask(v, style, key),
                self._sensitive_names,
                self._column_names,
                sqlstate=sqlstate,
                routine=routine,
            )
            masked = self._masker(_EMPTY, True).mask_patterns(text)
            return text if masked is None else masked
        except Exception:
            return mask(text, "redact", self.subject_key)

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
        return copy_plan(sql, self.names, self.policy, self.subject_key)


def _format(formats: Sequence[int], i: int) -> int:
    # Bind's format codes: none means all text, one applies to all, else one per parameter.
    if not formats:
        return 0
    return formats[0] if len(formats) == 1 else (formats[i] if i < len(formats) else 0)


def _result(
    shape: Shape, statement: str, params: tuple[str | None, ...], m: Masker
) -> StatementAnalysis:
    return StatementAnalysis(
        statement=statement,
        params=params,
        fingerprint=shape.fingerprint,
        audit_class=shape.audit_class,
        command_tag_guess=shape.command_tag,
        tables=shape.tables,
        columns=shape.columns,
        masked_fields=m.fields(),
        subjects=m.subjects.subjects,
        subjects_capped=m.subjects.capped,
        analysis=shape.analysis,
    )


__all__ = ["Analyzer", "ResultField", "ResultPlan", "StatementAnalysis", "decode_value"]
