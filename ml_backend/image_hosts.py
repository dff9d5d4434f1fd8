"""Which image URLs the backend may fetch: origins (scheme, host, port), never bare hostnames.

A hostname alone would admit every port of that host (Redis on 6379 beside Label Studio on 80),
so an entry admits only the ports it names or the scheme's default.
"""

from __future__ import annotations

from urllib.parse import urljoin, urlparse

import httpx

DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str, int]


class ImageFetchError(RuntimeError):
    """An image URL is refused, unreachable or too large; the message says which."""


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


def allowed_url(url: str, base: str, allowed: set[Origin]) -> str:
    """`url` made absolute against `base` (Label Studio's URL); ImageFetchError unless its
    origin is `allowed`."""
    if not isinstance(url, str) or not url:
        raise ImageFetchError("task has no image URL")
    absolute = urljoin(base + "/", url) if url.startswith("/") else url
    parsed = urlparse(absolute)
    if parsed.scheme not in ("http", "https"):
        raise ImageFetchError(f"unsupported image URL scheme {parsed.scheme!r}: {shown(url)}")
    try:
        ok = origin_of(absolute) in allowed
    except ValueError:
        raise ImageFetchError(f"image URL has an invalid port: {shown(url)}") from None
    if not ok:
        raise ImageFetchError(
            f"image host {shown(parsed.hostname, 60)!r} is not allowed; add it to IMAGE_HOSTS "
            "to fetch it")
    return absolute


def download(http: httpx.Client, url: str, headers: dict[str, str], limit: int) -> bytes:
    """The body of GET `url`, refused (ImageFetchError) past `limit` bytes or on any error."""
    try:
        with http.stream("GET", url, headers=headers) as resp:
            if resp.status_code != 200:
                raise ImageFetchError(f"GET {shown(url)} answered {resp.status_code}")
            if int(resp.headers.get("content-length") or 0) > limit:
                raise ImageFetchError(f"image {shown(url)} is larger than {limit} bytes")
            chunks, size = [], 0
            for chunk in resp.iter_bytes():
                size += len(chunk)
                if size > limit:
                    raise ImageFetchError(f"image {shown(url)} is larger than {limit} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.HTTPError as exc:
        raise ImageFetchError(f"cannot fetch {shown(url)}: {shown(exc, 200)}") from None
