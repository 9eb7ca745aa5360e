"""Credentials out of URLs before they are logged or printed."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
#: query parameters that carry a secret (``?password=`` in a Redis or PostgreSQL URL)
_SECRET_PARAMS = re.compile(r"pass|secret|token|key", re.IGNORECASE)


def mask_url(url: str | None) -> str:
    """`url` with its password (and any secret query parameter) replaced by ``***``:
    ``redis://:hunter2@host:6379/0`` -> ``redis://:***@host:6379/0``. Anything that does not
    parse as a URL is masked whole after its scheme, never printed as is."""
    if not url:
        return ""
    text = str(url)
    try:
        parts = urlsplit(text)
        netloc, query = parts.netloc, parts.query
        if "@" in netloc:
            userinfo, _, hostport = netloc.rpartition("@")
            user, sep, _password = userinfo.partition(":")
            if sep:  # a lone userinfo is a user name: kept
                netloc = f"{user}:{MASK}@{hostport}"
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            if any(_SECRET_PARAMS.search(k) for k, _ in pairs):
                query = urlencode(
                    [(k, MASK if _SECRET_PARAMS.search(k) else v) for k, v in pairs], safe="*"
                )
        if (netloc, query) == (parts.netloc, parts.query):
            return text
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        scheme = text.split("://", 1)[0] if "://" in text else "url"
        return f"{scheme}://{MASK}"


def mask_urls_in(text: str) -> str:
    """Every ``scheme://user:password@`` inside free text (an error message) masked."""
    return re.sub(r"(\b[a-zA-Z][\w+.-]*://)([^/@\s:]*):([^/@\s]*)@", rf"\1\2:{MASK}@", text)
