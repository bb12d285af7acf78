"""What to mask and whose data it is: PII columns, value patterns, mask style, subject columns."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from scalple.analysis.masking import MaskStyle
from scalple.analysis.patterns import BUILTIN, PatternSet, ValuePattern

if TYPE_CHECKING:
    from scalple.config import Config


def _qualify(name: str, schema: str) -> str:
    return name.lower() if name.count(".") == 2 else f"{schema}.{name.lower()}"


@dataclass(frozen=True)
class Policy:
    """Column names are kept schema-qualified ("public.users.email"); unqualified ones get
    the first schema of `search_path`."""

    pii_columns: frozenset[str] = frozenset()
    subject_columns: Mapping[str, str] = field(default_factory=dict)
    patterns: PatternSet = field(default_factory=lambda: PatternSet(tuple(BUILTIN.values())))
    mask_style: MaskStyle = "shape"
    mask_subject_ids: bool = True
    subject_cap: int = 1000
    search_path: tuple[str, ...] = ("public",)
    cache_size: int = 10000
    harmless_functions: frozenset[str] = frozenset()  # of the database's own: keep their args

    @classmethod
    def build(
        cls,
        pii_columns: Iterable[str] = (),
        subject_columns: Mapping[str, str] | None = None,
        value_patterns: Iterable[str] = ("email", "iban", "card"),
        extra_patterns: Mapping[str, str] | None = None,
        **options: object,
    ) -> Policy:
        """A policy from plain names, as in the settings; `options` are the other fields."""
        path: tuple[str, ...] = options.get("search_path", ("public",))  # type: ignore[assignment]
        schema = path[0] if path else "public"
        patterns = [BUILTIN[name] for name in value_patterns]
        patterns += [ValuePattern(n, re.compile(rx)) for n, rx in (extra_patterns or {}).items()]
        return cls(
            pii_columns=frozenset(_qualify(c, schema) for c in pii_columns),
            subject_columns={_qualify(c, schema): k for c, k in (subject_columns or {}).items()},
            patterns=PatternSet(tuple(patterns)),
            **options,  # type: ignore[arg-type]
        )

    @classmethod
    def from_config(cls, config: Config) -> Policy:
        unknown = set(config["value_patterns"]) - set(BUILTIN)
        if unknown:
            from scalple.errors import ConfigError

            raise ConfigError(
                f"[analysis] value_patterns: unknown {', '.join(sorted(unknown))}; "
                f"built-in ones are {', '.join(BUILTIN)} (add others under extra_patterns)"
            )
        return cls.build(
            config["pii_columns"],
            config["subject_columns"],
            config["value_patterns"],
            config["extra_patterns"],
            mask_style=config["mask_style"],
            mask_subject_ids=config["mask_subject_ids"],
            subject_cap=config["subject_cap"],
            search_path=tuple(config["search_path"]),
            cache_size=config["analysis_cache_size"],
            harmless_functions=frozenset(f.lower() for f in config["harmless_functions"]),
        )

    def is_pii(self, column: str) -> bool:
        return column in self.pii_columns

    def subject_kind(self, column: str) -> str | None:
        return self.subject_columns.get(column)
