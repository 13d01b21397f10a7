"""pytest fixtures of the trainer tests; the helpers live in grpo_fixtures.py."""
import pytest

from grpo_fixtures import SevensTask, tiny_policy


@pytest.fixture
def policy():
    return tiny_policy()


@pytest.fixture
def task():
    return SevensTask()


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one mixed-precision mode per process; tests that switch it start and end
    with a fresh state."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)
