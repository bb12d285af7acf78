"""Output for people that reads well at any width: a table when it fits, one block of
`field: value` lines per row when it does not, so no word is ever split into letters.

In a terminal the width is the terminal's (or COLUMNS). Through a pipe or into a file with
COLUMNS unset there is no width to fit (`report_console`): nothing is wrapped, a table is kept
when it is at most PIPE_TABLE_WIDTH wide as it is, and wider rows become blocks.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Final, Literal

from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

UNBOUNDED: Final = 1 << 20  # the width of a console with no width to fit (see report_console)
PIPE_TABLE_WIDTH: Final = 100  # widest table kept as a table where there is no width to fit
LONG_MIN: Final = 30  # a long column (a statement) narrower than this is hard to read
MIN_VALUE: Final = 20  # narrower than this beside its label, a value goes under it instead


def report_console(file: IO[str] | None = None, *, stderr: bool = False) -> Console:
    """A console for reports: a terminal's width; unbounded into a pipe or file, unless COLUMNS
    gives one (rich's own default there is 80 columns, which squeezes tables for no reader)."""
    console = Console(file=file, stderr=stderr, highlight=False)
    if console.is_terminal or os.environ.get("COLUMNS", "").strip():
        return console
    return Console(file=file, stderr=stderr, highlight=False, width=UNBOUNDED)


Cell = str | Text


@dataclass(frozen=True)
class Column:
    """`long` columns hold free text (a statement): in a table they need LONG_MIN (or their
    longest line, if shorter); in a block they go on lines of their own under their label."""

    name: str
    long: bool = False


class Fields:
    """`label: value` lines, values aligned and wrapped at words under themselves; a long value
    (or any value, when the width leaves too little room beside the labels) goes under its label.
    Plain strings are shown as they are, never read as markup."""

    def __init__(
        self,
        fields: Sequence[tuple[Column | str, Cell]],
        *,
        indent: int = 0,
        style: str = "",
    ) -> None:
        self.fields = [(_column(c), _text(v)) for c, v in fields]
        self.indent = indent
        self.style = style

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width, pad = options.max_width, self.indent
        names = [cell_len(c.name) for c, _ in self.fields if not c.long]
        label = pad + max(names, default=0) + 2
        side_by_side = width - label >= MIN_VALUE
        for col, value in self.fields:
            name = Text(" " * pad + f"{col.name}:", style="bold")
            if col.long or not side_by_side:
                yield name
                yield from _hang(console, value, Text(""), pad + 2, width, self.style)
            else:
                yield from _hang(console, value, name, label, width, self.style)


class Rows:
    """`rows` under `columns`, as a table or as blocks of Fields, whichever the width allows."""

    def __init__(
        self,
        columns: Sequence[Column | str],
        rows: Sequence[Sequence[Cell]],
        *,
        title: str | None = None,
        plain: bool = False,
        heading: Literal["number", "first"] = "number",
        row_styles: Sequence[str] | None = None,
    ) -> None:
        self.columns = [_column(c) for c in columns]
        self.rows = [[_text(cell) for cell in row] for row in rows]
        if any(len(row) != len(self.columns) for row in self.rows):
            raise ValueError("every row needs one cell per column")
        self.title = title
        self.plain = plain  # no box: columns two spaces apart, as `config show` prints
        # A block starts with "── 3 of 7 ──", or with its first field's value (a name).
        self.heading = heading
        self.row_styles = list(row_styles) if row_styles is not None else None

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if self.title:
            yield Text("")  # a titled part of a longer report: set it apart
        widths = self.fit(options.max_width)
        if widths is not None:
            yield self._table(widths)
        else:
            yield from self._blocks(console, options.max_width)

    # -- the choice ---------------------------------------------------------------------------

    def _overhead(self) -> int:
        n = len(self.columns)
        return 2 * (n - 1) if self.plain else 3 * n + 1  # padding (and box lines)

    def _range(self, i: int) -> tuple[int, int]:
        """The narrowest width of column i without splitting a word, and its natural width."""
        col = self.columns[i]
        texts = [Text(col.name), *(row[i] for row in self.rows)]
        words = [cell_len(w) for t in texts for w in t.plain.split()] or [1]
        lines = [cell_len(line) for t in texts for line in t.plain.splitlines()] or [1]
        low, high = max(words), max(lines)
        if col.long:
            low = max(low, min(high, LONG_MIN))
        return low, high

    def fit(self, width: int) -> list[int] | None:
        """Column widths for a table `width` wide, or None when the rows should be blocks."""
        if not self.rows:
            return None
        lows, highs = zip(*(self._range(i) for i in range(len(self.columns))), strict=True)
        if width >= UNBOUNDED:
            natural = sum(highs) + self._overhead()
            return list(highs) if natural <= PIPE_TABLE_WIDTH else None
        room = width - self._overhead()
        if sum(lows) > room:
            return None
        return _share(list(lows), list(highs), room)

    # -- the two forms ------------------------------------------------------------------------

    def _table(self, widths: list[int]) -> Table:
        table = Table(
            title=self.title,
            title_justify="left",
            title_style="bold",
            box=None if self.plain else box.HEAVY_HEAD,
            show_edge=not self.plain,
            pad_edge=not self.plain,
        )
        for col, w in zip(self.columns, widths, strict=True):
            table.add_column(col.name, width=w, overflow="fold")
        for i, row in enumerate(self.rows):
            table.add_row(*row, style=self.row_styles[i] if self.row_styles else None)
        return table

    def _blocks(self, console: Console, width: int) -> RenderResult:
        if self.title:
            yield Text(self.title, style="bold")
        if not self.rows:
            yield Text("(none)", style="dim")
            return
        named = self.heading == "first"
        for n, row in enumerate(self.rows, 1):
            style = self.row_styles[n - 1] if self.row_styles else ""
            yield Text("")
            if named:
                yield from _hang(console, row[0], Text(""), 0, width, style or "bold")
            else:
                yield Text(f"── {n} of {len(self.rows)} ──", style="dim")
            pairs = list(zip(self.columns, row, strict=True))[named:]
            yield Fields(pairs, indent=2 if named else 0, style=style)


def hang(console: Console, first: Cell, value: Cell, width: int | None = None) -> Text:
    """`first`, then `value` wrapped at words beside it, its later lines indented to where it
    began: a listing line whose long last part wraps under itself. `width`: the console's."""
    lead = _text(first)
    lines = _hang(console, _text(value), lead, cell_len(lead.plain), width or console.width, "")
    return Text("\n").join(lines)


def _column(c: Column | str) -> Column:
    return c if isinstance(c, Column) else Column(c)


def _text(cell: Cell) -> Text:
    return cell if isinstance(cell, Text) else Text(cell)


def _share(lows: list[int], highs: list[int], room: int) -> list[int]:
    """Widths from `lows` up towards `highs` within `room`: the columns that need least to stop
    wrapping get it first, so short values stay on one line and long text takes the rest."""
    widths = list(lows)
    spare = room - sum(lows)
    for i in sorted(range(len(widths)), key=lambda i: highs[i] - lows[i]):
        more = min(highs[i] - lows[i], spare)
        widths[i] += more
        spare -= more
    return widths


def _hang(
    console: Console, value: Text, first: Text, indent: int, width: int, style: str
) -> Iterator[Text]:
    """`value` wrapped at words to `width`, its first line after `first` (padded to `indent`),
    the others indented by `indent`. Only a word longer than the whole line is folded."""
    room = max(width - indent, 1)
    lead = first.copy()
    lead.pad_right(indent - cell_len(first.plain))
    lines = [
        wrapped
        for part in value.split("\n", allow_blank=True)
        for wrapped in (part.wrap(console, room, overflow="fold") or [Text("")])
    ] or [Text("")]
    for i, line in enumerate(lines):
        out = lead if i == 0 else Text(" " * indent)
        out.append(line)
        out.rstrip()  # the space a line was broken at, or an empty value's indent
        if style:
            out.stylize(style)
        yield out
