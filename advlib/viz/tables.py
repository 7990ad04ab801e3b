"""Tables as tables: one helper for every table the book shows, ours beside the paper's.

:func:`table` returns a :class:`Table`, which a notebook displays as an HTML table (in Jupyter, Colab and
the built book alike), prints as aligned text, and writes as a GitHub-flavoured Markdown table
(:meth:`Table.to_markdown`, for the generated results page). ``paper=`` puts a paper's table beside ours
in the same output, captioned as the paper's, so a reproduced number never stands in for the paper's.
:func:`rate` writes an accuracy or success rate with its 95% Clopper-Pearson interval when it was
measured on fewer than 1,000 examples.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import torch

from ..metrics import confidence_interval, outcome_counts

INTERVAL_BELOW = 1000  # a rate measured on fewer examples than this is written with its 95% interval

_CSS = """<style>
.advlib-tables{display:flex;flex-wrap:wrap;gap:1.2em 2em;align-items:flex-start;margin:.4em 0 1em}
.advlib-table{margin:0;max-width:100%;overflow-x:auto}
.advlib-table table{border-collapse:collapse;font-size:.88em;margin:0}
.advlib-table caption{caption-side:top;text-align:left;font-weight:600;padding:0 0 .35em;font-size:.92em}
.advlib-table th,.advlib-table td{padding:.22em .7em;border-bottom:1px solid #d0d7de;text-align:right;
 white-space:nowrap}
