"""Leads from outside: one lead's fields cleaned, or a CSV file imported as one batch.

Phones are parsed and validated with ``phonenumbers`` and stored in E.164 (``+15551234567``);
numbers without a country code are read in the region given (``PROSAAS_PHONE_REGION``, default
``US``). A CSV is read row by row from a text stream and inserted in batches, so a large file
never sits whole in memory; every bad row is reported with its line number and the good rows
are kept. A CSV of more than ``PROSAAS_IMPORT_BACKGROUND_ROWS`` rows is not imported in the
request: it is staged and imported by an ``import_leads`` job (`prosaas_core.import_job`).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from prosaas_core.errors import ProsaasError
from prosaas_core.models import Lead, LeadImport

if TYPE_CHECKING:
    from prosaas_core.settings import Settings

DEFAULT_REGION = "US"
COLUMNS = ("name", "phone", "email")
NAME_MAX, EMAIL_MAX = 200, 254
#: bad rows kept (in the response and on the batch row) in full; beyond that only counted
#: (200 rows of short messages keep the response well under 64 KB)
MAX_REPORTED_ERRORS = 200
BATCH_SIZE = 500
#: most data rows one CSV import may hold (``PROSAAS_IMPORT_MAX_ROWS``): past it the import is
#: refused whole (413) and nothing is kept
DEFAULT_MAX_ROWS = 1_000_000
MAX_ROWS_ENV = "PROSAAS_IMPORT_MAX_ROWS"
#: an import of more rows than this (``PROSAAS_IMPORT_BACKGROUND_ROWS``) is a background job:
#: at about 50 µs a row (the phone parse), the request then never spends more than a fraction
#: of a second importing, whatever the file's size
DEFAULT_BACKGROUND_ROWS = 5_000
BACKGROUND_ROWS_ENV = "PROSAAS_IMPORT_BACKGROUND_ROWS"

_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class ImportFormatError(ProsaasError):
    """The CSV as a whole cannot be read: no header, no phone/email column, not UTF-8."""


class ImportTooLarge(ImportFormatError):
    """The CSV has more data rows than the configured cap."""


def max_rows(settings: Settings) -> int:
    """``PROSAAS_IMPORT_MAX_ROWS`` (a positive integer), default `DEFAULT_MAX_ROWS`."""
    return settings.get_int(MAX_ROWS_ENV, DEFAULT_MAX_ROWS, minimum=1)


def background_rows(settings: Settings) -> int:
    """``PROSAAS_IMPORT_BACKGROUND_ROWS`` (a positive integer), default 5,000."""
    return settings.get_int(BACKGROUND_ROWS_ENV, DEFAULT_BACKGROUND_ROWS, minimum=1)


def normalize_phone(raw: str, region: str | None = DEFAULT_REGION) -> str:
    """`raw` as an E.164 string; ValueError with a readable reason when it is not a valid number."""
    import phonenumbers

    try:
        number = phonenumbers.parse(raw, region or None)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"phone {raw[:40]!r} is not a phone number ({exc._msg})") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError(f"phone {raw[:40]!r} is not a valid number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def clean_lead(
    name: str | None, phone: str | None, email: str | None, region: str | None = DEFAULT_REGION
) -> tuple[dict[str, Any], list[str]]:
    """The lead's fields, trimmed and normalised, and the list of what is wrong with them."""
    errors: list[str] = []
    if any("\x00" in (v or "") for v in (name, phone, email)):
        # PostgreSQL text cannot hold NUL: refuse it here rather than fail in the database
        return {"name": None, "phone": None, "email": None}, ["a field contains a NUL character"]
    name = (name or "").strip() or None
    phone = (phone or "").strip() or None
    email = (email or "").strip() or None
    if name is not None and len(name) > NAME_MAX:
        errors.append(f"name is longer than {NAME_MAX} characters")
    if phone is not None:
        try:
            phone = normalize_phone(phone, region)
        except ValueError as exc:
            errors.append(str(exc))
    if email is not None:
        if len(email) > EMAIL_MAX or not _EMAIL_RE.match(email):
            errors.append(f"email {email[:80]!r} is not a valid address")
        else:
            email = email.lower()
    if phone is None and email is None and not errors:
        errors.append("a lead needs a phone or an email")
    return {"name": name, "phone": phone, "email": email}, errors


