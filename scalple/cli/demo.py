"""`scalple demo`: see the attribution gap, and Scalple closing it, in a minute."""

from __future__ import annotations

import typer

from scalple.demo.run import Demo
from scalple.tabular import report_console


def demo(
    keep: bool = typer.Option(
        False,
        "--keep",
        help="Leave everything running and print the connection strings; "
        "Ctrl-C then stops and cleans up.",
    ),
) -> None:
    """See the attribution gap, and Scalple closing it, on a throwaway database.

    Starts PostgreSQL (pgAudit), PgBouncer (transaction pooling) and Scalple on 127.0.0.1, drives a
    small workload as Alice, Bob and an analyst, shows what pgAudit and Scalple each recorded, runs
    verify and dsar, and cleans up. Needs PostgreSQL server binaries and pgAudit.
    """
    raise typer.Exit(Demo(report_console(), keep=keep).run())


def register(app: typer.Typer) -> None:
    app.command()(demo)
