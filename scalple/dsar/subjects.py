"""Turning `--subject COLUMN=VALUE` into the keyed hash the ledger holds; the value stays here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from scalple.analysis.subjects import subject_hash
from scalple.dsar.errors import BadQuery, UnknownSubjectColumn
from scalple.errors import LedgerError
from scalple.ledger.keys import SUBJECT_SECRET, subject_secret


@dataclass(frozen=True)
class SubjectKey:
    """One identifier asked about: its column and kind as given, and its hash. No raw value."""

    column: str
    kind: str
    hash: str

    @property
    def label(self) -> str:
        return f"{self.column} ({self.kind})"


def qualify(column: str, search_path: tuple[str, ...]) -> str:
    """The column as the policy keys it: SCHEMA.TABLE.COLUMN, lower case."""
    name = column.strip().lower()
    return name if name.count(".") == 2 else f"{(search_path or ('public',))[0]}.{name}"


def split_subject(arg: str) -> tuple[str, str]:
    column, sep, value = arg.partition("=")
    if not sep or not column.strip() or not value:
        raise BadQuery(
            "--subject takes COLUMN=VALUE, e.g. users.email=alice@example.com; "
            f"got {column.strip()!r}=…"
        )
    return column.strip(), value


def load_secret(key_dir: Path) -> bytes:
    """The ledger's subject secret; an error (never a fresh secret) when there is none."""
    if not (key_dir / SUBJECT_SECRET).exists():
        raise LedgerError(
            f"no subject secret in {key_dir}: subject hashes cannot be computed "
            "(set key_dir to the directory `scalple serve` uses)"
        )
    return subject_secret(key_dir)


def subject_keys(
    args: Iterable[str],
    subject_columns: Mapping[str, str],
    search_path: tuple[str, ...],
    secret: bytes,
) -> list[SubjectKey]:
    """Hash each COLUMN=VALUE with the kind its column maps to; UnknownSubjectColumn otherwise."""
    keys: list[SubjectKey] = []
    for arg in args:
        column, value = split_subject(arg)
        kind = subject_columns.get(qualify(column, search_path))
        if kind is None:
            known = ", ".join(sorted(subject_columns)) or "none are configured"
            raise UnknownSubjectColumn(
                f"{column} is not a subject column ([analysis] subject_columns: {known})"
            )
        keys.append(SubjectKey(column, kind, subject_hash(secret, kind, value)))
    return keys
