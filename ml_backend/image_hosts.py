"""Which image URLs the backend may fetch: origins (scheme, host, port), never bare hostnames.

A hostname alone would admit every port of that host (Redis on 6379 beside Label Studio on 80),
so an entry admits only the ports it names or the scheme's default.
"""

from __future__ import annotations

from urllib.parse import urlparse

DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str, int]


def origins(entry: str) -> set[Origin]:
    """What an allow-list entry admits: `https://host:8443` exactly that origin; a bare
    `host[:port]` both schemes on that port, or each on its default port."""
    given = urlparse(entry if "://" in entry else f"//{entry}")
    schemes = [given.scheme] if given.scheme else list(DEFAULT_PORTS)
    host = (given.hostname or "").lower()
    return {(s, host, given.port or DEFAULT_PORTS.get(s, 0)) for s in schemes}


def origin_of(url: str) -> Origin:
    """The origin of an absolute http(s) URL; ValueError for an invalid port."""
    parsed = urlparse(url)
    port = parsed.port or DEFAULT_PORTS[parsed.scheme]
    return parsed.scheme, (parsed.hostname or "").lower(), port


def shown(url: object, limit: int = 120) -> str:
    """`url` fit for an error message or a log line: without user:password, one line, short
    (task data may hold a credential or a megabyte-long data: URL)."""
    text = str(url)
    at, scheme_end = text.find("@"), text.find("://")
    if at > scheme_end >= 0 and "/" not in text[scheme_end + 3:at]:
        text = text[:scheme_end + 3] + "***@" + text[at + 1:]
    text = text.encode("utf-8", "backslashreplace").decode().replace("\n", "\\n")
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"
