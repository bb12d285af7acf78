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
COMMAND_MODULES = (
    "scalple.cli.serve",
    "scalple.cli.gapcheck",
    "scalple.cli.config_cmd",
    "scalple.cli.demo",
    "scalple.cli.verify",
    "scalple.cli.keys",
    "scalple.cli.people",
    "scalple.cli.dsar",
    "scalple.cli.index",
)


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
    # The proxy is a long-running process: load only its command, so it does not carry DuckDB,
    # pyarrow and psycopg (the other commands' libraries) in memory.
    modules = ("scalple.cli.serve",) if sys.argv[1:2] == ["serve"] else COMMAND_MODULES
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
