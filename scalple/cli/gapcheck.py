"""`scalple gap-check`: show where a live database cannot say which person ran a statement."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from scalple import config as cfg
from scalple.gapcheck.gather import GapCheckError, gather
from scalple.gapcheck.judge import judge
from scalple.gapcheck.render import render, to_json


def gap_check(
    dsn: str = typer.Argument(
        ...,
        metavar="DSN",
        help="Connection string of the database to check, e.g. "
        "postgresql://monitor@db:5432/app (a role with pg_monitor sees everything).",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    proxy_addr: list[str] | None = typer.Option(
        None,
        "--proxy-addr",
        metavar="NETWORK",
        help="Address or network Scalple (or a pooler only Scalple reaches) connects from; "
        "repeat for several \\[env SCALPLE_PROXY_ADDRS].",
    ),
    min_shared_sessions: int = typer.Option(
        3,
        "--min-shared-sessions",
        min=2,
        help="Sessions of one role from one source that make it count as shared.",
    ),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="TOML config file \\[env SCALPLE_CONFIG]."
    ),
) -> None:
    """Check a live database for statements it cannot tie to a person.

    Exit status: 0 no gap, 1 gap found, 2 could not check.
    """
    settings = cfg.load(config, {"proxy_addrs": ",".join(proxy_addr) if proxy_addr else None})
    try:
        facts = gather(dsn, connect_timeout=settings["connect_timeout"])
    except GapCheckError as exc:
        if json_out:
            typer.echo(
                json.dumps(
                    {"verdict": "unknown", "exit_code": exc.exit_code, "error": str(exc)}, indent=2
                )
            )
            raise typer.Exit(exc.exit_code) from exc
        raise
    report = judge(facts, settings["proxy_addrs"], min_shared_sessions=min_shared_sessions)
    if json_out:
        typer.echo(to_json(report))
    else:
        render(report, Console(highlight=False))
    raise typer.Exit(report.exit_code)


def register(app: typer.Typer) -> None:
    app.command("gap-check")(gap_check)
