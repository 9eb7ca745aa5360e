"""The text of a job's error: one safe line for the tenant, the traceback for operators.

A failed attempt stores ``"<Type>: <message>"`` on its first line, then a blank line and the
innermost frames of the traceback. The API shows tenants the first line only (`tenant_error`);
``prosaas jobs show`` shows everything. The message on the first line never carries a SQL
statement or its parameters (for a database error it is the driver's first line), and
SQLAlchemy's ``(Background on this error at: https://sqlalche.me/...)`` trailer is dropped
everywhere: it says nothing about the cause.
"""

from __future__ import annotations

import re
import traceback

#: largest error text stored on a job row
MAX_ERROR = 4000
#: longest first (tenant-visible) line
MAX_SUMMARY = 300
#: frames of traceback kept with an error
TRACEBACK_FRAMES = 6

_BACKGROUND = re.compile(r"\s*\(Background on this error at: [^)]*\)")


def strip_background(text: str) -> str:
    """`text` without SQLAlchemy's ``(Background on this error at: ...)`` trailers."""
    return _BACKGROUND.sub("", text)


def summary(exc: BaseException) -> str:
    """``Type: message`` on one line, safe to show the tenant whose job failed: for a SQLAlchemy
    error, the driver's first line without the statement or its parameters."""
    orig = getattr(exc, "orig", None)
    text = strip_background(str(orig if orig is not None else exc)).strip()
    first = text.splitlines()[0].strip() if text else ""
    line = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return line if len(line) <= MAX_SUMMARY else line[: MAX_SUMMARY - 3] + "..."


def operator_text(exc: BaseException) -> str:
    """The stored error: `summary` first, a blank line, then the innermost frames of the
    traceback (for operators), at most `MAX_ERROR` characters."""
    tb = strip_background("".join(traceback.format_exception(exc, limit=-TRACEBACK_FRAMES)))
    head = f"{summary(exc)}\n\n"
    room = MAX_ERROR - len(head)
    # the innermost end of the traceback is the one that finds the bug
    return head + (tb if len(tb) <= room else "..." + tb[-(room - 3) :])


def first_line(error: str) -> str:
    """The summary line of a stored error (for log lines)."""
    lines = strip_background(error).strip().splitlines()
    return lines[0] if lines else ""


def tenant_error(error: str | None) -> str | None:
    """What a tenant sees of a stored error: its summary line only. A row stored before the
    summary line existed (a bare traceback) shows only the exception's type."""
    if not error:
        return error
    lines = strip_background(error).strip().splitlines()
    if not lines:
        return None
    if lines[0].startswith("Traceback (most recent call last)"):
        return lines[-1].split(":", 1)[0].strip()[:MAX_SUMMARY]
    return lines[0][:MAX_SUMMARY]
