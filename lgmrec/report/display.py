"""How the book shows a table: every row (no pandas truncation), inside the content column, with
its data as a downloadable CSV, numbers formatted for reading (integers as integers).

A :class:`Table` renders as HTML in a notebook (``_repr_html_``): a caption, a link to its CSV
and the table in a box that scrolls vertically when it is long. The CSV is written to
``$LGMREC_BOOK_DOWNLOADS`` (set by :mod:`lgmrec.book` to the staged book's ``_static/downloads``,
which Sphinx copies into the built site) or, outside a book build, to a temporary folder.
"""

from __future__ import annotations

import html
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

DOWNLOADS_ENV = "LGMREC_BOOK_DOWNLOADS"
SCROLL_ROWS = 30  # longer tables scroll inside a box (every row is there)
NBSP = "\u00a0"
DASH = "–"


def escape(text: Any) -> str:
    return html.escape(str(text), quote=True)


def downloads_dir() -> Path:
    folder = os.environ.get(DOWNLOADS_ENV)
    path = Path(folder) if folder else Path(tempfile.gettempdir()) / "lgmrec-book-downloads"
    path.mkdir(parents=True, exist_ok=True)
    return path


def relative_href(path: Path) -> str:
    """The link to ``path`` from the page being built (a notebook runs in its own folder)."""
    return Path(os.path.relpath(Path(path).resolve(), Path.cwd().resolve())).as_posix()


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-").lower()


def write_csv(frame: pd.DataFrame, name: str, index: bool = True) -> Path:
    """Write atomically (two pages may offer the same table while they execute side by side)."""
    path = downloads_dir() / f"{safe_name(name)}.csv"
    handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        frame.to_csv(temporary, index=index)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


def setup_display() -> None:
    """Pandas shows every row and column of any frame a page displays (no "..." truncation)."""
    pd.set_option("display.max_rows", None)
    pd.set_option("display.max_columns", None)
    pd.set_option("display.max_colwidth", None)


# ---------------------------------------------------------------------------- number formats


def is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def fmt_value(value: Any) -> str:
    """A hyperparameter value as written in the grid: 64 (not 64.0), 0.5, 1e-05, text as is."""
    if is_missing(value):
        return DASH
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return repr(float(value))  # 0.5, 1e-05, 0.0: a float stays recognisable as one
    if isinstance(value, (list, tuple)):
        return ",".join(fmt_value(v) for v in value)
    return str(value)


def _rounded(value: Any, digits: int) -> float:
    """``value`` rounded to ``digits`` decimals, a negative value that rounds to zero as 0.0 (not -0.0)."""
    return round(float(value), digits) + 0.0  # -0.0 + 0.0 is 0.0


def fmt_num(value: Any, digits: int = 4) -> str:
    if is_missing(value):
        return DASH
    return f"{_rounded(value, digits):.{digits}f}"


def fmt_short(value: Any, digits: int = 1) -> str:
    """A number rounded to ``digits`` decimals without trailing zeros: 0.125, 13.5, 1024; never "-0"."""
    if is_missing(value):
        return DASH
    if not math.isfinite(float(value)):
        return str(float(value))
    text = f"{_rounded(value, digits):.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def fmt_signed(value: Any, digits: int = 4) -> str:
    if is_missing(value):
        return DASH
    text = f"{float(value):+.{digits}f}"
    return text.replace("-", "−")


def fmt_pct(value: Any, digits: int = 1) -> str:
    if is_missing(value) or not math.isfinite(float(value)):
        return DASH
    return (f"{float(value):+.{digits}f}{NBSP}%").replace("-", "−")


def fmt_ci(low: Any, high: Any, digits: int = 4) -> str:
    if is_missing(low) or is_missing(high):
        return DASH
    return f"[{fmt_signed(low, digits)},{NBSP}{fmt_signed(high, digits)}]"


def fmt_p(p: Any) -> str:
    if is_missing(p):
        return DASH
    p = float(p)
    if p >= 0.001:
        return f"{p:.3f}"
    return f"{p:.1e}".replace("-", "−")


def fmt_mean_sd(mean: Any, sd: Any, digits: int = 4) -> str:
    if is_missing(mean):
        return DASH
    if is_missing(sd):
        return fmt_num(mean, digits)
    return f"{float(mean):.{digits}f}{NBSP}±{NBSP}{float(sd):.{digits}f}"


def fmt_int(value: Any) -> str:
    if is_missing(value):
        return DASH
    return str(int(round(float(value))))


def fmt_range(values: Iterable[Any]) -> str:
    """Integers as "7" or "5–9" (min–max)."""
    numbers = [int(v) for v in values if not is_missing(v)]
    if not numbers:
        return DASH
    low, high = min(numbers), max(numbers)
    return str(low) if low == high else f"{low}–{high}"


