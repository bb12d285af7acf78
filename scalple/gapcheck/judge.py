"""Turn gathered facts into findings, each with evidence and a fix, and one verdict. No I/O."""

from __future__ import annotations

import ipaddress
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from scalple.gapcheck.facts import Facts, Session

Severity = Literal["gap", "warning", "unknown", "info", "ok"]
Verdict = Literal["gap", "no_gap", "unknown"]
EXIT_CODES: dict[Verdict, int] = {"no_gap": 0, "gap": 1, "unknown": 2}

AUDIT_CLASSES = ("read", "write", "function", "role", "ddl", "misc", "misc_set")
# Dotted settings that belong to extensions, not to an application's attribution scheme.
EXTENSION_PREFIXES = frozenset(
    {
        "pgaudit",
        "pg_stat_statements",
        "auto_explain",
        "plpgsql",
        "pg_trgm",
        "pg_hint_plan",
        "pg_cron",
        "pg_partman_bgw",
        "timescaledb",
        "citus",
        "pglogical",
        "pg_stat_kcache",
        "pg_qualstats",
        "pg_wait_sampling",
        "pgsodium",
        "pgrst",
        "anon",
        "postgis",
        "pgcrypto",
        "bdr",
        "neon",
        "azure",
        "rds",
        "cloudsql",
        "alloydb",
        "google_insights",
        "pg_prewarm",
        "pg_squeeze",
        "pgstattuple",
        "hypopg",
        "powa",
        "plv8",
        "plperl",
        "plpython",
    }
)
_SET_RE = re.compile(
    r"\bset\s+(?:session\s+|local\s+)?([a-z_][\w$]*\.[a-z_][\w$.]*)\s*(?:=|\bto\b)"
    r"(?!\s*default\b)",
    re.I,
)
# Scalple's own stand-in for an identity SET it answered itself: it carries nothing.
OWN_SETTINGS = frozenset({"scalple.noop"})
_SET_CONFIG_RE = re.compile(r"set_config\s*\(\s*'([a-z_][\w$]*\.[\w$.]+)'", re.I)
_CURRENT_SETTING_RE = re.compile(r"current_setting\s*\(\s*'([a-z_][\w$]*\.[\w$.]+)'", re.I)

FIX_SHARED = (
    "Put Scalple in front of the pool (scalple serve --upstream <pgbouncer>) and have each "
    "request name its person: a /*user='alice%40corp.example'*/ comment, SET scalple.user, or "
    "options=-c scalple.user=... in the connection string; then re-run with --proxy-addr. "
    "For people at psql, a role per person works too."
)
FIX_PGAUDIT = (
    "Add pgaudit to shared_preload_libraries (restart), CREATE EXTENSION pgaudit, and set "
    "pgaudit.log = 'read, write, ddl, role' (ALTER SYSTEM SET, then SELECT pg_reload_conf())."
)
FIX_PREFIX = "log_line_prefix = '%m [%p] user=%u db=%d app=%a client=%h ' (then reload)."
FIX_BYPASS = (
    "In pg_hba.conf let application roles in only from the proxy, e.g. "
    "'host all app_user <proxy-addr>/32 scram-sha-256' and "
    "'host all app_user 0.0.0.0/0 reject', then SELECT pg_reload_conf()."
)
FIX_SET = (
    "A plain SET stays on the server connection, and a transaction pool hands that connection "
    "to the next client, whose statements then carry the previous person's id. Use SET LOCAL or "
    "set_config(name, value, true) inside the transaction, or let Scalple carry identity: "
    "SET scalple.user is answered by Scalple and never reaches the pool."
)
FIX_SUPERUSER = (
    "Give applications a role with only the grants they need. A superuser can switch auditing "
    "off for itself (SET pgaudit.log = 'none') and edit or remove the logs."
)
FIX_OWNER = (
    "Run migrations as the owner; run the application as a separate role with only DML grants. "
    "An owner bypasses row-level security and can alter or drop the audited tables."
)


@dataclass(frozen=True)
class Finding:
    check: str
    severity: Severity
    title: str
    evidence: tuple[str, ...] = ()
    fix: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class Report:
    verdict: Verdict
    summary: str
    findings: tuple[Finding, ...]
    unseen: tuple[str, ...]
    checked_as: str
    database: str
    server_version: str
    sessions: int

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["exit_code"] = self.exit_code
        return out


