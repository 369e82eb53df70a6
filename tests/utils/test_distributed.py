"""Where a process stands, in one process (the multi-process behaviour: tests/distributed)."""

import pytest
import torch

from stovtal.utils import distributed as D


def test_rank_and_world_size_from_env(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert D.rank_and_world_size() == (0, 1)
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert D.rank_and_world_size() == (2, 4)
    assert (D.get_rank(), D.get_world_size()) == (0, 1)  # no process group: collectives are local
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="RANK=4"):
        D.rank_and_world_size()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="RANK='x' is not an integer"):
        D.rank_and_world_size()


def test_collectives_degrade_to_one_process():
    t = torch.tensor([3.0])
    assert D.sum_over_ranks(t) is t
    assert D.broadcast_object({"a": 1}) == {"a": 1}
    assert D.all_reduce_mean({"loss": 2.0}) == {"loss": 2.0}
    assert D.gather_dicts({"v": 1}) == {"v": 1}
    assert D.rank_indices(5) == [0, 1, 2, 3, 4]
