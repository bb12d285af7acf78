"""`scalple config show`: the effective settings and where each came from."""

from __future__ import annotations

import difflib
import json
import os
import re
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from scalple import config as cfg
from scalple.tabular import Rows, report_console

config_app = typer.Typer(
    name="config",
    help="Inspect Scalple's configuration.",
    no_args_is_help=True,
)


_PASSWORD_IN_URL = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")
_PASSWORD_KV = re.compile(r"(\bpassword\s*=\s*)('[^']*'|\S+)", re.I)


def _redact(text: str) -> str:
    """Hide passwords inside connection strings; config show output gets pasted into tickets."""
    return _PASSWORD_KV.sub(r"\1***", _PASSWORD_IN_URL.sub(r"\1***@", text))


def _plain(value: Any) -> Any:
    if isinstance(value, str):
        return _redact(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def _secret(setting: cfg.Setting, value: Any) -> bool:
    return setting.name.endswith("password") and bool(value)


def _shown(setting: cfg.Setting, value: Any, settings: cfg.Config) -> str:
    if _secret(setting, value):
        return "***"
    if setting.name == "ledger" and not value:
        return f"{settings.ledger_dir} (user data dir)"
    if value is None:
        return "(unset)"
    if isinstance(value, tuple | list):
        return ", ".join(str(v) for v in value) or "(none)"
    if isinstance(value, dict):
        sep = ",\n" if any(isinstance(v, dict) for v in value.values()) else ", "
        return sep.join(f"{k} = {_item(v)}" for k, v in value.items()) or "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    return _redact(str(value))


def _item(v: Any) -> str:
    """One entry of a table setting: nested tables and lists compactly, one entry a line."""
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_item(x)}" for k, x in v.items()) + " }"
    if isinstance(v, tuple | list):
        return "[" + ", ".join(map(str, v)) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


# SCALPLE_* variables that are not settings but are still meaningful.
OTHER_ENV = frozenset({"SCALPLE_CONFIG", "SCALPLE_PG_BINDIR"})


def unknown_env(environ: dict[str, str]) -> list[str]:
    """SCALPLE_* variables no setting reads, each with the nearest real name when there is one."""
    known = {s.env for s in cfg.REGISTRY} | OTHER_ENV
    out = []
    for name in sorted(n for n in environ if n.startswith("SCALPLE_") and n not in known):
        near = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.8)
        out.append(f"{name} is not a setting" + (f"; did you mean {near[0]}?" if near else ""))
    return out


def _origin(origin: str) -> str:
    kind, _, rest = origin.partition(":")
    return f"{kind} {rest}" if rest else kind


@config_app.command("show")
def show(
    json_out: bool = typer.Option(False, "--json", help="Print the settings as JSON."),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="TOML config file \\[env SCALPLE_CONFIG]."
    ),
) -> None:
    """Print every effective setting, its value and where it came from (default, file:LINE, env)."""
    settings = cfg.load(config)
    if json_out:
        typer.echo(
            json.dumps(
                {
                    "file": str(settings.path) if settings.path else None,
                    "default_file": str(cfg.default_config_path()),
                    "unknown_env": unknown_env(dict(os.environ)),
                    "settings": [
                        {
                            "name": s.name,
                            "section": s.section,
                            "value": "***" if _secret(s, v.value) else _plain(v.value),
                            "origin": v.origin,
                            "env": s.env,
                            "help": s.help,
                        }
                        for s, v in settings.items()
                    ],
                },
                indent=2,
            )
        )
        return
    console = report_console()
    source = settings.path or f"none ({cfg.default_config_path()} does not exist)"
    console.print(f"Config file: {source}", markup=False)
    items = list(settings.items())
    rows = [
        [f"[{s.section}] {s.name}", _shown(s, v.value, settings), _origin(v.origin), s.env]
        for s, v in items
    ]
    styles = ["" if v.origin == "default" else "bold" for _, v in items]
    console.print(
        Rows(("setting", "value", "from", "env var"), rows, plain=True, heading="first",
             row_styles=styles)
    )  # fmt: skip
    for warning in unknown_env(dict(os.environ)):
        console.print(f"[yellow]warning:[/] {escape(warning)}")


def register(app: typer.Typer) -> None:
    app.add_typer(config_app)
