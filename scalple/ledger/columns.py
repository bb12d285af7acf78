"""The AuditEvent schema as columns: DuckDB types, and SQL that rebuilds each row's canonical bytes.

Segments are Parquet files with one column per `AuditEvent` field, same names, same order.
`CANONICAL_SQL` recomputes a row's canonical JSON inside DuckDB, so verification hashes the very
columns queries read. It escapes as msgspec does in free-text fields only; a row it renders
differently is rechecked exactly through msgspec (see `scalple.ledger.segment`).
"""

from __future__ import annotations

from typing import Final

import msgspec

from scalple.events import AuditEvent


def _duck_type(t: msgspec.inspect.Type) -> str:
    if isinstance(t, msgspec.inspect.UnionType):
        rest = [x for x in t.types if not isinstance(x, msgspec.inspect.NoneType)]
        return _duck_type(rest[0])
    if isinstance(t, msgspec.inspect.IntType):
        return "BIGINT"
    if isinstance(t, msgspec.inspect.BoolType):
        return "BOOLEAN"
    if isinstance(t, msgspec.inspect.StrType | msgspec.inspect.LiteralType):
        return "VARCHAR"
    if isinstance(t, msgspec.inspect.VarTupleType):
        return _duck_type(t.item_type) + "[]"
    raise TypeError(f"no column type for {t!r}")


_INFO = msgspec.inspect.type_info(AuditEvent)
assert isinstance(_INFO, msgspec.inspect.StructType)
COLUMN_TYPES: Final[dict[str, str]] = {f.name: _duck_type(f.type) for f in _INFO.fields}

# Fields people or clients write; the others are ids, enums and hex the proxy makes itself.
_FREE_TEXT: Final = frozenset(
    {
        "actor",
        "actor_email",
        "db_role",
        "database",
        "application_name",
        "statement",
        "params",
        "tables",
        "columns",
        "command_tag",
        "masked_fields",
        "subjects",
        "error",
        "detail",
    }
)
_ESCAPES: Final = (
    ("'\\'", "'\\\\'"),
    ("'\"'", "'\\\"'"),
    ("chr(10)", "'\\n'"),
    ("chr(13)", "'\\r'"),
    ("chr(9)", "'\\t'"),
    ("chr(8)", "'\\b'"),
    ("chr(12)", "'\\f'"),
)


def _json_str(x: str, free_text: bool) -> str:
    escaped = x
    for old, new in _ESCAPES if free_text else ():
        escaped = f"replace({escaped}, {old}, {new})"
    return f"""CASE WHEN {x} IS NULL THEN 'null' ELSE concat('"', {escaped}, '"') END"""


def _json_value(name: str, duck_type: str, escaped: frozenset[str]) -> str:
    col = f'"{name}"'
    free = name in escaped
    if name == "hash":
        return "'\"\"'"  # the canonical form blanks the hash
    if duck_type == "BIGINT":
        return f"coalesce(CAST({col} AS VARCHAR), 'null')"
    if duck_type == "BOOLEAN":
        return f"CASE WHEN {col} THEN 'true' ELSE 'false' END"
    if duck_type == "VARCHAR[]":
        items = f"array_to_string(list_transform({col}, lambda s: {_json_str('s', free)}), ',')"
        return f"concat('[', {items}, ']')"
    return _json_str(col, free)


def canonical_sql(escaped: frozenset[str] = _FREE_TEXT) -> str:
    """The canonical-JSON expression, escaping string values only in the fields `escaped`.

    Anything but the default is for writers that know their text holds nothing JSON escapes
    (no quote, backslash or control character): the same bytes, rendered much faster.
    """
    # One concat() call: chained || would copy the growing row once per field.
    parts = []
    for i, (name, duck_type) in enumerate(COLUMN_TYPES.items()):
        parts.append("'" + ("{" if i == 0 else ",") + f'"{name}":' + "'")
        parts.append(_json_value(name, duck_type, escaped))
    return "concat(" + ", ".join(parts) + ", '}')"


CANONICAL_SQL: Final = canonical_sql()
"""A DuckDB expression over the event columns: the canonical JSON text of the row."""

READ_JSON_COLUMNS: Final = "{" + ", ".join(f"'{n}': '{t}'" for n, t in COLUMN_TYPES.items()) + "}"
"""The `columns=` argument of DuckDB's read_json over journal files."""

SELECT_COLUMNS: Final = ", ".join(f'"{n}"' for n in COLUMN_TYPES)
