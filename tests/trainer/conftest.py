"""pytest fixtures of the trainer tests; the helpers live in grpo_fixtures.py."""
import pytest

from grpo_fixtures import SevensTask, tiny_policy


@pytest.fixture
def policy():
    return tiny_policy()


@pytest.fixture
def task():
    return SevensTask()
