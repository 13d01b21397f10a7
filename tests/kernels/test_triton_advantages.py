"""The Triton group-advantage kernel equals the torch estimators in rlvr.algorithms."""
from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo"])
@pytest.mark.parametrize("groups,group_size", [(1, 2), (7, 3), (129, 8), (33, 16), (5, 100)])
def test_matches_torch_estimator(name, groups, group_size):
    from rlvr.algorithms import group_advantages as torch_group_advantages
    from rlvr.kernels import triton_advantages

    rewards = torch.rand(groups * group_size, device="cuda")
    rewards[:group_size] = 1.0  # one group with equal rewards: zero advantage, no division blow-up
    ours = triton_advantages.group_advantages(name, rewards, group_size)
    theirs = torch_group_advantages(name, rewards, group_size)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    assert (ours[:group_size] == 0).all()


def test_bad_input_is_a_clear_error():
    from rlvr.kernels import triton_advantages

    with pytest.raises(ValueError, match="multiple of group_size"):
        triton_advantages.group_advantages("grpo", torch.rand(7, device="cuda"), 4)
    with pytest.raises(ValueError, match="valid: dr_grpo, grpo, rloo"):
        triton_advantages.group_advantages("nope", torch.rand(8, device="cuda"), 4)