def judge(facts: Facts, proxy_addrs: Sequence[str] = (), *, min_shared_sessions: int = 3) -> Report:
    """Judge `facts`; sessions from `proxy_addrs` (networks) are taken as attributed by Scalple."""
    networks = [ipaddress.ip_network(a, strict=False) for a in proxy_addrs]
    proxied = [s for s in facts.sessions if _from(s, networks)]
    direct = [s for s in facts.sessions if not _from(s, networks)]
    shared = shared_roles(direct, min_shared_sessions)
    findings = [
        *_sharing(facts, direct, proxied, shared),
        *_pgaudit(facts, exposed=bool(direct) or not networks),
        _log_prefix(facts),
        _bypass(facts, networks, direct),
        _set_attribution(facts, shared),
        *_privileged(facts, direct, proxied),
    ]
    return Report(
        verdict=_verdict(findings),
        summary=_summary(findings),
        findings=tuple(findings),
        unseen=facts.unseen,
        checked_as=facts.checked_as,
        database=facts.database,
        server_version=facts.server_version,
        sessions=len(facts.sessions),
    )


def _from(
    session: Session, networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> bool:
    if session.client_addr is None:
        return False
    addr = ipaddress.ip_address(session.client_addr)
    return any(addr in n for n in networks)


def shared_roles(sessions: Iterable[Session], min_sessions: int = 3) -> dict[str, list[Session]]:
    """Roles whose sessions look like many people: `min_sessions` or more sessions, or two or more
    sessions from different client addresses or applications."""
    by_role: dict[str, list[Session]] = defaultdict(list)
    for s in sessions:
        by_role[s.role].append(s)
    return {
        role: ss
        for role, ss in sorted(by_role.items())
        if len(ss) >= min_sessions
        or (len(ss) >= 2 and len({(s.client_addr, s.application_name) for s in ss}) >= 2)
    }


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _describe(role: str, ss: Sequence[Session], total: int) -> str:
    addrs = sorted({s.client_addr or "local socket" for s in ss if s.visible})
    apps = sorted({s.application_name or "(none)" for s in ss})
    hidden = sum(1 for s in ss if not s.visible)
    where = f"{len(addrs)} address{'es' if len(addrs) != 1 else ''} ({', '.join(addrs)})"
    if hidden:
        where = f"{where} and {hidden} hidden" if addrs else "hidden addresses"
    return (
        f"{role}: {len(ss)} of {total} client sessions ({100 * len(ss) // max(total, 1)}%), "
        f"from {where}, {len(apps)} application{'s' if len(apps) != 1 else ''} "
        f"({', '.join(apps)})"
    )


def _sharing(
    facts: Facts, direct: list[Session], proxied: list[Session], shared: dict[str, list[Session]]
) -> list[Finding]:
    total = len(facts.sessions)
    if total == 0:
        return [
            Finding(
                "shared_roles",
                "unknown",
                "No other client sessions were connected, so shared roles could not be observed",
                fix="Run gap-check while the applications are busy.",
            )
        ]
    out: list[Finding] = []
    if shared:
        n = sum(len(ss) for ss in shared.values())
        out.append(
            Finding(
                "shared_roles",
                "gap",
                f"{len(shared)} shared role{'s' if len(shared) != 1 else ''} carr"
                f"{'ies' if len(shared) == 1 else 'y'} {n} of {total} sessions "
                f"({100 * n // total}%): the database sees the role, never the person",
                tuple(_describe(r, ss, total) for r, ss in shared.items()),
                FIX_SHARED,
            )
        )
    else:
        out.append(
            Finding(
                "shared_roles",
                "ok",
                f"No shared roles among {_n(len(direct), 'direct session')}",
                tuple(_describe(r, ss, total) for r, ss in shared_roles(direct, 1).items()),
            )
        )
    if proxied:
        by_role = shared_roles(proxied, 1)
        out.append(
            Finding(
                "shared_roles",
                "ok",
                f"{len(proxied)} session{'s' if len(proxied) != 1 else ''} come through Scalple, "
                "which records the person behind each statement",
                tuple(_describe(r, ss, total) for r, ss in by_role.items()),
            )
        )
    return out


def audit_classes(value: str) -> set[str]:
    """The statement classes a pgaudit.log value turns on (`all, -misc` and the like)."""
    classes: set[str] = set()
    for raw in value.split(","):
        item = raw.strip().lower()
        name = item.lstrip("-")
        group = (
            set(AUDIT_CLASSES)
            if name == "all"
            else {"misc", "misc_set"}
            if name == "misc"
            else {name}
            if name in AUDIT_CLASSES
            else set()
        )
        classes = classes - group if item.startswith("-") else classes | group
    return classes


def _libraries(value: str | None) -> set[str]:
    return {x.strip().strip('"').lower() for x in (value or "").split(",") if x.strip()}


def _pgaudit(facts: Facts, *, exposed: bool) -> list[Finding]:
    spl = facts.settings.get("shared_preload_libraries")
    libs = _libraries(spl) | _libraries(facts.settings.get("session_preload_libraries"))
    module_loaded = "pgaudit.log_catalog" in facts.custom_settings
    loaded = "pgaudit" in libs or (spl is None and module_loaded)
    missing_sev: Severity = "gap" if exposed else "warning"
    if not loaded:
        if spl is None:
            return [
                Finding(
                    "pgaudit",
                    "unknown",
                    "Could not tell whether pgAudit is loaded (shared_preload_libraries is hidden)",
                    fix="Re-run as a role with pg_monitor or pg_read_all_settings.",
                )
            ]
        return [
            Finding(
                "pgaudit",
                missing_sev,
                "pgAudit is not loaded: no statement-level audit trail exists",
                (f"shared_preload_libraries = '{spl}'",),
                FIX_PGAUDIT,
            )
        ]
    log = facts.settings.get("pgaudit.log") or "none"
    classes = audit_classes(log)
    role = facts.settings.get("pgaudit.role") or ""
    evidence = [
        f"shared_preload_libraries = '{spl}'"
        if spl is not None
        else "pgaudit settings are present (library loaded)",
        f"pgaudit.log = '{log}'",
    ]
    if role:
        evidence.append(f"pgaudit.role = '{role}' (object audit)")
    out: list[Finding] = []
    if not classes and not role:
        out.append(
            Finding(
                "pgaudit",
                missing_sev,
                "pgAudit is loaded but logs nothing (pgaudit.log = 'none')",
                tuple(evidence),
                FIX_PGAUDIT,
            )
        )
    elif not {"read", "write"} <= classes:
        lacking = sorted({"read", "write"} - classes)
        out.append(
            Finding(
                "pgaudit",
                "warning",
                f"pgAudit does not log {' or '.join(c.upper() for c in lacking)} statements"
                + (" (object audit by pgaudit.role may cover some tables)" if role else ""),
                tuple(evidence),
                "Include read and write in pgaudit.log.",
            )
        )
    else:
        shown = [c.upper() for c in AUDIT_CLASSES if c in classes]
        out.append(
            Finding(
                "pgaudit",
                "ok",
                f"pgAudit logs {', '.join(shown)} statements",
                tuple(evidence),
                note="pgAudit records the database role, not the person: under a shared role every "
                "line names that role.",
            )
        )
    out += _pgaudit_overrides(facts, missing_sev)
    if "pgaudit" not in facts.extensions:
        out.append(
            Finding(
                "pgaudit",
                "warning",
                f"The pgaudit extension is not created in database {facts.database}",
                (f"pg_extension lists: {', '.join(facts.extensions) or 'nothing'}",),
                f"CREATE EXTENSION pgaudit; in {facts.database} (it installs the event triggers "
                "pgAudit uses to log DDL with object names).",
            )
        )
    return out


def _pgaudit_overrides(facts: Facts, off_severity: Severity) -> list[Finding]:
    """ALTER ROLE/DATABASE ... SET pgaudit.log that turn auditing down for some sessions."""
    off: list[str] = []
    partial: list[str] = []
    for role, db, setting in facts.role_settings:
        name, _, value = setting.partition("=")
        if name.strip().lower() != "pgaudit.log":
            continue
        line = f"ALTER ROLE {role} IN DATABASE {db} SET pgaudit.log = '{value}'"
        classes = audit_classes(value)
        if not classes:
            off.append(line)
        elif not {"read", "write"} <= classes:
            partial.append(line)
    out = []
    if off:
        out.append(
            Finding(
                "pgaudit",
                off_severity,
                "pgAudit is switched off for some roles or databases",
                tuple(off),
                "ALTER ROLE ... RESET pgaudit.log (or set it to include read, write).",
            )
        )
    if partial:
        out.append(
            Finding(
                "pgaudit",
                "warning",
                "pgAudit logs less for some roles or databases",
                tuple(partial),
                "ALTER ROLE ... RESET pgaudit.log (or set it to include read, write).",
            )
        )
    return out


def _log_prefix(facts: Facts) -> Finding:
    prefix = facts.settings.get("log_line_prefix")
    dest = facts.settings.get("log_destination") or ""
    if any(d in dest for d in ("csvlog", "jsonlog")):
        return Finding(
            "log_line_prefix",
            "ok",
            f"log_destination = '{dest}' records role, client and application on every line",
            (f"log_destination = '{dest}'",),
        )
    if prefix is None:
        return Finding("log_line_prefix", "unknown", "Could not read log_line_prefix")
    evidence = (f"log_line_prefix = '{prefix}'",)
    if "%u" not in prefix:
        return Finding(
            "log_line_prefix",
            "gap",
            "The server log cannot tell users apart: log_line_prefix has no %u (user name)",
            evidence,
            FIX_PREFIX,
        )
    lacking = [
        what
        for codes, what in ((("%h", "%r"), "client address (%h)"), (("%a",), "application (%a)"))
        if not any(c in prefix for c in codes)
    ]
    if lacking:
        return Finding(
            "log_line_prefix",
            "warning",
            f"log_line_prefix names the role but not the {' or the '.join(lacking)}",
            evidence,
            FIX_PREFIX,
        )
    return Finding(
        "log_line_prefix",
        "ok",
        "log_line_prefix names the role, client and application",
        evidence,
        note="It names the database role, not the person behind a shared role.",
    )


def _bypass(facts: Facts, networks: Sequence[Any], direct: list[Session]) -> Finding:
    if not networks:
        return Finding(
            "bypass",
            "info",
            "No proxy address given, so every session counts as direct",
            fix="Pass --proxy-addr (or set [gapcheck] proxy_addrs) to the addresses Scalple, or "
            "the pooler only Scalple reaches, connects from.",
        )
    hidden = [s for s in direct if not s.visible]
    seen = [s for s in direct if s.visible]
    if seen:
        return Finding(
            "bypass",
            "gap",
            f"{len(seen)} session{'s' if len(seen) != 1 else ''} reach the database around the "
            "proxy, unaudited by Scalple",
            tuple(
                f"pid {s.pid}: {s.role} from {s.client_addr or 'local socket'}"
                f" ({s.application_name or 'no application_name'})"
                for s in seen
            ),
            FIX_BYPASS,
        )
    if hidden:
        return Finding(
            "bypass",
            "unknown",
            f"{len(hidden)} session{'s' if len(hidden) != 1 else ''} hide their client address "
            f"from {facts.checked_as}",
            fix="Re-run as a role with pg_monitor.",
        )
    return Finding(
        "bypass",
        "ok",
        "Every session comes from a proxy address (" + ", ".join(str(n) for n in networks) + ")",
    )


def attribution_settings(text: str) -> list[str]:
    """Custom dotted settings a statement sets (SET x.y / set_config('x.y', ...))."""
    names = [m.group(1) for m in _SET_RE.finditer(text)]
    names += [m.group(1) for m in _SET_CONFIG_RE.finditer(text)]
    return [n for n in names if _is_custom(n) and n.lower() not in OWN_SETTINGS]


def _is_custom(name: str) -> bool:
    return name.split(".", 1)[0].lower() not in EXTENSION_PREFIXES


def _short(text: str, n: int = 100) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= n else flat[: n - 1] + "…"


def _set_attribution(facts: Facts, shared: dict[str, list[Session]]) -> Finding:
    pooled: list[str] = []
    other: list[str] = []
    for s in facts.sessions:
        if s.query and attribution_settings(s.query):
            line = f"pid {s.pid} ({s.role}, {s.state or '?'}): last statement {_short(s.query)}"
            (pooled if s.role in shared else other).append(line)
    for role, text in facts.statement_texts or ():
        if attribution_settings(text):
            line = f"pg_stat_statements ({role}): {_short(text)}"
            (pooled if role in shared else other).append(line)
    for role, db, setting in facts.role_settings:
        if "." in setting.split("=", 1)[0] and _is_custom(setting):
            other.append(f"ALTER ROLE {role} IN DATABASE {db} SET {setting}")
    for name, value in sorted(facts.custom_settings.items()):
        if _is_custom(name):
            other.append(
                f"{name} = '{value}' is defined server-wide (a placeholder apps fill per session)"
            )
    for table, policy, expr in facts.policies:
        used = [n for n in _CURRENT_SETTING_RE.findall(expr) if _is_custom(n)]
        if used:
            other.append(f"policy {policy} on {table} reads {', '.join(sorted(set(used)))}")
    note = (
        "pg_settings shows only gap-check's own session, so the current value of a custom "
        "setting on other backends cannot be read; what is visible is each backend's last "
        "statement"
        + (
            " and pg_stat_statements' history"
            if facts.statement_texts is not None
            else " (install pg_stat_statements to see SET history too)"
        )
        + "."
    )
    evidence = tuple(pooled + other)
    if pooled:
        return Finding(
            "set_attribution",
            "gap",
            "Identity is carried in custom SET settings on pooled backends, where it leaks from "
            "one client to the next",
            evidence,
            FIX_SET,
            note,
        )
    if other:
        return Finding(
            "set_attribution",
            "warning",
            "The application keeps identity in custom session settings",
            evidence,
            FIX_SET,
            note,
        )
    if facts.sessions and not facts.can_read_all_stats:
        return Finding(
            "set_attribution",
            "unknown",
            "Could not read other sessions' statements to look for SET-based attribution",
            fix="Re-run as a role with pg_monitor.",
            note=note,
        )
    return Finding("set_attribution", "ok", "No SET-based attribution settings seen", note=note)


def _privileged(facts: Facts, direct: list[Session], proxied: list[Session]) -> list[Finding]:
    out: list[Finding] = []
    for sessions, via in ((direct, ""), (proxied, " through Scalple")):
        supers: list[str] = []
        owners: list[str] = []
        for role, ss in shared_roles(sessions, 1).items():
            info = facts.role(role)
            apps = ", ".join(sorted({s.application_name or "(none)" for s in ss}))
            if info.superuser:
                supers.append(f"{role}: superuser, {len(ss)} session(s) ({apps})")
            elif info.owns_databases or info.owned_relations:
                owned = (
                    [f"database {', '.join(info.owns_databases)}"] if info.owns_databases else []
                )
                if info.owned_relations:
                    owned.append(f"{info.owned_relations} relation(s) in {facts.database}")
                owners.append(f"{role}: owns {' and '.join(owned)}, {len(ss)} session(s) ({apps})")
        if supers:
            out.append(
                Finding(
                    "privileged_roles",
                    "gap" if not via else "warning",
                    f"Superuser sessions{via}",
                    tuple(supers),
                    FIX_SUPERUSER,
                )
            )
        if owners:
            out.append(
                Finding(
                    "privileged_roles",
                    "warning",
                    f"Owner roles in use{via}",
                    tuple(owners),
                    FIX_OWNER,
                )
            )
    if not out:
        out.append(Finding("privileged_roles", "ok", "No superuser or owner role has sessions"))
    return out


def _verdict(findings: Sequence[Finding]) -> Verdict:
    severities = {f.severity for f in findings}
    if "gap" in severities:
        return "gap"
    if "unknown" in severities:
        return "unknown"
    return "no_gap"


def _summary(findings: Sequence[Finding]) -> str:
    gaps = [f for f in findings if f.severity == "gap"]
    unknown = [f for f in findings if f.severity == "unknown"]
    if gaps:
        return (
            f"Gap found: {len(gaps)} finding{'s show' if len(gaps) != 1 else ' shows'} statements "
            "this database cannot tie to a person."
        )
    if unknown:
        return (
            f"Could not check everything: {len(unknown)} check"
            f"{'s' if len(unknown) != 1 else ''} could not see enough; no gap among the rest."
        )
    return "No gap found: every session's statements can be tied to a person."
