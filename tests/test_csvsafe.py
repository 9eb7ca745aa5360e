"""CSV exports neutralize formula cells."""

from __future__ import annotations

import csv
import io

import pytest

from prosaas_core.csvsafe import neutralize, write_rows


@pytest.mark.parametrize("cell", ["=1+1", "+1", "-2+3", "@SUM(A1)", "\t=x", "\r=x"])
def test_formula_cells_are_quoted(cell):
    assert neutralize(cell) == "'" + cell


@pytest.mark.parametrize("cell", ["Ann", "a=b", "", None, -5, 3.5, "+"[1:]])
def test_other_cells_are_unchanged(cell):
    assert neutralize(cell) == cell


def test_write_rows_round_trip():
    out = io.StringIO()
    n = write_rows(out, ["name", "phone"], [['=HYPERLINK("http://x")', "+15551234567"]])
    assert n == 1
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows == [["name", "phone"], ['\'=HYPERLINK("http://x")', "'+15551234567"]]