.advlib-table th{border-bottom:2px solid #8c959f;background:transparent}
.advlib-table th:first-child,.advlib-table td:first-child{text-align:left}
.advlib-table.paper table{background:#f6f8fa}
.advlib-table.paper caption{color:#57606a}
.advlib-table .source{font-weight:400;font-style:italic}
.advlib-table ol{font-size:.8em;color:#57606a;margin:.3em 0 0;padding-left:1.4em;max-width:44em}
</style>"""


class Table:
    """A table of ``rows`` under ``columns``, with a ``caption``, footnotes ``notes`` and optionally the
    paper's own table (``paper``, a :class:`Table` made by :func:`paper_table`) shown beside it.

    Displayed by Jupyter as HTML (``_repr_html_``), printed as aligned text (``str``), written as a
    Markdown table by :meth:`to_markdown`. ``rows`` is a list of rows, each a sequence of cells (any
    value; numbers are written with ``str``, so format them first), as many cells as ``columns``.
    """

    def __init__(self, rows: Sequence[Sequence], columns: Sequence[str], *, caption: str | None = None,
                 notes: Sequence[str] = (), source: str | None = None, paper: Table | None = None):
        columns = [str(c) for c in columns]
        if not columns:
            raise ValueError("a table needs at least one column")
        rows = [list(row) for row in rows]
        for i, row in enumerate(rows):
            if len(row) != len(columns):
                raise ValueError(f"row {i} has {len(row)} cells for {len(columns)} columns {columns}: {row}")
        if paper is not None and (not isinstance(paper, Table) or paper.source is None):
            raise TypeError("paper= takes the paper's table as made by viz.paper_table(rows, columns, source=...)")
        self.rows = [[_cell(value) for value in row] for row in rows]
        self.columns = columns
        self.caption = caption
        self.notes = [str(note) for note in notes]
        self.source = source
        self.paper = paper

    # --- HTML (Jupyter, Colab, the book) ---------------------------------------------------------
    def _figure_html(self) -> str:
        label = ""
        if self.source is not None:
            label = f"The paper's: <span class='source'>{html.escape(self.source)}</span>"
            if self.caption:
                label += f". {html.escape(self.caption)}"
        elif self.caption:
            label = html.escape(self.caption)
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in self.rows)
        notes = ("<ol>" + "".join(f"<li>{html.escape(n)}</li>" for n in self.notes) + "</ol>") if self.notes else ""
        kind = "advlib-table paper" if self.source is not None else "advlib-table"
        caption = f"<caption>{label}</caption>" if label else ""
        return (f"<div class='{kind}'><table>{caption}<thead><tr>{head}</tr></thead>"
                f"<tbody>{body}</tbody></table>{notes}</div>")

    def _repr_html_(self) -> str:
        parts = [self._figure_html()] + ([self.paper._figure_html()] if self.paper is not None else [])
        return _CSS + "<div class='advlib-tables'>" + "".join(parts) + "</div>"

    # --- text and Markdown -------------------------------------------------------------------------
    def _title(self) -> str:
        if self.source is not None:
            return f"The paper's: {self.source}" + (f". {self.caption}" if self.caption else "")
        return self.caption or ""

    def _text(self) -> str:
        widths = [max(len(c), *(len(row[j]) for row in self.rows)) for j, c in enumerate(self.columns)]
        line = lambda cells: "  ".join(  # noqa: E731
            (v.ljust(w) if j == 0 else v.rjust(w)) for j, (v, w) in enumerate(zip(cells, widths, strict=True)))
        lines = ([self._title()] if self._title() else []) + [line(self.columns), line(["-" * w for w in widths])]
        lines += [line(row) for row in self.rows]
        lines += [f"  {k}. {note}" for k, note in enumerate(self.notes, 1)]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self._text() + (f"\n\n{self.paper._text()}" if self.paper is not None else "")

    __repr__ = __str__

    def _repr_markdown_(self) -> str:  # kept by benchmarks/reproduce.py; HTML is shown where both exist
        return self.to_markdown()

    def to_markdown(self) -> str:
        """The table (and the paper's, after it) as GitHub-flavoured Markdown, with caption and notes."""
        def one(t: Table) -> str:
            esc = lambda v: v.replace("|", "\\|")  # noqa: E731
            lines = ([f"**{esc(t._title())}**", ""] if t._title() else [])
            lines += ["| " + " | ".join(map(esc, t.columns)) + " |", "|" + " --- |" * len(t.columns)]
            lines += ["| " + " | ".join(map(esc, row)) + " |" for row in t.rows]
            if t.notes:
                lines += [""] + [f"{k}. {note}" for k, note in enumerate(t.notes, 1)]
            return "\n".join(lines)
        return one(self) + (f"\n\n{one(self.paper)}" if self.paper is not None else "")


def _cell(value) -> str:
    if isinstance(value, torch.Tensor):
        value = value.item()
    return "" if value is None else str(value)


def table(rows: Sequence[Sequence], columns: Sequence[str], *, caption: str | None = None,
          notes: Sequence[str] = (), paper: Table | None = None) -> Table:
    """Our table: ``rows`` under ``columns``, captioned (say what was measured: dataset, images, profile),
    with footnotes ``notes``; ``paper=paper_table(...)`` shows the paper's table beside it, labelled as the
    paper's. Display it (last line of a cell, or ``display(...)``): it renders as HTML in Jupyter, Colab
    and the book.
    """
    return Table(rows, columns, caption=caption, notes=notes, paper=paper)


def paper_table(rows: Sequence[Sequence], columns: Sequence[str], *, source: str, caption: str | None = None,
                notes: Sequence[str] = ()) -> Table:
    """A paper's table, as the paper reports it: ``source`` names it (e.g. "Szegedy et al. 2013, Table 1,
    MNIST") and is written in its caption ("The paper's: ..."); ``notes`` carries its footnotes. Pass it
    to :func:`table` as ``paper=`` to show it beside ours, or display it alone.
    """
    if not source or not str(source).strip():
        raise ValueError("a paper's table needs its source, e.g. 'Szegedy et al. 2013, Table 1'")
    return Table(rows, columns, caption=caption, notes=notes, source=str(source))


def rate(successes, trials: int | None = None, *, digits: int = 1) -> str:
    """A rate as text, ``"62.0%"``, with its 95% Clopper-Pearson interval when it was measured on fewer than
    1,000 examples: ``"62.0% [55.0, 68.6]"`` (:func:`advlib.metrics.confidence_interval`).

    ``successes`` is a count with ``trials``, or a boolean (or 0/1) tensor of per-example outcomes, whose
    sum and length are used.
    """
    successes, trials = outcome_counts(successes, trials)
    low, high = confidence_interval(successes, trials)
    text = f"{100 * successes / trials:.{digits}f}%"
    if trials < INTERVAL_BELOW:
        text += f" [{100 * low:.{digits}f}, {100 * high:.{digits}f}]"
    return text