def integer_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Float columns whose values are all whole numbers become nullable integers (CSV: 64, not 64.0)."""
    frame = frame.copy()
    for column in frame.columns:
        values = frame[column]
        if pd.api.types.is_float_dtype(values) and values.notna().any():
            finite = values.dropna()
            if np.isfinite(finite).all() and (finite == finite.round()).all() and finite.abs().max() < 2 ** 53:
                frame[column] = values.astype("Int64")
    return frame


# ---------------------------------------------------------------------------- tables


class Html:
    """Raw HTML that a notebook displays as such."""

    def __init__(self, text: str):
        self.text = text

    def _repr_html_(self) -> str:
        return self.text

    def __str__(self) -> str:
        return self.text


@dataclass
class Table:
    """A table to show in full and offer as CSV.

    ``frame``: what is shown (cells already formatted, or numbers formatted with ``digits``);
    ``data``: what the CSV holds (default: ``frame``); ``name``: the CSV's file name and the
    table's ``data-table`` attribute (tests find tables by it); ``bold``: cells to set in bold
    (a boolean frame shaped like ``frame``)."""

    frame: pd.DataFrame
    name: str
    caption: str = ""
    data: pd.DataFrame | None = None
    index: bool = True
    bold: pd.DataFrame | None = None
    digits: int = 4
    note: str = ""
    raw_columns: tuple = ()  # columns holding HTML (links, inline figures): not escaped
    csv_path: Path | None = field(default=None, init=False)

    def cell_text(self, value: Any) -> str:
        if isinstance(value, (float, np.floating)) and not is_missing(value):
            return fmt_num(value, self.digits) if not float(value).is_integer() else fmt_int(value)
        if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
            return str(int(value))
        return fmt_value(value) if not isinstance(value, str) else value

    def html(self) -> str:
        frame = self.frame
        data = self.data if self.data is not None else frame
        self.csv_path = write_csv(integer_columns(data), self.name, index=self.index)
        shown = frame.copy()
        for column in shown.columns:
            if column not in self.raw_columns:
                shown[column] = shown[column].map(self.cell_text).map(escape).astype(object)
            else:
                shown[column] = shown[column].fillna("").astype(str).astype(object)
        if self.bold is not None:
            mask = self.bold.reindex(index=shown.index, columns=shown.columns).fillna(False).astype(bool)
            shown = shown.mask(mask, "<b>" + shown + "</b>")
        shown.index = shown.index.map(lambda v: escape(fmt_value(v)) if not isinstance(v, tuple)
                                      else tuple(escape(fmt_value(x)) for x in v))
        shown.columns = shown.columns.map(lambda v: escape(v) if not isinstance(v, tuple)
                                          else tuple(escape(x) for x in v))
        if isinstance(shown.index, pd.MultiIndex):
            shown.index.names = [escape(n) if n else n for n in shown.index.names]
        elif shown.index.name:
            shown.index.name = escape(shown.index.name)
        table = shown.to_html(escape=False, index=self.index, border=0, na_rep=DASH,
                              classes=["dataframe", "lgmrec"], max_rows=None, max_cols=None, notebook=False)
        scroll = " lgmrec-scroll" if len(frame) > SCROLL_ROWS else ""
        caption = escape(self.caption)
        link = f'<a class="lgmrec-csv" href="{escape(relative_href(self.csv_path))}" download>CSV</a>'
        note = f'<div class="lgmrec-note">{escape(self.note)}</div>' if self.note else ""
        rows = f"{len(frame)} row{'s' if len(frame) != 1 else ''}"
        return (f'<div class="lgmrec-table" data-table="{escape(safe_name(self.name))}" data-rows="{len(frame)}">'
                f'<div class="lgmrec-caption">{caption} <span class="lgmrec-meta">({rows}; {link})</span></div>'
                f'<div class="lgmrec-box{scroll}">{table}</div>{note}</div>')

    def _repr_html_(self) -> str:
        return self.html()


class Tables(list):
    """Several tables (and HTML pieces) shown one after another."""

    def _repr_html_(self) -> str:
        parts = []
        for item in self:
            if hasattr(item, "_repr_html_"):
                parts.append(item._repr_html_())
            else:
                parts.append(f"<p>{escape(item)}</p>")
        return "\n".join(parts)


def heading(text: str) -> Html:
    return Html(f'<p class="lgmrec-subheading"><b>{escape(text)}</b></p>')


def paragraph(text: str) -> Html:
    return Html(f"<p>{escape(text)}</p>")


def download_links(paths: Sequence[tuple[str, Path]]) -> Html:
    items = "".join(f'<li><a href="{escape(relative_href(p))}" download>{escape(label)}</a> '
                    f'({p.stat().st_size / 1024:.0f} KiB)</li>' for label, p in paths)
    return Html(f'<ul class="lgmrec-downloads">{items}</ul>')


__all__ = ["DOWNLOADS_ENV", "Html", "Table", "Tables", "download_links", "escape", "fmt_ci", "fmt_int",
           "fmt_mean_sd", "fmt_num", "fmt_p", "fmt_pct", "fmt_range", "fmt_short", "fmt_signed", "fmt_value", "heading",
           "integer_columns", "paragraph", "write_csv"]
