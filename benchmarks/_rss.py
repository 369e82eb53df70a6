"""Peak resident memory of this process, for the benchmarks (Linux ``/proc``).

``getrusage(...).ru_maxrss`` is not usable here: Linux carries it over ``exec``, so a child
process started by a large parent (pytest holding a 400 MB result, a torchrun launcher)
reports the parent's peak. ``VmHWM`` in ``/proc/self/status`` belongs to the process's own
address space, and writing ``5`` to ``/proc/self/clear_refs`` resets it to the current RSS.
Elsewhere both fall back to ``ru_maxrss``.
"""

from __future__ import annotations

import resource


def _status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int:
    """Peak RSS of this process (since start, or since :func:`reset_peak_rss`)."""
    v = _status_bytes("VmHWM")
    return v if v is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes() -> int:
    v = _status_bytes("VmRSS")
    return v if v is not None else peak_rss_bytes()


def reset_peak_rss() -> int:
    """Reset the peak to the current RSS where the kernel allows; returns the current RSS."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        pass
    return current_rss_bytes()
