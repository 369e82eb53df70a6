"""How the self-training stages coordinate under ``torchrun`` (one process: no-ops).

* ``base`` / ``retrain``: every rank trains (DDP, see :class:`stovtal.engine.Trainer`); rank 0
  exports the weights.
* ``pseudolabel``: the shards of the video list are divided among the ranks (and among
  independent jobs, ``--shard i/n``); each rank writes its own shard outputs and manifest
  records; after a barrier rank 0 merges them into ``pseudo_labels.json``
  (:func:`pseudo_label_distributed`). A rank that dies loses at most its shard in flight; a
  re-run (any number of ranks or jobs) does only the shards without a record.
* ``eval``: each rank predicts its share of the test videos; rank 0 gathers and scores them.
* ``report``, ``config.yaml``, ``stage.json``: rank 0; the others wait at a barrier.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from stovtal.engine import distributed as D
from stovtal.utils.fileio import read_json

from .config import PseudoLabelConfig

__all__ = ["pseudo_label_distributed"]


def pseudo_label_distributed(model: nn.Module, unlabelled: Any, video_ids: Sequence[str],
                             out_dir: str | os.PathLike, cfg: PseudoLabelConfig, *,
                             device: torch.device | str = "cpu", progress: bool = False,
                             job: int = 0, num_jobs: int = 1, desc: str = "pseudo-label") -> dict[str, Any] | None:
    """:func:`stovtal.selftrain.pseudolabel.pseudo_label` over all ranks of this job.

    Called by every rank. Returns the pseudo-label database on every rank once all shards of
    the plan (of all jobs) are finished, else None (other jobs still have pending shards).
    """
    from .pseudolabel import PSEUDO_FILE, pseudo_label

    rank, world = D.get_rank(), D.get_world_size()
    kwargs = dict(device=device, job=job, num_jobs=num_jobs, rank=rank, world_size=world, desc=desc)
    db = pseudo_label(model, unlabelled, video_ids, out_dir, cfg, progress=progress and rank == 0, **kwargs)
    if world == 1:
        return db
    D.barrier()  # every shard of this job now has its record
    if rank == 0 and db is None:
        db = pseudo_label(model, unlabelled, video_ids, out_dir, cfg, progress=False, **kwargs)
    D.barrier()  # rank 0 has written pseudo_labels.json (if the plan is complete)
    final = os.path.join(os.fspath(out_dir), PSEUDO_FILE)
    if db is None and os.path.exists(final):
        db = read_json(final)
    return db
