"""The `scalple` command: a thin typer shell over the library; each command lives in its module."""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console
from rich.markup import escape

from scalple import __version__
from scalple.errors import ScalpleError


def _new_app() -> typer.Typer:
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
    app.callback()(_root)
    return app


# Each module defines `register(app)`; add a line here to add a command.
COMMANDS = {
    "serve": "scalple.cli.serve",
    "gap-check": "scalple.cli.gapcheck",
    "config": "scalple.cli.config_cmd",
    "demo": "scalple.cli.demo",
    "verify": "scalple.cli.verify",
    "keys": "scalple.cli.keys",
    "people": "scalple.cli.people",
    "dsar": "scalple.cli.dsar",
    "index": "scalple.cli.index",
    "anomalies": "scalple.cli.anomalies",
}
COMMAND_MODULES = tuple(COMMANDS.values())


def _version(value: bool) -> None:
    if value:
        typer.echo(f"scalple {__version__}")
        raise typer.Exit()


def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Scalple: a PostgreSQL audit proxy that records who ran every statement."""


def build_app(modules: tuple[str, ...] = COMMAND_MODULES) -> typer.Typer:
    app = _new_app()
    for name in modules:
        importlib.import_module(name).register(app)
    return app


def __getattr__(name: str) -> typer.Typer:
    """`scalple.cli.main.app`, the whole command tree, built on first use."""
    if name == "app":
        return build_app()
    raise AttributeError(name)


def main() -> None:
    # Load only the command asked for: the proxy then does not carry DuckDB, pyarrow and
    # psycopg (the other commands' libraries) in memory, and a one-off `scalple dsar` does not
    # pay for importing every other command first. Help and completion load them all.
    named = COMMANDS.get(sys.argv[1]) if len(sys.argv) > 1 else None
    modules = (named,) if named else COMMAND_MODULES
    try:
        build_app(modules)()
    except ScalpleError as exc:
        # Messages quote config ([ledger]) and SQL: print them as text, never as markup.
        Console(stderr=True, soft_wrap=True).print(
            f"[bold red]scalple:[/] {escape(str(exc))}", highlight=False
        )
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
