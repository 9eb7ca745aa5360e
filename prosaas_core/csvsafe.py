"""CSV exports that a spreadsheet will not execute (public: every export uses this).

A cell starting with ``=``, ``+``, ``-``, ``@`` (or a tab or carriage return, which some
spreadsheets skip before looking) is read as a formula by Excel, LibreOffice and Google Sheets:
``=HYPERLINK(...)`` in a lead's name would run on the operator's machine. Such a cell is
written with a leading single quote, which the spreadsheet shows as text.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import Any, TextIO

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralize(value: Any) -> Any:
    """`value`, made inert when it is a string a spreadsheet would run as a formula. Numbers
    are left alone (``-5`` as an int is a number, not a formula)."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def write_rows(out: TextIO, header: Iterable[str], rows: Iterable[Iterable[Any]]) -> int:
    """Write `header` and `rows` as CSV to `out`, every cell neutralized; the row count."""
    writer = csv.writer(out)
    writer.writerow([neutralize(h) for h in header])
    n = 0
    for row in rows:
        writer.writerow([neutralize(cell) for cell in row])
        n += 1
    return n
