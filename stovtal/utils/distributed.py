"""``torch.distributed`` glue: the same code runs as one process or as many (``torchrun``).

Under ``torchrun --nproc_per_node=N`` (or multi-node with ``--nnodes``/``--rdzv_*``), the
environment holds ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; :func:`init_distributed` then creates the default process group (NCCL when
training on CUDA, gloo on CPU) and pins each process to ``cuda:LOCAL_RANK``. Without torchrun
(or with ``WORLD_SIZE=1``) nothing is initialised and every helper here degrades to the
single-process behaviour: :func:`barrier` is a no-op, :func:`broadcast_object` returns its
argument, :func:`all_gather_objects` returns ``[obj]``.

This module is the one place that asks ``torch.distributed`` or torchrun's environment where a
process stands and that runs collectives: the trainer, the localizer's loss, sharded work
(pseudo-labelling, feature extraction), the work-directory lock and the applications use it.

Conventions used across stovtal:

* rank 0 (:func:`is_main_process`) alone logs, writes checkpoints, reports and merged outputs;
  the other ranks wait at a :func:`barrier` before they read what rank 0 wrote. The work
  directory must therefore be on a file system shared by all ranks (it is for one machine; on a
  cluster use a shared file system).
* evaluation is split over ranks (:func:`rank_indices`), the per-rank results are merged with
  :func:`gather_dicts`, and rank 0 computes the metrics.
* if one rank dies, ``torchrun`` stops the others; sharded jobs (pseudo-labelling, feature
  extraction) resume from their manifests and training from ``last.pt`` when re-run.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "all_gather_objects",
    "all_reduce_mean",
    "barrier",
    "broadcast_object",
    "cleanup",
    "distributed_session",
    "gather_dicts",
    "get_rank",
    "get_world_size",
    "info",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "local_device",
    "main_process_first",
    "rank_and_world_size",
    "rank_indices",
    "rank_zero_log",
    "sum_over_ranks",
]

_OWNED = False  # True if init_distributed created the process group (then cleanup destroys it)


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``, ``local_rank`` on its node,
    and the ``backend`` (None when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None


def _env_topology() -> tuple[int, int, int]:
    rank, world, local = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ValueError(f"invalid RANK={rank} / WORLD_SIZE={world} / LOCAL_RANK={local} in the environment")
    return rank, world, local


def is_distributed() -> bool:
    """True if a process group with more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank_and_world_size() -> tuple[int, int]:
    """This process's ``(rank, world_size)``: the initialised process group's, else torchrun's
    ``RANK`` / ``WORLD_SIZE`` environment (a job that splits work without collectives), else
    ``(0, 1)``. Invalid environment values are an error naming them."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    rank, world, _ = _env_topology()
    return rank, world


def is_main_process() -> bool:
    return get_rank() == 0


def info() -> DistInfo:
    """The current topology (initialised group, else a single process)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0), dist.get_backend())
    return DistInfo()


def init_distributed(device: str = "auto", backend: str | None = None,
                     timeout_s: float = 1800.0) -> DistInfo:
    """Create the default process group from torchrun's environment (idempotent).

    Args:
        device: the training device setting (``"auto"``, ``"cpu"``, ``"cuda"``); decides the
            default backend and, on CUDA, pins this process to ``cuda:LOCAL_RANK``.
        backend: ``"nccl"`` / ``"gloo"``; default NCCL for CUDA, gloo for CPU.
        timeout_s: collective timeout (a stage where rank 0 works alone, e.g. generating the
            synthetic world, must finish within it).

    Returns the topology; ``world_size == 1`` means no process group was created.
    """
    global _OWNED
    if dist.is_available() and dist.is_initialized():
        return info()
    rank, world, local = _env_topology()
    if world == 1:
        return DistInfo()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={world} but {', '.join(missing)} not set: launch with torchrun")
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} requested but CUDA is not available")
        if local >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK={local} but only {torch.cuda.device_count()} CUDA devices are visible")
        torch.cuda.set_device(local)
    backend = backend or ("nccl" if use_cuda else "gloo")
    dist.init_process_group(backend, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=timeout_s))
    _OWNED = True
    return DistInfo(rank, world, local, backend)


def cleanup() -> None:
    """Destroy the process group if :func:`init_distributed` created it (after a barrier, so
    that no rank leaves while another still needs it)."""
    global _OWNED
    if _OWNED and dist.is_available() and dist.is_initialized():
        try:
            barrier()
        finally:
            dist.destroy_process_group()
            _OWNED = False


@contextlib.contextmanager
def distributed_session(device: str = "auto", backend: str | None = None,
                        timeout_s: float = 1800.0) -> Iterator[DistInfo]:
    """``with distributed_session() as d:`` init, run, tear down. On an exception the group is
    destroyed without a barrier (the other ranks are stopped by torchrun)."""
    global _OWNED
    d = init_distributed(device, backend, timeout_s)
    try:
        yield d
    except BaseException:
        if _OWNED and dist.is_initialized():
            dist.destroy_process_group()
            _OWNED = False
        raise
    cleanup()


def local_device(device: torch.device) -> torch.device:
    """``cuda`` without an index -> this rank's ``cuda:LOCAL_RANK``; others unchanged."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if not is_distributed():
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (picklable objects)."""
    if not is_distributed():
        return obj
    box = [obj if get_rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_dicts(part: Mapping[str, Any], dst: int | None = 0) -> dict[str, Any] | None:
    """Merge per-rank dicts with disjoint keys (e.g. per-video results of each rank's share).

    Returns the union on rank ``dst`` (every rank if ``dst`` is None) and None elsewhere. A key
    produced by two ranks is an error (the work was not split correctly).
    """
    parts = all_gather_objects(dict(part))
    if dst is not None and get_rank() != dst:
        return None
    merged: dict[str, Any] = {}
    for r, p in enumerate(parts):
        clash = merged.keys() & p.keys()
        if clash:
            raise ValueError(f"rank {r} produced keys already produced by another rank: {sorted(clash)[:5]}")
        merged.update(p)
    return merged


def all_reduce_mean(values: Mapping[str, float]) -> dict[str, float]:
    """The mean over ranks of each value (same keys on every rank)."""
    if not is_distributed():
        return dict(values)
    keys = sorted(values)
    gathered = all_gather_objects([float(values[k]) for k in keys])
    return {k: sum(g[i] for g in gathered) / len(gathered) for i, k in enumerate(keys)}


def sum_over_ranks(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over the ranks (a detached copy, on every rank); ``t`` itself in one process."""
    if not is_distributed():
        return t
    total = t.detach().clone()
    dist.all_reduce(total)
    return total


def rank_indices(n: int, rank: int | None = None, world_size: int | None = None) -> list[int]:
    """This rank's share of ``range(n)`` (strided: ``rank, rank + W, ...``); the shares of all
    ranks are disjoint and cover ``range(n)``."""
    rank = get_rank() if rank is None else rank
    world_size = get_world_size() if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    return list(range(rank, n, world_size))


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. writes a cache), then the others (which reuse it)."""
    if not is_main_process():
        barrier()
    yield
    if is_main_process():
        barrier()


def rank_zero_log(log: Callable[[str], None]) -> Callable[[str], None]:
    """``log`` on rank 0, a no-op on the other ranks."""
    if is_main_process():
        return log

    def _quiet(_: str) -> None:
        return None

    return _quiet
