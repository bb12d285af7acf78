"""What gap-check knows about a server: plain values, gathered once, judged without I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Session:
    """One client backend from pg_stat_activity (not the checker's own)."""

    pid: int
    role: str
    database: str
    application_name: str
    # None with `visible` false: hidden from us; None with `visible` true: a local (Unix) socket.
    client_addr: str | None
    state: str | None
    query: str | None
    visible: bool = True


@dataclass(frozen=True)
class RoleInfo:
    name: str
    superuser: bool = False
    owns_databases: tuple[str, ...] = ()
    owned_relations: int = 0


@dataclass(frozen=True)
class Facts:
    """Everything gap-check read from one database, and what it could not read."""

    checked_as: str
    database: str
    server_version: str
    is_superuser: bool = False
    can_read_all_stats: bool = False
    can_read_all_settings: bool = False
    sessions: tuple[Session, ...] = ()
    roles: tuple[RoleInfo, ...] = ()
    # Server settings by name; a name mapped to None exists but could not be read.
    settings: Mapping[str, str | None] = field(default_factory=dict)
    # Custom (dotted) settings visible in this session: name -> value.
    custom_settings: Mapping[str, str] = field(default_factory=dict)
    extensions: tuple[str, ...] = ()
    # ALTER ROLE/DATABASE ... SET: (role or "*", database or "*", "name=value").
    role_settings: tuple[tuple[str, str, str], ...] = ()
    # Row-level security policies: (table, policy, expression).
    policies: tuple[tuple[str, str, str], ...] = ()
    # (role, statement) from pg_stat_statements for statements that set something
    # (None: pg_stat_statements is not available).
    statement_texts: tuple[tuple[str, str], ...] | None = None
    # Things gap-check tried to read and could not, each said plainly.
    unseen: tuple[str, ...] = ()

    def role(self, name: str) -> RoleInfo:
        for r in self.roles:
            if r.name == name:
                return r
        return RoleInfo(name)
