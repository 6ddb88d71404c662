"""Hand freed heap memory back to the operating system when the scoring worker goes idle.

Batches of varying shapes leave glibc's heap full of free but still-resident pages (its mmap threshold rises
after the first big free, so later activations come from the heap): a server's RSS then grows for thousands of
requests before it levels off, well above what it holds. ``malloc_trim`` returns those pages; it costs
milliseconds, so the batcher calls it only once the queue has been empty for a while. Elsewhere (musl, macOS,
Windows) it is a no-op.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable

__all__ = ["release_free_memory"]


def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    trim: Callable[[int], int] | None = getattr(libc, "malloc_trim", None)
    return trim


_TRIM = _malloc_trim()


def release_free_memory() -> bool:
    """Return the heap's free pages to the OS; whether anything was released (False where unsupported)."""
    return _TRIM is not None and bool(_TRIM(0))
