"""The intra-op CPU thread count of a run: the ``num_threads`` key (``--threads`` of the tools).

Settings:

- ``"auto"`` (the default): as many threads as there are free cores, at least 1. The cores
  are those this process may run on (``os.sched_getaffinity``), limited by a cgroup CPU quota
  (``cpu.max``), by ``OMP_NUM_THREADS`` when the environment sets it, and shared evenly among
  the processes of one ``torchrun`` node (``LOCAL_WORLD_SIZE``). The load is the number of
  those cores kept busy by other processes, measured from ``/proc/stat`` over
  :data:`SAMPLE_S` seconds while this process sleeps (the 1-minute load average where
  ``/proc/stat`` cannot be read). A core counts as free when less than a quarter of it is
  busy: ``threads = floor(cores - load + 0.25)``, within ``[1, cores]``.
- an integer ``n >= 1``: exactly ``n`` threads.
- ``0``: torch's own count (one per core, whatever the load).

Why: torch's OpenMP workers spin at the end of each parallel region. Beside other jobs on the
same cores a spinning worker takes the slice its preempted partner needs, and every region
waits for the scheduler: the default base training went from ~1 s to 87-181 s per epoch
beside one other job on 2 cores, while 1 thread lost far less. Fewer threads than free cores
costs little; more costs up to two orders of magnitude. The count is chosen once per process
(at the start of a run, before its own work adds to the load).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

AUTO = "auto"
#: seconds over which the busy time of the cores is sampled
SAMPLE_S = 0.3
#: a core busy less than this fraction of the time counts as free
FREE_SLACK = 0.25

_applied: tuple[Any, int] | None = None


def check_setting(value: Any) -> str | None:
    """Why ``value`` is not a valid thread setting (``None`` when it is)."""
    if value == AUTO:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be 'auto' or an integer >= 0 (0: torch's own count), got {value!r}"
    if value < 0:
        return f"must be 'auto' or an integer >= 0 (0: torch's own count), got {value}"
    return None


def parse_setting(text: str | int, key: str = "--threads") -> str | int:
    """A thread setting from the command line (``"auto"`` or a count); ``ValueError`` naming
    ``key`` when invalid."""
    value: Any = text
    if isinstance(text, str) and text.strip().lstrip("-").isdigit():
        value = int(text)
    msg = check_setting(value)
    if msg:
        raise ValueError(f"{key}: {msg}")
    return value


def _cgroup_quota(path: str = "/sys/fs/cgroup/cpu.max") -> float | None:
    """CPUs allowed by the cgroup v2 quota of this process (``None`` when unlimited/unknown)."""
    try:
        with open(path, encoding="ascii") as f:
            quota, period = f.read().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return int(quota) / int(period)
    except (ValueError, ZeroDivisionError):
        return None


def usable_cores(environ: dict[str, str] | None = None) -> tuple[set[int], int, list[str]]:
    """The CPUs this process may run on, how many threads they allow, and what limited that
    (each limit a short text for the log)."""
    env = os.environ if environ is None else environ
    try:
        cpus = set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = set(range(os.cpu_count() or 1))
    n, limits = len(cpus), []
    quota = _cgroup_quota()
    if quota is not None and math.ceil(quota) < n:
        n = max(1, math.ceil(quota))
        limits.append(f"cgroup quota {quota:g}")
    local = env.get("LOCAL_WORLD_SIZE", "")
    if local.isdigit() and int(local) > 1:
        n = max(1, n // int(local))
        limits.append(f"{local} processes on this node")
    omp = env.get("OMP_NUM_THREADS", "")
    if omp.isdigit() and 0 < int(omp) < n:
        n = int(omp)
        limits.append(f"OMP_NUM_THREADS={omp}")
    return cpus, n, limits


def _cpu_times(cpus: Iterable[int], path: str = "/proc/stat") -> dict[int, tuple[int, int]]:
    """``{cpu: (busy, total)}`` clock ticks since boot, from ``/proc/stat``'s ``cpuN`` lines."""
    wanted = {f"cpu{c}": c for c in cpus}
    out: dict[int, tuple[int, int]] = {}
    with open(path, encoding="ascii") as f:
        for line in f:
            name, *fields = line.split()
            if name in wanted:
                ticks = [int(x) for x in fields[:8]]  # user nice system idle iowait irq softirq steal
                idle = ticks[3] + ticks[4]
                out[wanted[name]] = (sum(ticks) - idle, sum(ticks))
    return out


