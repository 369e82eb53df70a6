"""Resumable work: identities and completion markers, the one mechanism of every resumable unit.

A resumable unit of work (a ``selftrain`` stage, a FEEL iteration, a shard of pseudo-labels or
extracted features, a shard of the synthetic world's web videos, the world itself) is recorded
by a **marker**: a small JSON file, written atomically (temp file, fsync, rename), that holds
the unit's **identity** under a key: a :func:`fingerprint` of the settings its outputs depend
on, or those settings themselves. Reading a marker (:func:`read_marker`) gives one of three
answers:

* absent -> ``None``: not done (an interrupted attempt left only complete, atomically written
  files behind, which the next attempt may reuse);
* present with an accepted identity -> its record: done (or, for a pin, the same work);
* present with another identity -> an error naming the file: the directory holds other work,
  which is never silently mixed with this.

Two uses of a marker:

* **completion marker**, written *after* the unit's outputs (:func:`write_marker`): present =
  outputs complete (FEEL's ``state.json`` per iteration, a shard record of
  :class:`~stovtal.utils.shards.ShardManifest`, a web shard's annotation file, ``world.json``);
* **pin**, written *before* the work starts (:func:`pin`): every later attempt (a rerun, another
  rank, another ``--shard`` job) checks it first (``selftrain``'s ``stage.json``, a manifest's
  ``plan.json``).

A unit may accept several identities (``accepted``): the one it writes first, then those that
work directories of earlier versions recorded for the same settings, so they keep resuming.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

from .fileio import atomic_write_json, read_json

__all__ = ["fingerprint", "pin", "read_marker", "write_marker"]

Describe = Callable[[Any], str]


def fingerprint(obj: Any) -> str:
    """Stable short hash (16 hex digits) of a JSON-able object: what a unit's outputs depend on."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_marker(path: str | os.PathLike, accepted: Sequence[Any], *, key: str = "fingerprint",
                identity: Callable[[dict[str, Any]], Any] | None = None,
                mismatch: str | Describe = "made by other work",
                error: type[Exception] = ValueError) -> dict[str, Any] | None:
    """The marker's record if it exists and its identity is one of ``accepted``; None if absent.

    Args:
        accepted: identities that count as this work (JSON values, compared after a JSON round
            trip of the record: tuples as lists).
        key: the record's entry holding the identity; ``identity`` (optional) derives it from
            the record instead (e.g. the part of a stored config that decides the outputs).
        mismatch: the error message after ``"<path>: "`` (or a function of the stored record
            giving it) when the identity is another.
        error: the exception type raised then.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        return None
    rec = read_json(path)
    found = _identity(rec, key, identity)
    if found is _MISSING or found not in list(accepted):
        msg = mismatch(rec) if callable(mismatch) else mismatch
        raise error(f"{path}: {msg}")
    return rec


def write_marker(path: str | os.PathLike, record: dict[str, Any], indent: int | None = None) -> None:
    """Write ``record`` (its identity included) atomically, creating the folder."""
    atomic_write_json(os.fspath(path), record, indent=indent)


def pin(path: str | os.PathLike, record: dict[str, Any], accepted: Sequence[Any] | None = None, *,
        key: str = "fingerprint", mismatch: str | Describe = "made by other work",
        error: type[Exception] = ValueError, indent: int | None = None) -> dict[str, Any]:
    """Pin a folder's work to ``record[key]``: write ``record`` if the marker is absent, else check
    that the stored identity is accepted (``accepted``, default ``[record[key]]``); returns the
    stored record. Racing writers write identical content, so the last rename wins harmlessly."""
    stored = read_marker(path, [record[key]] if accepted is None else accepted, key=key,
                         mismatch=mismatch, error=error)
    if stored is not None:
        return stored
    write_marker(path, record, indent=indent)
    return record


_MISSING = object()


def _identity(rec: Any, key: str, identity: Callable[[dict[str, Any]], Any] | None) -> Any:
    if not isinstance(rec, dict):
        return _MISSING
    if identity is not None:
        return identity(rec)
    return rec.get(key, _MISSING)
