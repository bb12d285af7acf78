"""`scalple dsar`: every access to one person's data, or everything one actor did.

Exit status: 0 answered (an empty answer too), 1 the ledger fails verification (no answer),
2 unusable input (unknown subject column, bad date, no ledger or key).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from scalple import config as cfg
from scalple.dsar.errors import BadQuery
from scalple.dsar.export import render_html
from scalple.dsar.render import (
    actor_csv,
    actor_json,
    actor_table,
    dumps,
    subject_csv,
    subject_json,
    subject_table,
)
from scalple.dsar.run import Request, run_actor, run_subject
from scalple.errors import ScalpleError
from scalple.tabular import report_console

FORMATS = ("table", "json", "csv", "html")


def _emit(text: str, out: Path | None) -> None:
    if out is None:
        typer.echo(text, nl=not text.endswith("\n"))
        return
    out.write_text(text)
    Console(stderr=True).print(f"wrote {out}", highlight=False)


def dsar(
    subject: list[str] = typer.Option(
        [], "--subject", "-s", help="COLUMN=VALUE of a subject column; repeat for more identifiers."
    ),
    actor: str | None = typer.Option(None, "--actor", "-a", help="Everything this actor did."),
    since: str | None = typer.Option(
        None, help="From: 6mo, 30d, 2w, 12h, 1y ago, or a date (UTC)."
    ),
    until: str | None = typer.Option(None, help="Until this date (inclusive) or time (UTC)."),
    fmt: str = typer.Option("table", "--format", "-f", help="table, json, csv or html."),
    json_out: bool = typer.Option(False, "--json", help="Same as --format json."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write to FILE instead of stdout."),
    ledger: Path | None = typer.Option(
        None, help="Ledger directory \\[default: `ledger` setting]."
    ),
    public_key: Path | None = typer.Option(
        None, "--public-key", help="Trusted public key (PEM) \\[default: signing.pub in key_dir]."
    ),
    verify: str = typer.Option(
        "quick", help="quick: checkpoints now, event hashes of new data; full: everything."
    ),
    limit: int = typer.Option(100, help="Actor view: newest statements, bulk reads, errors shown."),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="TOML config file \\[env SCALPLE_CONFIG]."
    ),
) -> None:
    """Who accessed one person's data (--subject), or what one person did (--actor).

    Answers cover the whole ledger (sealed segments and the live journal), say which range,
    and say whether it verifies; a ledger failing verification gets no answer (exit 1).
    """
    fmt = "json" if json_out else fmt
    try:
        if fmt not in FORMATS:
            raise BadQuery(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
        if verify not in ("quick", "full"):
            raise BadQuery(f"--verify must be quick or full, not {verify!r}")
        if bool(subject) == bool(actor):
            raise BadQuery("give --subject COLUMN=VALUE (one or more) or --actor ID, not both")
        settings = cfg.load(config, {"ledger": str(ledger) if ledger else None})
        req = Request(settings.ledger_dir, public_key, verify, since, until)  # type: ignore[arg-type]
        if subject:
            answer = run_subject(settings, req, subject, proof=fmt == "html")
            _subject(answer, fmt, out, req.ledger)
        else:
            assert actor is not None
            _actor(run_actor(settings, req, actor, limit), fmt, out)
    except ScalpleError as exc:
        if fmt == "json":
            typer.echo(json.dumps({"result": "error", "error": str(exc)}, indent=2))
            raise typer.Exit(exc.exit_code) from None
        raise


def _subject(answer: object, fmt: str, out: Path | None, ledger: Path) -> None:
    from scalple.dsar.query import SubjectAnswer

    assert isinstance(answer, SubjectAnswer)
    if fmt == "json":
        _emit(dumps(subject_json(answer)), out)
    elif fmt == "csv":
        _emit(subject_csv(answer), out)
    elif fmt == "html":
        _emit(render_html(answer, ledger), out)
    else:
        _table(subject_table(answer), out)


def _actor(answer: object, fmt: str, out: Path | None) -> None:
    from scalple.dsar.query import ActorAnswer

    assert isinstance(answer, ActorAnswer)
    if fmt == "json":
        _emit(dumps(actor_json(answer)), out)
    elif fmt == "csv":
        _emit(actor_csv(answer), out)
    elif fmt == "html":
        raise BadQuery("--format html is the subject report; use table, json or csv with --actor")
    else:
        _table(actor_table(answer), out)


def _table(renderable: object, out: Path | None) -> None:
    """Laid out for the terminal's width; into a pipe or --out file, see `report_console`."""
    if out is None:
        report_console().print(renderable)
        return
    with out.open("w") as f:
        report_console(f).print(renderable)


def register(app: typer.Typer) -> None:
    app.command()(dsar)
