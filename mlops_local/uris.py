"""Credentials in URIs (``http://user:password@host``): masked wherever a URI is shown, sent as basic auth."""

from __future__ import annotations

import base64
import re
import urllib.parse

MASK = "***"
# scheme://user:password@ -- the password runs to the last "@" before the path, so one holding a raw
# "@" is masked whole.
_CREDENTIALS = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s]*):[^/?#\s]*@")


def mask_credentials(text: str) -> str:
    """``text`` with the password of every URI in it replaced by ``***`` (config, logs, run links)."""
    return _CREDENTIALS.sub(rf"\g<head>:{MASK}@", text)


def link_base(uri: str) -> str:
    """``uri`` for a link a person clicks: no user:password (the browser asks for them; a masked
    password in a link would only fail to log in)."""
    return split_credentials(uri)[0]


def split_credentials(url: str) -> tuple[str, str | None]:
    """(``url`` without user:password, the HTTP basic Authorization header value or None)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    host = parts.netloc.rpartition("@")[2]
    user = urllib.parse.unquote(parts.username or "")
    password = urllib.parse.unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return urllib.parse.urlunsplit(parts._replace(netloc=host)), f"Basic {token}"
