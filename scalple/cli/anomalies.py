"""`scalple anomalies`: who in the ledger behaves unlike themselves and unlike their peers.

Exit status: 0 nothing flagged, 1 something flagged, 2 the ledger cannot be read (missing,
unreadable, failing verification) or the input is unusable.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from scalple import config as cfg
from scalple.errors import ScalpleError

FORMATS = ("table", "json", "html")


class _Unusable(ScalpleError):
    """Anomalies over a ledger that cannot be read or trusted: exit 2, never 1 (flagged)."""


def anomalies(
    ledger: Path | None = typer.Option(
        None, help="Ledger directory \\[default: `ledger` setting]."
    ),
    since: str = typer.Option("30d", help="Judge days from: 30d, 6mo, 2w, 1y ago, or a date."),
    until: str | None = typer.Option(None, help="Until this date (inclusive) or time (UTC)."),
    actor: str | None = typer.Option(None, "--actor", "-a", help="Only this actor's findings."),
    fmt: str = typer.Option("table", "--format", "-f", help="table, json or html."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write to FILE instead of stdout."),
    public_key: Path | None = typer.Option(
        None, "--public-key", help="Trusted public key (PEM) \\[default: signing.pub in key_dir]."
    ),
    verify: str = typer.Option(
        "quick", help="quick: checkpoints now, event hashes of new data; full: everything."
    ),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="TOML config file \\[env SCALPLE_CONFIG]."
    ),
) -> None:
    """Profile each actor per day and flag days unlike their own history and their peers'.

    The [watch] rules decide (scalple config show lists them); findings are ranked by score
    and cite the event ids behind them, which scalple dsar --actor shows.
    """
    try:
        if fmt not in FORMATS:
            raise _Unusable(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
        if verify not in ("quick", "full"):
            raise _Unusable(f"--verify must be quick or full, not {verify!r}")
        from scalple.watch.investigate import investigate
        from scalple.watch.render import report_html, report_json, report_table

        settings = cfg.load(config, {"ledger": str(ledger) if ledger else None})
        try:
            report = investigate(
                settings,
                settings.ledger_dir,
                since=since,
                until=until,
                actor=actor,
                public_key=public_key,
                mode=verify,  # type: ignore[arg-type]
            )
        except ScalpleError as exc:
            raise _Unusable(str(exc)) from exc
    except ScalpleError as exc:
        if fmt == "json":
            typer.echo(json.dumps({"result": "error", "error": str(exc)}, indent=2))
            raise typer.Exit(2) from None
        raise _Unusable(str(exc)) from None
    if fmt == "json":
        _emit(json.dumps(report_json(report), indent=2), out)
    elif fmt == "html":
        _emit(report_html(report), out)
    else:
        _table(report_table(report), out)
    raise typer.Exit(1 if report.findings else 0)


def _emit(text: str, out: Path | None) -> None:
    if out is None:
        typer.echo(text)
        return
    out.write_text(text + ("" if text.endswith("\n") else "\n"))
    Console(stderr=True).print(f"wrote {out}", highlight=False)


def _table(renderable: object, out: Path | None) -> None:
    if out is None:
        Console(highlight=False).print(renderable)
        return
    with out.open("w") as f:
        Console(file=f, width=200, highlight=False).print(renderable)


def register(app: typer.Typer) -> None:
    app.command()(anomalies)
