"""`scalple gap-check`: find where a live database cannot say which person ran a statement.

Three steps, kept apart: `gather` reads facts from the server (the only I/O), `judge` turns facts
into findings and a verdict (pure), `render` shows them to people or machines.
"""

from __future__ import annotations

from scalple.gapcheck.facts import Facts, RoleInfo, Session
from scalple.gapcheck.judge import Finding, Report, Severity, Verdict, judge

__all__ = ["Facts", "Finding", "Report", "RoleInfo", "Session", "Severity", "Verdict", "judge"]
