import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny models: OpenMP spin-waiting on a shared 2-core machine costs more than it gains
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
