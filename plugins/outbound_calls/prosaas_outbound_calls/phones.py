"""Phone numbers: E.164 normalization (``phonenumbers``) and the do-not-call rule for tags."""

from __future__ import annotations

from typing import Any

import phonenumbers

#: a lead whose ``tags`` (a JSON list of strings) holds one of these is never called
DNC_TAGS = frozenset({"do_not_call", "do-not-call", "dnc"})


def normalize(raw: str | None, region: str = "US") -> str | None:
    """`raw` as E.164 (``+14155550100``), or None when it is not a valid number."""
    if not raw or len(raw) > 32:
        return None
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def strict_e164(raw: str) -> str:
    """`raw` when it already is a valid E.164 number; ValueError otherwise (for caller ids)."""
    if not isinstance(raw, str) or not raw.startswith("+"):
        raise ValueError("must be an E.164 number such as +14155550100")
    number = normalize(raw)
    if number is None or number != raw:
        raise ValueError("must be a valid E.164 number such as +14155550100")
    return number


def tagged_do_not_call(tags: Any) -> bool:
    """Whether a lead's tags mark it do-not-call."""
    if not isinstance(tags, list):
        return False
    return any(isinstance(t, str) and t.strip().lower() in DNC_TAGS for t in tags)
