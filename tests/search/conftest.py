import pytest
import torch

from toy_setup import toy_context, toy_policy


@pytest.fixture(scope="module")
def toy():
    return toy_policy(seed=0)


@pytest.fixture
def ctx(toy):
    torch.manual_seed(0)  # sampling is seeded per test: each test's outcome is reproducible
    model, tokenizer = toy
    return toy_context(model, tokenizer)
