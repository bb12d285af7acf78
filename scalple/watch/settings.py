"""The [watch] settings: parsers for the registry, and one typed value from effective config."""

from __future__ import annotations

import fnmatch
import json
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from scalple.config import Config

RULE_PARAMS: Final = ("enabled", "floor", "own_factor", "peer_factor", "cap")
# Thresholds are relative: a day is flagged only when its value reaches `floor`, is above
# `own_factor` times the actor's usual day and above `peer_factor` times the peers' 99th
# percentile. `cap` (0: none) flags any day at or above it, even during warm-up.
DEFAULT_RULES: Final[dict[str, dict[str, float | bool]]] = {
    "new_subjects": {"enabled": True, "floor": 5, "own_factor": 3, "peer_factor": 1, "cap": 0},
    "subjects": {"enabled": True, "floor": 20, "own_factor": 3, "peer_factor": 1, "cap": 0},
    "rows": {"enabled": True, "floor": 10000, "own_factor": 5, "peer_factor": 1, "cap": 0},
    "bulk": {"enabled": True, "floor": 1, "own_factor": 3, "peer_factor": 1, "cap": 0},
    "tables": {"enabled": True, "floor": 8, "own_factor": 3, "peer_factor": 1, "cap": 0},
    "off_hours": {"enabled": True, "floor": 5, "own_factor": 3, "peer_factor": 1, "cap": 0},
    "refusals": {"enabled": True, "floor": 3, "own_factor": 3, "peer_factor": 1, "cap": 0},
}
SEVERITIES: Final = ("low", "medium", "high")


def rules_table(v: Any) -> dict[str, dict[str, float | bool]]:
    """`[watch.rules.subjects]` tables over the defaults (JSON in the environment); unknown rules
    or parameters are errors."""
    v = _json(v)
    if not isinstance(v, dict):
        raise ValueError(f"expected a table of rule = {{ parameter = value }}, got {v!r}")
    merged = {name: dict(params) for name, params in DEFAULT_RULES.items()}
    for name, params in v.items():
        if name not in merged:
            raise ValueError(f"unknown rule {name!r}; rules are {', '.join(DEFAULT_RULES)}")
        if not isinstance(params, dict):
            raise ValueError(f"rule {name}: expected a table of parameters, got {params!r}")
        for key, value in params.items():
            merged[name][key] = _rule_param(name, key, value)
    return merged


def _json(v: Any) -> Any:
    if not isinstance(v, str):
        return v
    try:
        return json.loads(v)
    except ValueError:
        raise ValueError(f"expected a table (as JSON in the environment), got {v!r}") from None


def _rule_param(rule: str, key: str, value: Any) -> float | bool:
    if key not in RULE_PARAMS:
        raise ValueError(f"rule {rule}: unknown parameter {key!r}; use {', '.join(RULE_PARAMS)}")
    if key == "enabled":
        if not isinstance(value, bool):
            raise ValueError(f"rule {rule}: enabled must be true or false, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"rule {rule}: {key} must be a number ≥ 0, got {value!r}")
    if key.endswith("factor") and value < 1:
        raise ValueError(f"rule {rule}: {key} must be at least 1, got {value!r}")
    return float(value)


def pattern_map(v: Any) -> dict[str, tuple[str, ...]]:
    """Peer groups: `{ tellers = ["*@branch.example"], dba = ["dba-*"] }` (actor glob patterns;
    JSON in the environment)."""
    v = _json(v)
    if not isinstance(v, dict):
        raise ValueError(f"expected a table of group = [actor patterns], got {v!r}")
    out: dict[str, tuple[str, ...]] = {}
    for name, patterns in v.items():
        items = [patterns] if isinstance(patterns, str) else patterns
        if not isinstance(items, list | tuple) or not all(isinstance(p, str) for p in items):
            raise ValueError(f"group {name}: expected a list of actor patterns, got {patterns!r}")
        out[str(name)] = tuple(items)
    return out


def timezone_name(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"expected a time zone name such as Europe/Rome, got {v!r}")
    try:
        zoneinfo.ZoneInfo(v)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {v!r}; use a name such as Europe/Rome") from None
    return v


@dataclass(frozen=True)
class Rule:
    name: str
    floor: float
    own_factor: float
    peer_factor: float
    cap: float


@dataclass(frozen=True)
class WatchSettings:
    """Everything the rules and the live watcher need, typed."""

    rules: tuple[Rule, ...]
    timezone: str = "UTC"
    baseline_days: int = 90
    warmup_days: int = 10
    novel_days: int = 180
    bulk_rows: int = 1000
    min_peers: int = 5
    peer_by: str = "role_app"
    peer_groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    allow: tuple[str, ...] = ()
    alert_severity: str = "medium"

    def allowed(self, actor: str) -> bool:
        return any(fnmatch.fnmatchcase(actor, p) for p in self.allow)

    def group_of(self, actor: str) -> str | None:
        """The configured peer group of `actor`, or None (then peers come from `peer_by`)."""
        for name, patterns in self.peer_groups.items():
            if any(fnmatch.fnmatchcase(actor, p) for p in patterns):
                return name
        return None

    def rule(self, name: str) -> Rule | None:
        return next((r for r in self.rules if r.name == name), None)

    @classmethod
    def defaults(cls, **overrides: Any) -> WatchSettings:
        return cls(rules=rules_of(rules_table({})), **overrides)

    @classmethod
    def from_config(cls, config: Config) -> WatchSettings:
        return cls(
            rules=rules_of(config["rules"]),
            timezone=config["timezone"],
            baseline_days=int(config["baseline_days"]),
            warmup_days=int(config["warmup_days"]),
            novel_days=int(config["novel_days"]),
            bulk_rows=int(config["bulk_rows"]),
            min_peers=int(config["min_peers"]),
            peer_by=config["peer_by"],
            peer_groups=dict(config["peer_groups"]),
            allow=tuple(config["allow"]),
            alert_severity=config["alert_severity"],
        )


def rules_of(table: Mapping[str, Mapping[str, float | bool]]) -> tuple[Rule, ...]:
    return tuple(
        Rule(
            name,
            float(p["floor"]),
            float(p["own_factor"]),
            float(p["peer_factor"]),
            float(p["cap"]),
        )
        for name, p in table.items()
        if p["enabled"]
    )
