"""`scalple demo`: see the attribution gap, and Scalple closing it, in a minute."""

from __future__ import annotations

import typer
from rich.console import Console

from scalple.demo.run import Demo


def demo(
    keep: bool = typer.Option(
        False,
        "--keep",
        help="Leave everything running and print the connection strings; "
        "Ctrl-C then stops and cleans up.",
    ),
) -> None:
    """Run a throwaway PostgreSQL (pgAudit), PgBouncer and Scalple, drive a small workload as
    Alice, Bob and an analyst, and show what pgAudit and Scalple each recorded.

    Needs PostgreSQL server binaries and pgAudit (PgBouncer is optional); cleans up after itself.
    """
    raise typer.Exit(Demo(Console(highlight=False), keep=keep).run())


def register(app: typer.Typer) -> None:
    app.command()(demo)
