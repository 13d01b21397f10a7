"""Pipeline tests run real (tiny) training; keep torch to one thread.

On a shared 2-core machine two OpenMP threads per process spin against each other and every other
process: a tiny model's training step measured 10x slower with 2 threads than with 1.
"""
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
