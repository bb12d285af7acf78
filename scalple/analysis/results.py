"""Subjects in data the server sends or receives: DataRow bodies and text-format COPY lines."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from scalple.analysis.subjects import subject_hash

Hasher = Callable[[str, str], str]
_INT_OIDS = {20: 8, 21: 2, 23: 4}  # int8, int2, int4: binary width
_UUID_OID = 2950


@dataclass(frozen=True, slots=True)
class ResultField:
    """One RowDescription field, as the server describes it (table_oid 0: not a table column)."""

    name: str
    table_oid: int
    attnum: int
    type_oid: int
    format: int = 0


def decode_value(raw: bytes, fmt: int, type_oid: int) -> str | None:
    """A column value as text: text format as is; binary ints, uuids and UTF-8 text decoded."""
    if fmt == 0:
        return raw.decode("utf-8", "replace")
    if type_oid in _INT_OIDS and len(raw) == _INT_OIDS[type_oid]:
        return str(int.from_bytes(raw, "big", signed=True))
    if type_oid == _UUID_OID and len(raw) == 16:
        return str(uuid.UUID(bytes=raw))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


@dataclass(frozen=True)
class ResultPlan:
    """Which result columns hold subject identifiers; `columns` are schema-qualified, or None
    where RowDescription's OIDs could not be resolved (no catalog, or a computed column)."""

    columns: tuple[str | None, ...]
    subject_fields: tuple[tuple[int, str, int, int], ...]  # (index, kind, format, type oid)
    key: bytes

    def subjects_in_row(self, row: bytes | memoryview) -> tuple[str, ...]:
        """Subject hashes in a DataRow body: int16 count, then per column int32 length (-1 NULL)."""
        view = memoryview(row)
        wanted = {i: (kind, fmt, oid) for i, kind, fmt, oid in self.subject_fields}
        count = int.from_bytes(view[0:2], "big")
        pos, out = 2, []
        for i in range(min(count, max(wanted) + 1)):
            length = int.from_bytes(view[pos : pos + 4], "big", signed=True)
            pos += 4
            if length < 0:
                continue
            if i in wanted:
                kind, fmt, oid = wanted[i]
                value = decode_value(bytes(view[pos : pos + length]), fmt, oid)
                if value is not None and value != "":
                    out.append(subject_hash(self.key, kind, value))
            pos += length
        return tuple(out)


def _unescape_text(field: str) -> str:
    """COPY text format escapes (backslash sequences) undone, enough for identifiers."""
    if "\\" not in field:
        return field
    return field.encode("latin-1", "backslashreplace").decode("unicode_escape")


@dataclass(frozen=True)
class CopyPlan:
    """Subject columns of a text-format COPY: which tab-separated fields to hash."""

    columns: tuple[str, ...]
    subject_fields: tuple[tuple[int, str], ...]  # (index, kind)
    key: bytes
    delimiter: str = "\t"
    null: str = "\\N"

    def subjects_in_line(self, line: bytes) -> tuple[str, ...]:
        fields = line.decode("utf-8", "replace").rstrip("\r\n").split(self.delimiter)
        out = []
        for i, kind in self.subject_fields:
            if i < len(fields) and fields[i] != self.null and fields[i] != "":
                out.append(subject_hash(self.key, kind, _unescape_text(fields[i])))
        return tuple(out)
