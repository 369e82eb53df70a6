"""Model tests run many tiny convolutions; on a shared 2-core machine one intra-op
thread avoids OpenMP spin-wait contention that makes them 10-50x slower."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
