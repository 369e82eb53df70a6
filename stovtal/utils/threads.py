"""The default intra-op thread count, sized for a CPU that other jobs may share.

torch starts one intra-op (OpenMP) thread per core it sees. Each parallel region ends in a
barrier that waits for its slowest thread, so when other jobs keep the cores busy a preempted
thread stalls the whole region for a scheduler time slice, and the waiting threads spin and take
CPU from everyone. :func:`default_num_threads` therefore counts only the CPUs left idle by the
other jobs: the CPUs this process may run on (affinity mask, cgroup CPU quota) minus the
1-minute load average, at least 1. ``tools/thread_study.py`` measures the effect.
"""

from __future__ import annotations

import math
import os

__all__ = ["available_cpus", "default_num_threads", "set_num_threads"]


def _cgroup_cpu_limit(path: str = "/sys/fs/cgroup/cpu.max") -> float | None:
    """CPUs allowed by a cgroup v2 quota (``"max 100000"`` = none), or None."""
    try:
        with open(path, encoding="ascii") as f:
            quota, period = f.read().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(float(quota) / float(period), 1.0)
    except (ValueError, ZeroDivisionError):
        return None


def available_cpus() -> int:
    """CPUs this process may use: the affinity mask, capped by a cgroup CPU quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    if limit is not None:
        n = min(n, math.floor(limit))
    return max(n, 1)


def default_num_threads(cpus: int | None = None, load: float | None = None) -> int:
    """``available_cpus() - load`` rounded to the nearest integer, within ``[1, cpus]``.

    ``load`` is the 1-minute load average (runnable processes, including this one's threads if
    they already run: call this at start-up). On an idle machine this is torch's own default
    (one thread per CPU); with the cores taken by other jobs it is 1.
    """
    cpus = available_cpus() if cpus is None else cpus
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = 0.0
    return int(min(cpus, max(1, math.floor(cpus - load + 0.5))))


def set_num_threads(num_threads: int) -> int:
    """``torch.set_num_threads``: ``num_threads`` if > 0, else :func:`default_num_threads`.
    Returns the count set."""
    import torch

    n = num_threads if num_threads > 0 else default_num_threads()
    torch.set_num_threads(n)
    return n
