"""How a run and every result show themselves in a notebook: one short ``repr`` line and a
small HTML card (``_repr_html_``): a title, a few facts, and the first rows of each table,
everything HTML-escaped. It sits in the runs layer so that :class:`~interp.runs.store.Run`
and every result above it can use it.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

ROWS_SHOWN = 5  # rows of each table a card shows
COLUMNS_SHOWN = 10  # columns of each table a card shows
TEXT_LIMIT = 80  # characters of one fact's value a card shows


def short(value: Any, limit: int = TEXT_LIMIT) -> str:
    """``value`` as text, cut to ``limit`` characters (an ellipsis marks the cut).

    Args:
        value: Anything.
        limit: The most characters kept.

    Returns:
        The text.
    """
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def html_card(
    title: str,
    facts: Sequence[tuple[str, Any]],
    tables: Mapping[str, pd.DataFrame] | None = None,
    rows: int = ROWS_SHOWN,
) -> str:
    """A small HTML card: ``title``, a two-column table of ``facts``, and per table its shape
    and first ``rows`` rows (at most :data:`COLUMNS_SHOWN` columns). Every text is escaped.

    Args:
        title: The card's heading, e.g. ``"Run run-tiny"``.
        facts: (name, value) pairs, shown in order; values cut to :data:`TEXT_LIMIT`
            characters.
        tables: Tables shown by name (their first rows only).
        rows: Rows shown of each table.

    Returns:
        The HTML fragment.
    """
    esc = html.escape
    parts = [f"<div class='interp-card'><strong>{esc(title)}</strong>", "<table>"]
    parts += [
        f"<tr><th style='text-align:left'>{esc(str(name))}</th><td>{esc(short(value))}</td></tr>"
        for name, value in facts
    ]
    parts.append("</table>")
    for name, frame in (tables or {}).items():
        shown = frame.iloc[:rows, :COLUMNS_SHOWN]
        more = "" if frame.shape[1] <= COLUMNS_SHOWN else f", first {COLUMNS_SHOWN} columns"
        parts.append(
            f"<details><summary>{esc(str(name))}: {frame.shape[0]} rows x {frame.shape[1]} "
            f"columns (first {min(rows, frame.shape[0])} shown{more})</summary>"
        )
        parts.append(_table(shown))
        parts.append("</details>")
    parts.append("</div>")
    return "\n".join(parts)


def _table(frame: pd.DataFrame) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(short(c, 30))}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(short(v, 40))}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return f"<table><tr>{head}</tr>{body}</table>"
