"""Settings: one registry, read from defaults, a TOML file, `SCALPLE_*` env vars and flags.

Each effective value remembers where it came from, so `scalple config show` can say, and a bad
value in a file is reported with its line.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs

from scalple.analysis import settings as _analysis
from scalple.errors import ConfigError
from scalple.watch import settings as _watch

Parser = Callable[[Any], Any]
MAX_WORKERS = 256  # the worker index rides in the low bits of a client's cancel key


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {v!r}")


def _int(v: Any) -> int:
    if isinstance(v, bool):
        raise ValueError(f"expected an integer, got {v!r}")
    return int(v)


def _float(v: Any) -> float:
    if isinstance(v, bool):
        raise ValueError(f"expected a number, got {v!r}")
    return float(v)


def _str(v: Any) -> str:
    if not isinstance(v, str | int | float) or isinstance(v, bool):
        raise ValueError(f"expected a string, got {v!r}")
    return str(v)


def _list(v: Any) -> tuple[str, ...]:
    if isinstance(v, str):
        return tuple(x.strip() for x in v.split(",") if x.strip())
    if isinstance(v, list | tuple) and all(isinstance(x, str) for x in v):
        return tuple(v)
    raise ValueError(f"expected a list of strings, got {v!r}")


def _choice(*options: str) -> Parser:
    def parse(v: Any) -> str:
        s = _str(v)
        if s not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {s!r}")
        return s

    return parse


def _hostport(v: Any) -> str:
    s = _str(v)
    host, sep, port = s.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {s!r}")
    return s


def _workers(v: Any) -> int:
    n = _int(v)
    if not 1 <= n <= MAX_WORKERS:
        raise ValueError(f"expected 1 to {MAX_WORKERS} workers, got {n}")
    return n


def _networks(v: Any) -> tuple[str, ...]:
    items = _list(v)
    for item in items:
        ipaddress.ip_network(item, strict=False)
    return items


@dataclass(frozen=True)
class Setting:
    name: str
    section: str
    parse: Parser
    default: Any
    help: str

    @property
    def env(self) -> str:
        return "SCALPLE_" + self.name.upper()


def _default_ledger() -> str:
    return str(Path(platformdirs.user_data_dir("scalple")) / "ledger")


REGISTRY: tuple[Setting, ...] = (
    Setting("listen", "proxy", _hostport, "127.0.0.1:6433", "address the proxy listens on"),
    Setting(
        "workers",
        "proxy",
        _workers,
        os.cpu_count() or 1,
        "proxy processes accepting on listen together (SO_REUSEPORT) under one supervisor, each "
        "writing its own ledger lane; 1: one process, no supervisor (default: the number of cores)",
    ),
    Setting(
        "upstream",
        "proxy",
        _str,
        "postgresql://127.0.0.1:6432",
        "where statements go: PgBouncer or PostgreSQL, as postgresql://HOST:PORT",
    ),
    Setting(
        "pool_mode",
        "proxy",
        _choice("transaction", "session"),
        "transaction",
        "how the upstream pools server connections: transaction (PgBouncer's transaction or "
        "statement mode) or session (PostgreSQL itself, or session pooling)",
    ),
    Setting("connect_timeout", "proxy", _float, 10.0, "seconds to reach the upstream"),
    Setting(
        "metrics_listen", "proxy", _str, "", "HOST:PORT to serve Prometheus metrics on (empty: off)"
    ),
    Setting(
        "drain_seconds",
        "proxy",
        _float,
        10.0,
        "on SIGTERM, how long in-flight statements may take before connections are cut",
    ),
    Setting(
        "stall_timeout",
        "proxy",
        _float,
        30.0,
        "seconds a client may stall in the middle of a message before it is cut off",
    ),
    Setting(
        "login_timeout",
        "proxy",
        _float,
        60.0,
        "seconds a client may take from connecting to being signed in before it is cut off",
    ),
    Setting(
        "max_message_bytes",
        "proxy",
        _int,
        256 * 1024 * 1024,
        "largest client message accepted (bytes); larger ones close that connection",
    ),
    Setting(
        "tls_cert",
        "proxy",
        _str,
        "",
        "PEM certificate chain to offer clients TLS with (empty: answer SSLRequest with N)",
    ),
    Setting("tls_key", "proxy", _str, "", "PEM private key of tls_cert"),
    Setting(
        "require_tls",
        "proxy",
        _bool,
        False,
        "refuse clients that do not encrypt (needs tls_cert and tls_key)",
    ),
    Setting("ledger", "ledger", _str, None, "ledger directory (default: the user data dir)"),
    Setting(
        "durability",
        "ledger",
        _choice("fsync", "os"),
        "fsync",
        "fsync: on stable storage before forwarding; os: written to the OS before forwarding",
    ),
    Setting(
        "key_dir",
        "ledger",
        _str,
        None,
        "signing key and subject secret directory (default: the user config dir, keys/)",
    ),
    Setting(
        "seal_bytes",
        "ledger",
        _int,
        64 * 1024 * 1024,
        "seal the journal into a signed Parquet segment once it holds this many bytes",
    ),
    Setting(
        "seal_seconds",
        "ledger",
        _float,
        3600.0,
        "seal the journal into a signed Parquet segment once it is this many seconds old",
    ),
    Setting(
        "head_seconds",
        "ledger",
        _float,
        2.0,
        "sign the journal's head (last seq and hash) this often; a record is open to an "
        "unnoticed rewrite only until the next head is signed",
    ),
    Setting(
        "require_identity",
        "identity",
        _bool,
        False,
        "refuse statements that carry no identity (SQLSTATE 28000)",
    ),
    Setting(
        "trusted_roles",
        "identity",
        _list,
        (),
        "roles allowed to assert identity by comment, SET or startup option (empty: any)",
    ),
    Setting(
        "trusted_networks",
        "identity",
        _networks,
        ("127.0.0.0/8", "::1/128"),
        "client networks allowed to assert identity",
    ),
    Setting(
        "people_file",
        "identity",
        _str,
        "",
        "people who sign in to scalple themselves (proxy_auth): NAME SCRAM-verifier per line",
    ),
    Setting(
        "people_role",
        "identity",
        _str,
        "",
        "the upstream role people's statements run as (needs people_file)",
    ),
    Setting(
        "people_password",
        "identity",
        _str,
        "",
        "people_role's password upstream (better as SCALPLE_PEOPLE_PASSWORD)",
    ),
    Setting("log_format", "logging", _choice("text", "json"), "text", "log line format"),
    Setting(
        "log_level",
        "logging",
        _choice("debug", "info", "warning", "error"),
        "info",
        "least severe log level shown",
    ),
    Setting(
        "proxy_addrs",
        "gapcheck",
        _networks,
        (),
        "addresses Scalple (or a pooler only Scalple reaches) connects from; gap-check "
        "counts sessions from elsewhere as bypassing the proxy",
    ),
    Setting(
        "pii_columns",
        "analysis",
        _analysis.column_list,
        (),
        "PII columns as TABLE.COLUMN or SCHEMA.TABLE.COLUMN; values meeting them are masked",
    ),
    Setting(
        "value_patterns",
        "analysis",
        _list,
        ("email", "iban", "card"),
        "built-in value patterns masked wherever they appear: email, iban, card (Luhn)",
    ),
    Setting(
        "extra_patterns",
        "analysis",
        _analysis.regex_map,
        {},
        "more value patterns masked wherever they appear, as a table of name = regex",
    ),
    Setting(
        "mask_style",
        "analysis",
        _choice("shape", "hash", "redact"),
        "shape",
        "shape: j***@***.com; hash: keyed HMAC prefix; redact: ***",
    ),
    Setting(
        "subject_columns",
        "analysis",
        _analysis.column_map,
        {},
        'data-subject identifier columns and their kind, e.g. {"users.id" = "customer"}',
    ),
    Setting(
        "mask_subject_ids",
        "analysis",
        _bool,
        True,
        "also mask subject identifier values in recorded statements (they are hashed anyway)",
    ),
    Setting(
        "subject_cap",
        "analysis",
        _int,
        1000,
        "most subjects one statement records; beyond it subjects_capped is set",
    ),
    Setting(
        "search_path",
        "analysis",
        _list,
        ("public",),
        "schemas unqualified table names resolve in, after pg_catalog",
    ),
    Setting(
        "catalog_dsn",
        "analysis",
        _str,
        None,
        "DSN Scalple reads the upstream catalog with (for * and result columns); "
        "without it analysis uses the SQL alone",
    ),
    Setting(
        "analysis_cache_size",
        "analysis",
        _int,
        10000,
        "statement shapes whose analysis is kept in memory",
    ),
    Setting(
        "harmless_functions",
        "analysis",
        _list,
        (),
        "the database's own functions known not to move their arguments into PII columns "
        "(their literal arguments are kept in clear; other user functions' are masked)",
    ),
    Setting(
        "analysis_max_bytes",
        "analysis",
        _int,
        1 << 20,
        "statements larger than this are not parsed: recorded with every literal masked "
        "(analysis: skipped), and refused if they might change identity, transaction or names",
    ),
)
_WATCH: tuple[Setting, ...] = (
    Setting(
        "live_alerts",
        "watch",
        _bool,
        True,
        "serve evaluates the [watch] rules as statements are recorded and raises alerts",
    ),
    Setting(
        "rules",
        "watch",
        _watch.rules_table,
        _watch.rules_table({}),
        "per rule: enabled, floor, own_factor, peer_factor, cap (0: none), as "
        "[watch.rules.NAME] tables over the defaults",
    ),
    Setting(
        "baseline_days",
        "watch",
        _int,
        90,
        "days of history a day is compared with (the actor's own and their peers')",
    ),
    Setting(
        "warmup_days",
        "watch",
        _int,
        10,
        "active days an actor needs in the baseline before their days are judged",
    ),
    Setting(
        "novel_days",
        "watch",
        _int,
        180,
        "a data subject is new to an actor who has not touched it for this many days",
    ),
    Setting(
        "bulk_rows",
        "watch",
        _int,
        1000,
        "a read of at least this many rows (or any COPY ... TO) counts as a bulk read",
    ),
    Setting("min_peers", "watch", _int, 5, "fewest actors a peer group needs to be compared with"),
    Setting(
        "peer_by",
        "watch",
        _choice("role_app", "role", "app", "none"),
        "role_app",
        "actors in no peer group are peers when they share db_role and application "
        "(role_app), db_role, application, or all together (none)",
    ),
    Setting(
        "peer_groups",
        "watch",
        _watch.pattern_map,
        {},
        'peer groups by actor pattern, e.g. { tellers = ["*@branch.example"] }',
    ),
    Setting(
        "allow",
        "watch",
        _list,
        (),
        "actor patterns never flagged nor used as peers: known batch jobs, service accounts",
    ),
    Setting(
        "timezone",
        "watch",
        _watch.timezone_name,
        "UTC",
        "where days and hours of activity are counted (IANA name)",
    ),
    Setting(
        "alert_severity",
        "watch",
        _choice(*_watch.SEVERITIES),
        "medium",
        "least severity raised as a live alert (every finding is in scalple anomalies)",
    ),
    Setting(
        "alerts_file",
        "watch",
        _str,
        "",
        "JSON lines of alerts to this file, or - for stdout (empty: off)",
    ),
    Setting(
        "alerts_syslog",
        "watch",
        _str,
        "",
        "local syslog socket alerts are sent to as RFC 5424, e.g. /dev/log (empty: off)",
    ),
    Setting("alerts_webhook", "watch", _str, "", "URL alerts are POSTed to as JSON (empty: off)"),
    Setting(
        "webhook_queue",
        "watch",
        _int,
        1000,
        "alerts held (and retried) for a webhook that does not take them; past it the oldest "
        "is dropped, counted and logged",
    ),
    Setting("webhook_timeout", "watch", _float, 5.0, "seconds one webhook POST may take"),
    Setting(
        "watch_queue",
        "watch",
        _int,
        100_000,
        "recorded events waiting for the live rules; past it events are left unwatched (counted)",
    ),
)
REGISTRY += _WATCH
BY_NAME = {s.name: s for s in REGISTRY}


@dataclass(frozen=True)
class Value:
    value: Any
    origin: str


class Config:
    """Effective settings, each with its origin: default, file:PATH:LINE, env:NAME or flag."""

    def __init__(self, values: Mapping[str, Value], path: Path | None) -> None:
        self._values = dict(values)
        self.path = path

    def __getitem__(self, name: str) -> Any:
        return self._values[name].value

    def origin(self, name: str) -> str:
        return self._values[name].origin

    def items(self) -> list[tuple[Setting, Value]]:
        return [(s, self._values[s.name]) for s in REGISTRY]

    @property
    def ledger_dir(self) -> Path:
        value = self["ledger"]
        return Path(value if value else _default_ledger()).expanduser()


def default_config_path() -> Path:
    return Path(platformdirs.user_config_dir("scalple")) / "scalple.toml"


def _key_line(text: str, section: str, key: str) -> int:
    current = ""
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        m = re.match(r"^\[\s*([^\]]+?)\s*\]", stripped)
        if m:
            current = m.group(1)
            if current == f"{section}.{key}" or current.startswith(f"{section}.{key}."):
                return lineno
            continue
        if re.match(rf"^\"?{re.escape(key)}\"?\s*=", stripped) and current in (section, ""):
            return lineno
    return 0


def _near(key: str) -> str:
    close = difflib.get_close_matches(key, list(BY_NAME), n=1, cutoff=0.6)
    return f"; did you mean [{BY_NAME[close[0]].section}] {close[0]}?" if close else ""


def _read_file(path: Path) -> dict[str, Value]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    values: dict[str, Value] = {}
    for section, table in data.items():
        if not isinstance(table, dict):
            line = _key_line(text, "", section)
            known = BY_NAME.get(section)
            where = f"[{known.section}]" if known else "a [section], e.g. [proxy]"
            raise ConfigError(f"{path}:{line}: '{section}' must be inside {where}")
        for key, raw in table.items():
            line = _key_line(text, section, key)
            setting = BY_NAME.get(key)
            if setting is None or setting.section != section:
                hint = f"; did you mean [{setting.section}] {key}?" if setting else _near(key)
                raise ConfigError(f"{path}:{line}: unknown setting [{section}] {key}{hint}")
            try:
                values[key] = Value(setting.parse(raw), f"file:{path}:{line}")
            except ValueError as exc:
                raise ConfigError(f"{path}:{line}: [{section}] {key}: {exc}") from exc
    return values


def load(
    path: Path | None = None,
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Defaults, then the file, then env vars, then flags (flags set to None are ignored)."""
    env = os.environ if env is None else env
    values = {s.name: Value(s.default, "default") for s in REGISTRY}
    explicit = path or (Path(env["SCALPLE_CONFIG"]) if env.get("SCALPLE_CONFIG") else None)
    chosen = explicit or default_config_path()
    if explicit is not None or chosen.exists():
        values.update(_read_file(chosen))
    else:
        chosen = None  # type: ignore[assignment]
    for s in REGISTRY:
        if s.env in env:
            try:
                values[s.name] = Value(s.parse(env[s.env]), f"env:{s.env}")
            except ValueError as exc:
                raise ConfigError(f"environment variable {s.env}: {exc}") from exc
    for name, raw in (flags or {}).items():
        if raw is None:
            continue
        try:
            values[name] = Value(BY_NAME[name].parse(raw), "flag")
        except ValueError as exc:
            raise ConfigError(f"--{name.replace('_', '-')}: {exc}") from exc
    return Config(values, chosen)
