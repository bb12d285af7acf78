"""What to do with a value, from where it can go: mask it when it can meet a PII column, a subject
column (when subject ids are masked) or something analysis could not name; hash it as a subject
when it is a subject column's value."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

from scalple.analysis.catalog import Catalog
from scalple.analysis.flow import UNSURE, Reach
from scalple.analysis.policy import Policy

Kind = Literal["pii", "subject"]
_VIEWS: Final = ("v", "m")


@dataclass(frozen=True, slots=True)
class Action:
    """What to do with one literal or parameter: mask it (as `column`), hash it as a subject."""

    column: str
    mask: bool
    kind: str | None


UNSURE_ACTION: Final = Action(UNSURE, True, None)


def merge(old: Action | None, new: Action | None) -> Action | None:
    """One value seen in two places: masked if either masks, hashed if either hashes."""
    if old is None or new is None:
        return old or new
    column = old.column if old.mask or not new.mask else new.column
    return Action(column, old.mask or new.mask, old.kind or new.kind)


def merge_all(actions: Iterable[Action | None]) -> Action | None:
    out: Action | None = None
    for a in actions:
        out = merge(out, a)
    return out


class Verdicts:
    """Judges reaches against the policy and, when there is one, the catalog: a relation or
    column the catalog does not know (a temporary table, a typo) and a view that reads a PII
    column count as PII, since what they hold cannot be told."""

    def __init__(self, policy: Policy, catalog: Catalog | None) -> None:
        self.policy = policy
        self.catalog = catalog
        self._kinds: dict[str, Kind | None] = {}
        self._actions: dict[Reach, Action | None] = {}
        self._tables: dict[str, Kind] = {}
        for col in policy.pii_columns:
            self._tables[col.rpartition(".")[0]] = "pii"
        for col in policy.subject_columns:
            self._tables.setdefault(col.rpartition(".")[0], "subject")

    def action(self, reach: Reach) -> Action | None:
        if reach in self._actions:
            return self._actions[reach]
        out = self._action(reach)
        self._actions[reach] = out
        return out

    def _action(self, reach: Reach) -> Action | None:
        pii = [c for c in reach.meets if self.kind(c) == "pii"]
        subject = [c for c in reach.meets if self.kind(c) == "subject"]
        kinds = [k for c in reach.same if (k := self.policy.subject_kind(c)) is not None]
        mask = bool(pii) or (bool(subject) and self.policy.mask_subject_ids)
        if not mask and not kinds:
            return None
        column = (pii or subject or list(reach.same) or [UNSURE])[0]
        return Action(column, mask, kinds[0] if kinds else None)

    def kind(self, column: str) -> Kind | None:
        if column not in self._kinds:
            self._kinds[column] = self._kind(column)
        return self._kinds[column]

    def _kind(self, column: str) -> Kind | None:
        if column == UNSURE or self.policy.is_pii(column):
            return "pii"
        if self.policy.subject_kind(column) is not None:
            return "subject"
        table, _, name = column.rpartition(".")
        if self.catalog is None:
            return self._tables.get(table) if name == "*" else None
        rel = self.catalog.relation(table)
        if rel is None:
            return "pii"  # not in the catalog: a temporary table, or one made since it was read
        if name == "*":
            return self._tables.get(table) or self._view_kind(table, rel.kind)
        if name not in {c for _, c in rel.columns}:
            return "pii"
        return self._view_kind(table, rel.kind)

    def _view_kind(self, table: str, relkind: str) -> Kind | None:
        if relkind not in _VIEWS or self.catalog is None:
            return None
        kinds = {self.kind(c) for c in self.catalog.view_columns(table)}
        return "pii" if "pii" in kinds else ("subject" if "subject" in kinds else None)