def busy_cores(cpus: set[int], sample_s: float = SAMPLE_S, path: str = "/proc/stat") -> tuple[float, str]:
    """How many of ``cpus`` other processes keep busy (0 .. ``len(cpus)``), and the source.

    The busy share of each core over ``sample_s`` seconds (this process sleeps meanwhile),
    summed; the 1-minute load average (capped at ``len(cpus)``) where ``path`` is unreadable.
    """
    try:
        before = _cpu_times(cpus, path)
        time.sleep(sample_s)
        after = _cpu_times(cpus, path)
    except (OSError, ValueError, IndexError):
        before = after = {}
    busy = 0.0
    seen = 0
    for c, (b1, t1) in after.items():
        if c in before and t1 > before[c][1]:
            busy += (b1 - before[c][0]) / (t1 - before[c][1])
            seen += 1
    if seen:
        return busy * len(cpus) / seen, f"{path} over {sample_s:g} s"
    try:
        return min(float(len(cpus)), os.getloadavg()[0]), "1-min load average"
    except OSError:
        return 0.0, "unknown (taken as 0)"


def auto_threads(cores: int, load: float) -> int:
    """``floor(cores - load + FREE_SLACK)`` within ``[1, cores]``: the free cores."""
    return int(min(cores, max(1, math.floor(cores - load + FREE_SLACK))))


def choose_threads(setting: Any, key: str = "num_threads") -> tuple[int | None, str]:
    """The thread count of ``setting`` (``None``: leave torch's own) and the line to log."""
    msg = check_setting(setting)
    if msg:
        raise ValueError(f"{key}: {msg}")
    if setting == 0:
        return None, f"{key}=0: torch's own thread count"
    if setting != AUTO:
        return int(setting), f"{key}={setting}"
    cpus, cores, limits = usable_cores()
    load, source = busy_cores(cpus)
    n = auto_threads(cores, load)
    limited = f" ({', '.join(limits)})" if limits else ""
    return n, f"{key}=auto: {cores} cores{limited}, load {load:.2f} ({source})"


def apply_threads(setting: Any, key: str = "num_threads", log: Callable[[str], None] | None = print) -> int:
    """Set torch's intra-op thread count from ``setting``; returns the count in use.

    The choice is made once per process: a later call with the same setting keeps it (and
    logs nothing), so the stages of one run share one count. ``log`` receives
    ``"using N threads: ..."`` once.
    """
    global _applied
    import torch

    if _applied is not None and _applied[0] == setting:
        if _applied[1] > 0:
            torch.set_num_threads(_applied[1])
        return torch.get_num_threads()
    n, why = choose_threads(setting, key)
    if n is not None:
        torch.set_num_threads(n)
    _applied = (setting, n or 0)
    used = torch.get_num_threads()
    if log is not None:
        log(f"using {used} thread{'s' if used != 1 else ''}: {why}")
    return used


def add_threads_flag(parser: Any) -> None:
    """``--threads`` (default ``auto``) on an ``argparse`` parser; apply it with
    :func:`apply_threads_flag`."""
    parser.add_argument("--threads", default=AUTO,
                        help="intra-op CPU threads: 'auto' (the free cores; default), a count, "
                             "or 0 (torch's own count)")


def apply_threads_flag(args: Any, log: Callable[[str], None] | None = None) -> int:
    """Validate and apply ``args.threads`` (:func:`add_threads_flag`); errors name ``--threads``."""
    import sys

    if log is None:
        def log(s: str) -> None:
            print(s, file=sys.stderr)
    return apply_threads(parse_setting(args.threads, "--threads"), key="--threads", log=log)
