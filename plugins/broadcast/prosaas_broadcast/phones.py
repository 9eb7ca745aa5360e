"""Phone numbers to E.164 with `phonenumbers`; the default region applies to national numbers."""

from __future__ import annotations

import phonenumbers


def to_e164(raw: str | None, region: str) -> str | None:
    """`raw` as ``+15551234567``, or None when it is missing or not a valid number."""
    if not raw or not raw.strip():
        return None
    try:
        number = phonenumbers.parse(raw.strip(), region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