@dataclass
class ImportResult:
    """The outcome of one CSV import (the response body of ``POST /api/leads/import``)."""

    import_id: int
    total_rows: int = 0
    imported: int = 0
    failed: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    errors_truncated: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "import_id": self.import_id,
            "total_rows": self.total_rows,
            "imported": self.imported,
            "failed": self.failed,
            "errors": self.errors,
            "errors_truncated": self.errors_truncated,
        }


def rows_of(reader: Any) -> Iterator[tuple[int, list[str]]]:
    """(first line number, fields) of each non-blank row; csv errors carry their line."""
    while True:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise ImportFormatError(f"line {line}: malformed CSV ({exc})") from None
        if any(cell.strip() for cell in row):
            yield line, row


def header(reader: Any) -> dict[str, int]:
    """The header's column indexes (name, phone, email); ImportFormatError when unusable."""
    try:
        header = next(reader)
    except StopIteration:
        raise ImportFormatError(
            "the CSV is empty: expected a header line name,phone,email"
        ) from None
    except csv.Error as exc:
        raise ImportFormatError(f"line 1: malformed CSV ({exc})") from None
    index: dict[str, int] = {}
    for i, col in enumerate(header):
        key = col.strip().lstrip("\ufeff").lower()
        if key in COLUMNS and key not in index:
            index[key] = i
    if "phone" not in index and "email" not in index:
        raise ImportFormatError(
            f"line 1: the header needs a phone or an email column (columns: {', '.join(COLUMNS)})"
        )
    return index


def too_large(line: int, row_limit: int) -> ImportTooLarge:
    return ImportTooLarge(
        f"line {line}: the CSV has more than {row_limit} rows ({MAX_ROWS_ENV}); "
        "split it into smaller files"
    )


def import_rows(
    session: Session,
    business_id: int,
    import_id: int,
    rows: Iterable[tuple[int, list[str]]],
    cols: dict[str, int],
    result: ImportResult,
    *,
    region: str | None = DEFAULT_REGION,
    batch_size: int = BATCH_SIZE,
) -> None:
    """Clean and insert `rows` (line number, fields) as leads of import `import_id`, adding to
    the counts and bad rows of `result`. Runs in the caller's transaction."""
    pending: list[dict[str, Any]] = []

    def cell(row: list[str], key: str) -> str | None:
        i = cols.get(key)
        return row[i] if i is not None and i < len(row) else None

    for line, row in rows:
        result.total_rows += 1
        fields, errors = clean_lead(
            cell(row, "name"), cell(row, "phone"), cell(row, "email"), region
        )
        if errors:
            result.failed += 1
            if len(result.errors) < MAX_REPORTED_ERRORS:
                result.errors.append({"line": line, "errors": errors})
            else:
                result.errors_truncated = True
            continue
        pending.append(
            {**fields, "business_id": business_id, "import_id": import_id, "source": "csv"}
        )
        if len(pending) >= batch_size:
            session.execute(insert(Lead), pending)
            result.imported += len(pending)
            pending = []
    if pending:
        session.execute(insert(Lead), pending)
        result.imported += len(pending)


def clean_filename(filename: str | None) -> str | None:
    return (filename or "").replace("\x00", "")[:255] or None


def finish_batch(batch_row: LeadImport, result: ImportResult) -> None:
    """Copy `result`'s counts and bad rows onto the batch row, marked completed."""
    batch_row.total_rows = result.total_rows
    batch_row.imported_rows = result.imported
    batch_row.failed_rows = result.failed
    batch_row.errors = result.errors
    batch_row.status = "completed"
