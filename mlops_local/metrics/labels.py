"""Label values the exporter may publish: bounded length, a charset safe in PromQL regexes and URLs."""

from __future__ import annotations

import hashlib
import re

MAX_LABEL_LENGTH = 64
UNKNOWN = "unknown"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")
_HASH_CHARS = 8


def clean_label(value: object) -> str:
    """``value`` as a label value: unsafe characters -> ``_``, at most 64 characters, never empty.

    A value that has to be shortened keeps a hash of the original as its suffix, so two long names
    that share a prefix stay two series.
    """
    text = "" if value is None else str(value).strip()
    if not text:
        return UNKNOWN
    cleaned = _UNSAFE.sub("_", text)
    if len(cleaned) <= MAX_LABEL_LENGTH:
        return cleaned
    digest = hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]
    return f"{cleaned[:MAX_LABEL_LENGTH - _HASH_CHARS - 1]}-{digest}"
