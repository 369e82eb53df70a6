"""Resumable, shardable work: items -> shards -> per-shard outputs + a manifest.

Web-scale jobs (feature extraction, pseudo-labelling) split a list of item ids
(video ids) into shards and process each shard as one unit of work:

* :class:`ShardPlan` sorts and de-duplicates the ids and cuts them into
  contiguous shards of ``shard_size`` items. The same ids and shard size give
  the same shards on every machine, whatever order the ids came in.
* :meth:`ShardPlan.select` gives one worker its shards. A worker is identified
  by a job spec ``--shard i/n`` (``i`` is 0-based, see :func:`parse_shard_spec`)
  and a rank inside that job (``rank``/``world_size``, e.g. from torchrun, see
  :func:`stovtal.utils.distributed.rank_and_world_size`). Shard ``s`` belongs to global worker
  ``s % (n * world_size)``, where global worker = ``i * world_size + rank``:
  every shard goes to exactly one worker and the load is balanced.
* :class:`ShardManifest` records finished shards, one small JSON file per
  shard (``<dir>/shard-00042.json``, a completion marker of :mod:`stovtal.utils.resume`;
  ``plan.json`` pins the plan's fingerprint), written atomically (temp file, fsync,
  rename). A SIGKILL at any moment therefore loses at most the shard in
  flight, and many processes (ranks, independent jobs) can share one manifest
  directory without locks: each writes only its own shards' files. A record
  holds the shard's items and its per-item errors.
* Per-shard outputs (:meth:`ShardManifest.write_output`) are written the same
  way *before* the shard's record, so "record present" implies "output
  complete"; :meth:`ShardManifest.merge_outputs` joins them in shard order.

:func:`run_shards` is the driver loop tying these together.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .fileio import atomic_write_json, read_json
from .resume import pin, read_marker, write_marker

__all__ = [
    "Shard",
    "ShardPlan",
    "ShardManifest",
    "ShardResult",
    "parse_shard_spec",
    "run_shards",
]

_SPEC_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_RECORD_RE = re.compile(r"^shard-(\d+)\.json$")
PLAN_FILE = "plan.json"
_INVALID_RECORD = ("not a valid record of {} for this plan (edited by hand or left by another run); "
                   "delete it to redo the shard")
MANIFEST_VERSION = 1


def parse_shard_spec(spec: str | None) -> tuple[int, int]:
    """Parse ``"i/n"`` (0-based job ``i`` of ``n``); ``None`` or ``""`` -> ``(0, 1)``."""
    if spec is None or str(spec).strip() == "":
        return 0, 1
    m = _SPEC_RE.match(str(spec))
    if m is None:
        raise ValueError(f"bad shard spec {spec!r}: expected 'i/n' with 0 <= i < n, e.g. '0/4'")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 0 <= i < n:
        raise ValueError(
            f"bad shard spec {spec!r}: need n >= 1 and 0 <= i < n (shards are 0-based: "
            f"'0/{max(n, 1)}' .. '{max(n, 1) - 1}/{max(n, 1)}')"
        )
    return i, n


@dataclass(frozen=True)
class Shard:
    """One unit of work: ``index`` in the plan and its item ids (sorted)."""

    index: int
    items: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"shard-{self.index:05d}"


class ShardPlan:
    """Deterministic split of item ids into contiguous shards of ``shard_size``.

    Args:
        items: item ids (str); order does not matter, duplicates are an error.
        shard_size: items per shard (the last shard may be smaller), >= 1.
    """

    def __init__(self, items: Iterable[str], shard_size: int) -> None:
        items = list(items)
        bad = [x for x in items if not isinstance(x, str) or x == ""]
        if bad:
            raise TypeError(f"item ids must be non-empty strings, got {bad[:5]!r}")
        if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
            raise ValueError(f"shard_size must be an int >= 1, got {shard_size!r}")
        ordered = sorted(items)
        dups = sorted({a for a, b in zip(ordered, ordered[1:], strict=False) if a == b})
        if dups:
            raise ValueError(
                f"duplicate item ids: {dups[:10]!r}" + (" ..." if len(dups) > 10 else "")
            )
        self.items: tuple[str, ...] = tuple(ordered)
        self.shard_size = shard_size
        self.shards: tuple[Shard, ...] = tuple(
            Shard(k, self.items[s : s + shard_size])
            for k, s in enumerate(range(0, len(self.items), shard_size))
        )
        h = hashlib.sha256()
        h.update(f"{shard_size}\n".encode())
        for x in self.items:
            h.update(x.encode("utf-8") + b"\n")
        self.fingerprint = h.hexdigest()

    def __len__(self) -> int:
        return len(self.shards)

    def select(
        self, job: int = 0, num_jobs: int = 1, rank: int = 0, world_size: int = 1
    ) -> list[Shard]:
        """Shards of worker (job ``job`` of ``num_jobs``, rank ``rank`` of ``world_size``)."""
        if num_jobs < 1 or not 0 <= job < num_jobs:
            raise ValueError(f"need 0 <= job < num_jobs, got job={job}, num_jobs={num_jobs}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}"
            )
        total = num_jobs * world_size
        me = job * world_size + rank
        return [s for s in self.shards if s.index % total == me]

    def describe(self) -> dict[str, Any]:
        return {
            "version": MANIFEST_VERSION,
            "fingerprint": self.fingerprint,
            "num_items": len(self.items),
            "shard_size": self.shard_size,
            "num_shards": len(self.shards),
        }


@dataclass
class ShardResult:
    """What processing one shard produced: ``output`` (JSON-serialisable, or None for
    jobs that write their own per-item files), per-item ``errors`` (item -> message)
    and free-form ``info`` (timings, counts) stored in the record."""

    output: Any = None
    errors: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


class ShardManifest:
    """Finished-shard records of one :class:`ShardPlan` in ``directory``.

    ``directory/plan.json`` pins the plan's fingerprint: reusing the directory with
    a different item list or shard size is an error (it would silently mix shards).
    """

    def __init__(self, directory: str | os.PathLike, plan: ShardPlan) -> None:
        self.directory = os.fspath(directory)
        self.plan = plan
        os.makedirs(self.directory, exist_ok=True)
        desc = plan.describe()
        pin(os.path.join(self.directory, PLAN_FILE), desc, indent=1, mismatch=lambda old: (
            f"this manifest belongs to a different work plan (was {_plan_summary(old)}, now "
            f"{_plan_summary(desc)}); the item list or the shard size changed. Use a new output/manifest "
            "directory, or delete the old manifest to start over."))

    # -- paths ---------------------------------------------------------------
    def record_path(self, shard: Shard) -> str:
        return os.path.join(self.directory, shard.name + ".json")

    def output_path(self, shard: Shard) -> str:
        return os.path.join(self.directory, "outputs", shard.name + ".json")

    # -- state ---------------------------------------------------------------
    def _check_shard(self, shard: Shard) -> None:
        if not 0 <= shard.index < len(self.plan.shards) or self.plan.shards[shard.index] != shard:
            raise ValueError(f"{shard.name} is not a shard of this manifest's plan")

    def read_record(self, shard: Shard) -> dict[str, Any] | None:
        """The shard's record, or None if it has not finished."""
        path = self.record_path(shard)
        rec = read_marker(path, [self.plan.fingerprint], mismatch=_INVALID_RECORD.format(shard.name))
        if rec is not None and (rec.get("shard") != shard.index or rec.get("items") != list(shard.items)
                                or not isinstance(rec.get("errors"), dict)):
            raise ValueError(f"{path}: {_INVALID_RECORD.format(shard.name)}")
        return rec

    def is_done(self, shard: Shard) -> bool:
        return self.read_record(shard) is not None

    def pending(
        self, shards: Sequence[Shard] | None = None, retry_errors: bool = False
    ) -> list[Shard]:
        """Shards (default: all of the plan) without a record; with ``retry_errors``
        also those whose record lists per-item errors."""
        out = []
        for s in self.plan.shards if shards is None else shards:
            rec = self.read_record(s)
            if rec is None or (retry_errors and rec["errors"]):
                out.append(s)
        return out

    def records(self) -> dict[int, dict[str, Any]]:
        """All finished shard records of the plan, by shard index."""
        out = {}
        for s in self.plan.shards:
            rec = self.read_record(s)
            if rec is not None:
                out[s.index] = rec
        return out

    def errors(self) -> dict[str, str]:
        """Per-item errors over all finished shards (item -> message)."""
        errs: dict[str, str] = {}
        for rec in self.records().values():
            errs.update(rec["errors"])
        return errs

    def is_complete(self) -> bool:
        return not self.pending()

    def summary(self) -> dict[str, Any]:
        recs = self.records()
        n_err = sum(len(r["errors"]) for r in recs.values())
        done_items = sum(len(r["items"]) for r in recs.values())
        return {
            "num_shards": len(self.plan.shards),
            "done_shards": len(recs),
            "num_items": len(self.plan.items),
            "done_items": done_items,
            "errors": n_err,
        }

    # -- writing -------------------------------------------------------------
    def write_output(self, shard: Shard, output: Any) -> str:
        """Atomically write the shard's JSON output (call before :meth:`record`)."""
        self._check_shard(shard)
        path = self.output_path(shard)
        atomic_write_json(path, output)
        return path

    def read_output(self, shard: Shard) -> Any:
        return read_json(self.output_path(shard))

    def record(
        self,
        shard: Shard,
        errors: Mapping[str, str] | None = None,
        info: Mapping[str, Any] | None = None,
        has_output: bool = False,
    ) -> None:
        """Mark ``shard`` finished (atomically), with its per-item ``errors``."""
        self._check_shard(shard)
        errors = dict(errors or {})
        unknown = sorted(set(errors) - set(shard.items))
        if unknown:
            raise ValueError(f"errors for items not in {shard.name}: {unknown[:5]!r}")
        write_marker(
            self.record_path(shard),
            {
                "shard": shard.index,
                "fingerprint": self.plan.fingerprint,
                "items": list(shard.items),
                "errors": {k: str(v) for k, v in errors.items()},
                "has_output": bool(has_output),
                "info": dict(info or {}),
            },
        )

    def merge_outputs(
        self,
        combine: Callable[[list[Any]], Any] | None = None,
        allow_incomplete: bool = False,
    ) -> Any:
        """Join the per-shard outputs in shard order.

        By default outputs must be dicts keyed by item id and the result is their
        union (an item appearing in two shards is an error). ``combine`` receives
        the list of outputs instead. Raises if shards are still pending unless
        ``allow_incomplete``.
        """
        pending = self.pending()
        if pending and not allow_incomplete:
            names = ", ".join(s.name for s in pending[:5])
            raise RuntimeError(
                f"{len(pending)} of {len(self.plan.shards)} shards in {self.directory} are not "
                f"finished ({names}{' ...' if len(pending) > 5 else ''}); run the job again to finish them"
            )
        pending_idx = {s.index for s in pending}
        produced: list[tuple[Shard, Any]] = []
        for s in self.plan.shards:
            if s.index in pending_idx:
                continue
            rec = self.read_record(s)
            if rec is not None and rec.get("has_output"):
                produced.append((s, self.read_output(s)))
        if combine is not None:
            return combine([out for _, out in produced])
        merged: dict[str, Any] = {}
        for s, out in produced:
            if not isinstance(out, dict):
                raise TypeError(f"{self.output_path(s)}: output is not a dict; pass combine=")
            clash = set(merged) & set(out)
            if clash:
                raise ValueError(
                    f"{self.output_path(s)}: items already output by another shard: {sorted(clash)[:5]!r}"
                )
            merged.update(out)
        return merged


