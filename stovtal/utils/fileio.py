"""Atomic file writes: a killed job never leaves a half-written file behind.

Every writer goes to a temporary file ``.<name>.<8 random characters>.tmp`` in the
destination's directory, flushes and fsyncs it, then ``os.replace``-s it over the
destination (atomic on POSIX). The file gets the mode an ordinary ``open`` would give it
(``0o666`` less the process's umask), so results on a shared file system are as readable
as the user's other files. A kill between creating and renaming the temporary leaves it
behind; :func:`remove_stale_temporaries` removes such files (the work-directory lock calls it
when no other process can be writing, see :mod:`stovtal.utils.workdir_lock`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tempfile
from collections.abc import Iterator
from typing import IO, Any

import numpy as np

__all__ = ["atomic_open", "atomic_write_bytes", "atomic_write_json", "atomic_save_npy", "read_json",
           "remove_stale_temporaries"]

_TEMP_RE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")  # tempfile.mkstemp's names as atomic_open makes them


def _umask() -> int:
    """The process's umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # not thread-safe for the instant it is changed; only without /proc
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file next to ``path``; on clean exit it replaces ``path``."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open supports modes 'w' and 'wb', got {mode!r}")
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes it 0600
        with open(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = None) -> None:
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=indent)


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


class _DuplicateKey(ValueError):
    pass


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise _DuplicateKey(dup)
    return d


def read_json(path: str | os.PathLike, unique_keys: bool = False) -> Any:
    """Load a JSON file; errors name the file.

    ``unique_keys``: a key repeated in one object (e.g. a video id given twice, of which JSON
    keeps only the last copy) is an error naming the key, instead of a silent loss."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f, object_pairs_hook=_unique_pairs if unique_keys else None)
    except _DuplicateKey as exc:
        raise ValueError(f"{path}: the key {exc.args[0]!r} appears twice in one object (a video id "
                         "must appear once; JSON would keep only the last copy)") from None
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise OSError(f"{path}: cannot read ({exc})") from exc


def remove_stale_temporaries(root: str | os.PathLike) -> int:
    """Remove the temporaries of :func:`atomic_open` under ``root`` (recursively); returns how
    many. Call it only when no other process can be writing under ``root``."""
    n = 0
    for directory, _, files in os.walk(os.fspath(root)):
        for name in files:
            if _TEMP_RE.match(name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(directory, name))
                    n += 1
    return n
