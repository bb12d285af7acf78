"""Findings for people (a rich table, or an HTML page to hand over) and for machines (JSON)."""

from __future__ import annotations

import html
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from scalple.dsar.render import coverage_json, verification_json
from scalple.watch.findings import day_text
from scalple.watch.investigate import Report

STYLE = {"high": "bold red", "medium": "yellow", "low": "dim"}


def report_json(report: Report) -> dict[str, Any]:
    return {
        "findings": [f.as_json() for f in report.findings],
        "ledger": coverage_json(report.coverage),
        "verification": verification_json(report.verification),
    }


def _head(report: Report) -> str:
    n = len(report.findings)
    return (
        f"{n} finding{'s' if n != 1 else ''} over {report.actor_days:,} actor-days, "
        f"{day_text(report.first_day)} to {day_text(report.last_day)}"
    )


def report_table(report: Report) -> Group:
    head = Text.assemble(
        (_head(report) + "\n", "bold"),
        f"verification: {report.verification.summary()}",
    )
    if not report.findings:
        return Group(head, Text("nothing flagged"))
    table = Table(expand=True)
    for col in ("score", "severity", "actor", "rule", "why", "evidence"):
        table.add_column(col, overflow="fold")
    for f in report.findings:
        ids = ", ".join(f.event_ids[:3]) + (" …" if len(f.event_ids) > 3 else "")
        table.add_row(
            f"{f.score:.2f}",
            Text(f.severity, style=STYLE[f.severity]),
            f.actor,
            f.rule,
            f.summary,
            f"{f.evidence.get('statements', 0)} statements: {ids}",
        )
    return Group(head, table)


def report_html(report: Report) -> str:
    e = html.escape
    rows = "\n".join(
        f"<tr class='{e(f.severity)}'><td>{f.score:.2f}</td><td>{e(f.severity)}</td>"
        f"<td>{e(f.actor)}</td><td>{e(f.rule)}</td><td>{e(f.summary)}</td>"
        f"<td><details><summary>{f.evidence.get('statements', 0)} statements</summary>"
        f"<code>{e(' '.join(f.event_ids))}</code></details></td></tr>"
        for f in report.findings
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Scalple anomalies</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}}
.high td:nth-child(2){{color:#b00;font-weight:bold}}.medium td:nth-child(2){{color:#a60}}
code{{font-size:12px;word-break:break-all}}</style></head><body>
<h1>Scalple anomalies</h1>
<p>{e(_head(report))}</p>
<p>Ledger: {e(str(coverage_json(report.coverage)))}<br>
Verification: {e(report.verification.summary())}</p>
<table><tr><th>score</th><th>severity</th><th>actor</th><th>rule</th><th>why</th>
<th>evidence (event ids: scalple dsar --actor shows them)</th></tr>
{rows}
</table></body></html>
"""
