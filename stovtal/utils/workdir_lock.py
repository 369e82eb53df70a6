"""Advisory locks on a work directory, so two runs never write one directory at once.

A run holds ``fcntl.flock`` on ``DIR/.stovtal.lock`` from start to end:

- an **exclusive** lock for an ordinary run (``python -m stovtal.selftrain``, ``train``,
  ``feel``): a second run on the same directory stops at once with an error naming the holder's
  PID, host and command;
- a **shared** lock for jobs made to run side by side on one directory
  (``selftrain --stage pseudolabel --shard i/n``): any number of them coexist, while an
  ordinary run (exclusive) and such jobs exclude each other.

Under ``torchrun`` the ranks of one job are one run: global rank 0 takes the lock for the job
and tells the other ranks whether it got it (:func:`job_lock`), so every rank stops with the
same error. The lock is released when the process ends, however it ends (the kernel drops
``flock`` locks of a closed file), so a killed run never leaves a stale lock; the lock file
itself stays and holds the last holder's PID, host and command, for the error message.

The holder of the exclusive lock knows no other process writes the directory, so it removes
the temporary files that a killed writer left behind (:func:`stovtal.utils.fileio.remove_stale_temporaries`).

Short critical sections that shared holders must serialise (a stage's check-then-write of its
fingerprint) use :func:`critical_section`, a blocking exclusive lock on a second file.

``flock`` works on local file systems, and across hosts on NFSv4 (Linux emulates it with
byte-range locks) and on Lustre / GPFS mounted with locking on; where the file system ignores
locks the runs are not protected, as before.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator

from .cli import UserError

__all__ = ["LOCK_FILE", "WorkdirBusy", "critical_section", "job_lock", "workdir_lock"]

LOCK_FILE = ".stovtal.lock"
SECTION_FILE = ".stovtal.section.lock"


class WorkdirBusy(UserError):
    """Another run holds the work directory."""


def _holder_pids(fd: int) -> list[int]:
    """PIDs holding a ``flock`` on ``fd``'s file, from ``/proc/locks`` (this host only)."""
    st = os.fstat(fd)
    pids = []
    try:
        with open("/proc/locks", encoding="ascii") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5].rsplit(":", 1)[-1] == str(st.st_ino):
                    pids.append(int(parts[4]))
    except (OSError, ValueError):
        return []
    return sorted(set(pids) - {os.getpid()})


def _describe_holder(fd: int) -> str:
    """The holder(s) of the lock on ``fd``: the record the last holder wrote, checked against
    ``/proc/locks`` where the holder runs on this host."""
    try:
        rec = json.loads(os.pread(fd, 65536, 0).decode() or "{}")
    except (OSError, ValueError):
        rec = {}
    pids = _holder_pids(fd)
    pid = rec.get("pid")
    if pid and (pid in pids or not pids):
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(rec.get("since", 0)))
        kind = "--shard job" if rec.get("mode") == "shared" else "run"
        desc = f"PID {pid} on {rec.get('host', '?')} ({kind} since {since}: {rec.get('command', '?')})"
        others = [p for p in pids if p != pid]
        return desc + (f" and PID {', '.join(map(str, others))}" if others else "")
    if pids:
        return f"PID {', '.join(map(str, pids))} on {socket.gethostname()}"
    return "another process"


@contextlib.contextmanager
def workdir_lock(workdir: str | os.PathLike, shared: bool = False) -> Iterator[None]:
    """Hold the work directory's lock (exclusive, or ``shared``) for the ``with`` block.

    Raises :class:`WorkdirBusy` naming the holder if the lock is taken. With the exclusive lock
    the temporary files left by killed writers are removed first."""
    from .fileio import remove_stale_temporaries

    workdir = os.path.abspath(os.fspath(workdir))
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkdirBusy(
                f"{workdir} is in use by {_describe_holder(fd)}; wait for it to end or use another "
                f"--workdir (lock file {path})") from None
        rec = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
               "mode": "shared" if shared else "exclusive", "command": " ".join(sys.argv)}
        data = json.dumps(rec).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        if not shared:
            remove_stale_temporaries(workdir)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def job_lock(workdir: str | os.PathLike, shared: bool = False) -> Iterator[None]:
    """:func:`workdir_lock` for one job of one or many processes: under ``torch.distributed``
    global rank 0 takes it and every rank raises the same :class:`WorkdirBusy` if it failed."""
    from . import distributed as D

    if not D.is_distributed():
        with workdir_lock(workdir, shared):
            yield
        return
    with contextlib.ExitStack() as stack:
        msg = None
        if D.is_main_process():
            try:
                stack.enter_context(workdir_lock(workdir, shared))
            except WorkdirBusy as exc:
                msg = str(exc)
        msg = D.broadcast_object(msg)
        if msg is not None:
            raise WorkdirBusy(msg)
        yield


@contextlib.contextmanager
def critical_section(workdir: str | os.PathLike) -> Iterator[None]:
    """Wait for, then hold, a short exclusive lock on ``workdir`` (blocking; for steps that
    processes sharing the directory must not interleave, e.g. a check-then-write)."""
    path = os.path.join(os.fspath(workdir), SECTION_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
