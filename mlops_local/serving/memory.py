"""Keep the idle model service's memory to the model and its libraries: give freed heap back to the OS.

Loading a version allocates far more than it keeps (the downloaded skops file read and unpacked, the
training dataset read for the prediction buckets), and glibc keeps freed heap for reuse: without a
trim the service idles ~55 MB above what it holds. pyarrow (pandas' string columns, the CSV reader)
allocates from its own mimalloc pool, which keeps ~20 MB after one dataset read and ignores
``malloc_trim``: the service gives it the system allocator, so the same trim returns that too.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # mallopt parameter numbers (malloc.h)
TRIM_THRESHOLD = 1 << 20  # free() returns the heap top above 1 MB instead of glibc's adaptive (up to 64 MB)


def _libc() -> ctypes.CDLL | None:
    """glibc, or None elsewhere (musl, macOS): these calls are glibc's."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def tune() -> None:
    """Before a load: a fixed heap trim threshold, and pyarrow on the system allocator (imported here, not
    at start: a service with no model does not hold it)."""
    libc = _libc()
    if libc is not None:
        # A fixed threshold also turns off glibc's growth of it after large frees (a model load).
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    try:
        import pyarrow
    except ImportError:
        return
    pyarrow.set_memory_pool(pyarrow.system_memory_pool())


def release() -> None:
    """After a model load: collect garbage and return the free heap pages to the OS."""
    gc.collect()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