def _plan_summary(desc: Any) -> str:
    if not isinstance(desc, dict):
        return "unreadable"
    return f"{desc.get('num_items')} items in shards of {desc.get('shard_size')}"


def run_shards(
    manifest: ShardManifest,
    shards: Sequence[Shard],
    process: Callable[[Shard], ShardResult],
    retry_errors: bool = False,
    on_done: Callable[[Shard, ShardResult], None] | None = None,
) -> dict[str, int]:
    """Process the pending ones among ``shards`` with ``process`` and record each.

    ``process`` must be deterministic for identical outputs after a resume. Its
    output (if not None) is written before the record. Returns counts
    ``{"processed": .., "skipped": .., "errors": ..}``.
    """
    todo = manifest.pending(shards, retry_errors=retry_errors)
    counts = {"processed": 0, "skipped": len(shards) - len(todo), "errors": 0}
    for shard in todo:
        result = process(shard)
        if not isinstance(result, ShardResult):
            raise TypeError(f"process() must return a ShardResult, got {type(result).__name__}")
        if result.output is not None:
            manifest.write_output(shard, result.output)
        manifest.record(shard, result.errors, result.info, has_output=result.output is not None)
        counts["processed"] += 1
        counts["errors"] += len(result.errors)
        if on_done is not None:
            on_done(shard, result)
    return counts
