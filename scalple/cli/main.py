"""The `scalple` command: a thin typer shell over the library; each command lives in its module."""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console
from rich.markup import escape

from scalple import __version__
from scalple.errors import ScalpleError

app = typer.Typer(
    name="scalple",
    help="Scalple: a PostgreSQL audit proxy that records who ran every statement.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    # Our completions are generated into completions/ (scripts/gen_docs.py); typer's dynamic
    # ones would start Python on every TAB and conflict with them.
    add_completion=False,
)

# Each module defines `register(app)`; add a line here to add a command.
COMMAND_MODULES = (
    "scalple.cli.serve",
    "scalple.cli.gapcheck",
    "scalple.cli.config_cmd",
    "scalple.cli.demo",
    "scalple.cli.verify",
    "scalple.cli.keys",
    "scalple.cli.dsar",
    "scalple.cli.index",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"scalple {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Scalple: a PostgreSQL audit proxy that records who ran every statement."""


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main() -> None:
    try:
        app()
    except ScalpleError as exc:
        # Messages quote config ([ledger]) and SQL: print them as text, never as markup.
        Console(stderr=True, soft_wrap=True).print(
            f"[bold red]scalple:[/] {escape(str(exc))}", highlight=False
        )
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
