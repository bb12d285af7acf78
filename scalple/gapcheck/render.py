"""Show a gap-check report: rich text for people, JSON for machines."""

from __future__ import annotations

import json

from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.text import Text

from scalple.gapcheck.judge import Report, Severity

_BADGE: dict[Severity, tuple[str, str]] = {
    "gap": ("GAP", "bold red"),
    "warning": ("WARN", "yellow"),
    "unknown": ("UNSEEN", "magenta"),
    "info": ("INFO", "blue"),
    "ok": ("OK", "green"),
}
_HEADLINE = {"gap": "bold red", "unknown": "bold magenta", "no_gap": "bold green"}
_ORDER: dict[Severity, int] = {"gap": 0, "warning": 1, "unknown": 2, "info": 3, "ok": 4}


def to_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2)


def render(report: Report, console: Console) -> None:
    console.print(
        f"gap-check of database [bold]{escape(report.database)}[/] "
        f"(PostgreSQL {escape(report.server_version)}) as [bold]{escape(report.checked_as)}[/], "
        f"{report.sessions} other client session{'s' if report.sessions != 1 else ''}"
    )
    console.print()
    for f in sorted(report.findings, key=lambda f: _ORDER[f.severity]):
        word, style = _BADGE[f.severity]
        console.print(f"[{style}]{word:<6}[/] {escape(f.title)}")
        for line in f.evidence:
            console.print(Padding(Text(f"- {line}"), (0, 0, 0, 7), expand=False))
        if f.note:
            console.print(Padding(Text(f"Note: {f.note}", style="dim"), (0, 0, 0, 7), expand=False))
        if f.fix and f.severity != "ok":
            console.print(
                Padding(Text.assemble(("Fix: ", "bold"), f.fix), (0, 0, 0, 7), expand=False)
            )
    if report.unseen:
        console.print()
        console.print(f"[bold]Could not see[/] (as {escape(report.checked_as)}):")
        for line in report.unseen:
            console.print(Padding(Text(f"- {line}"), (0, 0, 0, 2), expand=False))
    console.print()
    console.print(f"[{_HEADLINE[report.verdict]}]{escape(report.summary)}[/]")
