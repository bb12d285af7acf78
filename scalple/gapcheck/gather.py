"""Read gap-check's facts from a live server with psycopg. The only module here that does I/O."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import errors as pgerrors

from scalple.errors import ScalpleError
from scalple.gapcheck.facts import Facts, RoleInfo, Session

SETTINGS = (
    "shared_preload_libraries",
    "session_preload_libraries",
    "pgaudit.log",
    "pgaudit.log_parameter",
    "pgaudit.log_catalog",
    "pgaudit.role",
    "log_line_prefix",
    "log_destination",
    "log_connections",
    "log_statement",
)

_SESSIONS = """
SELECT pid, usename, datname, coalesce(application_name, ''), host(client_addr), client_port,
       state, query
FROM pg_stat_activity
WHERE pid <> pg_backend_pid() AND datname IS NOT NULL AND usename IS NOT NULL
  AND (backend_type = 'client backend' OR backend_type IS NULL)
ORDER BY pid
"""
_ME = """
SELECT current_user, current_database(), current_setting('server_version'),
       coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false),
       pg_has_role(current_user, 'pg_read_all_stats', 'USAGE'),
       pg_has_role(current_user, 'pg_read_all_settings', 'USAGE')
"""
_OWNED = """
SELECT pg_get_userbyid(c.relowner), count(*)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
GROUP BY 1
"""
_ROLE_SETTINGS = """
SELECT coalesce(r.rolname, '*'), coalesce(d.datname, '*'), c
FROM pg_db_role_setting s
LEFT JOIN pg_roles r ON r.oid = s.setrole
LEFT JOIN pg_database d ON d.oid = s.setdatabase,
LATERAL unnest(s.setconfig) AS c
"""
_POLICIES = """
SELECT schemaname || '.' || tablename, policyname, concat_ws(' ', qual, with_check)
FROM pg_policies
"""
_STATEMENTS = r"""
SELECT coalesce(pg_get_userbyid(userid), '?'), query FROM pg_stat_statements
WHERE query ~* '(^|;)\s*set\s|set_config\s*\('
ORDER BY calls DESC LIMIT 500
"""


class GapCheckError(ScalpleError):
    """The database could not be checked at all (unreachable, refused, no permission)."""

    exit_code = 2


def _rows(
    con: psycopg.Connection[Any],
    sql: str,
    what: str,
    unseen: list[str],
    params: tuple[Any, ...] | None = None,
) -> list[tuple[Any, ...]] | None:
    try:
        return con.execute(sql, params).fetchall()
    except pgerrors.InsufficientPrivilege as exc:
        unseen.append(f"{what}: permission denied ({exc.diag.message_primary})")
    except psycopg.Error as exc:
        unseen.append(f"{what}: {exc.diag.message_primary or exc}")
    return None


def gather(dsn: str, *, connect_timeout: float = 10.0) -> Facts:
    """Connect to `dsn` and read every fact gap-check judges; raise GapCheckError if it cannot."""
    try:
        con = psycopg.connect(
            dsn,
            autocommit=True,
            connect_timeout=max(1, int(connect_timeout)),
            application_name="scalple gap-check",
        )
    except psycopg.OperationalError as exc:
        raise GapCheckError(f"could not connect to the database: {_first_line(exc)}") from exc
    except psycopg.ProgrammingError as exc:
        raise GapCheckError(f"not a usable connection string: {_first_line(exc)}") from exc
    with con:
        return _read(con)


def _first_line(exc: Exception) -> str:
    text = " ".join(str(exc).split()).removeprefix("connection failed: ")
    return text or type(exc).__name__


def _read(con: psycopg.Connection[Any]) -> Facts:
    unseen: list[str] = []
    me = _rows(con, _ME, "who am I", unseen)
    if not me:
        raise GapCheckError("could not read even the current role: " + "; ".join(unseen))
    user, database, version, superuser, all_stats, all_settings = me[0]

    sessions = _sessions(con, unseen)
    if not all_stats:
        unseen.append(
            f"client addresses and statement text of other roles' sessions: {user} lacks "
            "pg_read_all_stats (GRANT pg_monitor TO " + str(user) + ")"
        )

    settings: dict[str, str | None] = {}
    for name, value in (
        _rows(
            con,
            "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
            "server settings",
            unseen,
            (list(SETTINGS),),
        )
        or []
    ):
        settings[str(name)] = str(value)
    if "shared_preload_libraries" not in settings:
        settings["shared_preload_libraries"] = None
        unseen.append(
            f"shared_preload_libraries: {user} lacks pg_read_all_settings (part of pg_monitor)"
        )
    custom = {
        str(n): str(v)
        for n, v in _rows(
            con,
            "SELECT name, setting FROM pg_settings WHERE name LIKE '%.%'",
            "custom settings",
            unseen,
        )
        or []
    }

    extensions = tuple(
        str(r[0])
        for r in _rows(con, "SELECT extname FROM pg_extension ORDER BY 1", "extensions", unseen)
        or []
    )

    statement_texts: tuple[tuple[str, str], ...] | None = None
    if "pg_stat_statements" in extensions:
        rows = _rows(con, _STATEMENTS, "pg_stat_statements", unseen)
        if rows is not None:
            statement_texts = tuple((str(role), str(text)) for role, text in rows)

    return Facts(
        checked_as=str(user),
        database=str(database),
        server_version=str(version),
        is_superuser=bool(superuser),
        can_read_all_stats=bool(all_stats),
        can_read_all_settings=bool(all_settings),
        sessions=sessions,
        roles=_roles(con, unseen),
        settings=settings,
        custom_settings=custom,
        extensions=extensions,
        role_settings=tuple(
            (str(a), str(b), str(c))
            for a, b, c in _rows(con, _ROLE_SETTINGS, "role and database settings", unseen) or []
        ),
        policies=tuple(
            (str(a), str(b), str(c))
            for a, b, c in _rows(con, _POLICIES, "row-level security policies", unseen) or []
        ),
        statement_texts=statement_texts,
        unseen=tuple(unseen),
    )


def _sessions(con: psycopg.Connection[Any], unseen: list[str]) -> tuple[Session, ...]:
    out = []
    for pid, role, db, app, addr, _port, state, query in (
        _rows(con, _SESSIONS, "pg_stat_activity", unseen) or []
    ):
        visible = query != "<insufficient privilege>"
        out.append(
            Session(
                pid=int(pid),
                role=str(role),
                database=str(db),
                application_name=str(app),
                client_addr=str(addr) if addr is not None else None,
                state=str(state) if state is not None else None,
                query=str(query) if visible and query is not None else None,
                visible=visible,
            )
        )
    return tuple(out)


def _roles(con: psycopg.Connection[Any], unseen: list[str]) -> tuple[RoleInfo, ...]:
    supers = {
        str(n): bool(s)
        for n, s in _rows(con, "SELECT rolname, rolsuper FROM pg_roles", "roles", unseen) or []
    }
    db_owners: dict[str, list[str]] = {}
    for datname, owner in (
        _rows(
            con,
            "SELECT datname, pg_get_userbyid(datdba) FROM pg_database ORDER BY 1",
            "database owners",
            unseen,
        )
        or []
    ):
        db_owners.setdefault(str(owner), []).append(str(datname))
    owned = {str(o): int(n) for o, n in _rows(con, _OWNED, "table owners", unseen) or []}
    return tuple(
        RoleInfo(
            name,
            superuser=supers.get(name, False),
            owns_databases=tuple(db_owners.get(name, ())),
            owned_relations=owned.get(name, 0),
        )
        for name in sorted(set(supers) | set(db_owners) | set(owned))
    )
