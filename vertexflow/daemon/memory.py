"""The C allocator's free memory, given back to the system between a daemon's runs (glibc only).

A run allocates and frees on the event loop and on worker threads (the
journal's, file I/O's). glibc's malloc gives each thread that allocates
while another does an arena of its own (up to eight per core) and keeps
what a run freed in them for reuse: spread over many arenas, in pages that
are not all free, it is not returned to the system, and a daemon that runs
a job every second shows a resident size that creeps up for hours while
the memory in use stays flat (``benchmarks/results/20261207-daemon-soak-60.md``).
So the daemon

* caps the arenas at :data:`ARENAS` when it starts (:func:`limit_arenas`),
  which leaves less free memory stranded in arenas nobody allocates from;
* after each run, returns the free pages of every arena to the system
  (:func:`trim`, glibc's ``malloc_trim``: about a millisecond).

Elsewhere (musl, macOS) both do nothing.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any

#: C allocator arenas: fewer stranded free pages, and the daemon's threads rarely allocate at the same time
ARENAS = 2
#: glibc's mallopt parameter for the most arenas
M_ARENA_MAX = -8


def _glibc() -> Any | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        lib = ctypes.CDLL(None)  # the process's own symbols: the C library it runs on
    except OSError:
        return None
    # musl has mallopt but no malloc_trim; both are glibc's when malloc_trim is there
    return lib if hasattr(lib, "malloc_trim") and hasattr(lib, "mallopt") else None


_LIBC = _glibc()


def available() -> bool:
    """Whether the C library is glibc, whose allocator these calls tune."""
    return _LIBC is not None


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Cap the arenas of the C allocator (takes effect for threads that have none yet); False if not glibc."""
    return _LIBC is not None and bool(_LIBC.mallopt(M_ARENA_MAX, arenas))


def trim() -> bool:
    """Return the allocator's free pages to the system; True if some were."""
    return _LIBC is not None and bool(_LIBC.malloc_trim(0))
