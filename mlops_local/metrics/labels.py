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

    A value that had to be changed (characters replaced, spaces trimmed, or shortened) keeps a hash of
    the original as its suffix, so two names that clean to the same text ("a b" and "a_b", or two long
    names sharing a prefix) stay two series.
    """
    original = "" if value is None else str(value)
    text = original.strip()
    if not text:
        return UNKNOWN
    cleaned = _UNSAFE.sub("_", text)
    if cleaned == original and len(cleaned) <= MAX_LABEL_LENGTH:
        return cleaned
    digest = hashlib.sha1(original.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]
    return f"{cleaned[:MAX_LABEL_LENGTH - _HASH_CHARS - 1]}-{digest}"
