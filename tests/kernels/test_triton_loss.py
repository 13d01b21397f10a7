"""The Triton fused loss equals the torch reference (run in float64 on the same bf16 inputs):
loss, metrics, grad_hidden and grad_weight, for every loss variant, on odd shapes (T not a
multiple of any block, V not a power of two, masked tokens, a fully masked sequence, several
chunks). Tolerances: bf16 operands land between 1e-3 and 1e-2 in
relative norm error. Fresh random inputs per case; NaN never passes.
"""
from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu

LOSSES = ["grpo", "bnpo", "dapo", "dr_grpo", "gspo"]
BF16_TOL = 1e-2


def _rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    assert torch.isfinite(out).all(), "non-finite output"
    return ((out - ref).norm() / ref.norm().clamp(min=1e-30)).item()


def _inputs(n, t, h, v, seed, dtype=torch.bfloat16):
    g = torch.Generator(device="cuda").manual_seed(seed)
    hidden = torch.randn(n, t, h, device="cuda", generator=g).to(dtype)
    weight = (torch.randn(v, h, device="cuda", generator=g) / h ** 0.5 * 2).to(dtype)
    targets = torch.randint(0, v, (n, t), device="cuda", generator=g)
    mask = torch.rand(n, t, device="cuda", generator=g) > 0.25
    mask[1] = False  # a sequence with no valid token
    mask[2, t // 2:] = False  # a short completion
    advantages = torch.randn(n, device="cuda", generator=g)
    if n > 4:  # sequences 0 and 4 get log-ratios +0.5 / -0.5 below: make both clip
        advantages[0], advantages[4] = advantages[0].abs(), -advantages[4].abs()
    from rlvr.kernels.reference import token_logprobs

    logp, _ = token_logprobs(hidden.double(), weight.double(), targets)
    # old policy: each sequence's log-ratio is one of these, so ratios fall inside the clip range
    # and beyond both edges, but never within bf16 rounding of an edge (where the gradient jumps
    # from -A r to 0 and a 0.01 difference in logp would flip it)
    offsets = torch.tensor([-0.5, -0.1, 0.0, 0.1, 0.5, 0.05], device="cuda", dtype=torch.float64)
    old_logp = (logp + offsets[torch.arange(n, device="cuda") % len(offsets)][:, None]).float()
    ref_logp = (logp + 0.3 * torch.randn(n, t, device="cuda", generator=g, dtype=torch.float64)).float()
    return hidden, weight, targets, mask, advantages, old_logp, ref_logp


def _run(module, hidden, weight, *args, **kwargs):
    hidden = hidden.detach().clone().requires_grad_(True)
    weight = weight.detach().clone().requires_grad_(True)
    loss, metrics = module.fused_policy_loss(hidden, weight, *args, **kwargs)
    loss.backward()
    return loss.detach(), metrics, hidden.grad, weight.grad


@pytest.mark.parametrize("loss_type", LOSSES)
@pytest.mark.parametrize("off_policy", [False, True])
def test_fused_loss_matches_reference(loss_type, off_policy):
    from rlvr.kernels import reference, triton_loss

    n, t, h, v = 6, 37, 64, 1001
    hidden, weight, targets, mask, adv, old, ref = _inputs(n, t, h, v, seed=hash((loss_type, off_policy)) % 1000)
    old = old if off_policy else None
    kwargs = dict(loss_type=loss_type, epsilon_low=0.2, epsilon_high=0.28, beta=0.04,
                  max_completion_length=40)
    ours = _run(triton_loss, hidden, weight, targets, mask, adv, old, ref, chunk_size=50, **kwargs)
    theirs = _run(reference, hidden.double(), weight.double(), targets, mask, adv.double(),
                  None if old is None else old.double(), ref.double(), **kwargs)
    loss, metrics, gh, gw = ours
    ref_loss, ref_metrics, ref_gh, ref_gw = theirs
    # the loss sums terms of both signs (|A| r each) and can nearly cancel: measure its error
    # against the size of those terms, not against the (possibly tiny) sum
    assert abs(loss.item() - ref_loss.item()) < BF16_TOL * adv.abs().mean().item()
    assert _rel_err(gh, ref_gh) < BF16_TOL
    assert _rel_err(gw, ref_gw) < BF16_TOL
    assert gh[~mask].abs().max().item() == 0.0  # masked tokens get no gradient
    assert set(metrics) == set(ref_metrics)
    for key in ("ratio/mean", "entropy/mean", "kl/mean"):
        assert metrics[key] == pytest.approx(ref_metrics[key], rel=BF16_TOL, abs=1e-3), key
    assert metrics["clip_ratio/region"] == pytest.approx(ref_metrics["clip_ratio/region"], abs=1e-6)
    if off_policy:
        assert ref_metrics["clip_ratio/region"] > 0.05  # the clipped branch was exercised


@pytest.mark.parametrize("chunk_size", [1, 37, 10_000])
def test_chunking_does_not_change_the_result(chunk_size):
    """Any chunking (one token row, part of a sequence's budget, everything) gives the same result."""
    from rlvr.kernels import triton_loss

    hidden, weight, targets, mask, adv, old, ref = _inputs(4, 19, 32, 515, seed=chunk_size)
    kwargs = dict(loss_type="gspo", epsilon_low=0.2, epsilon_high=0.2, beta=0.0)
    base = _run(triton_loss, hidden, weight, targets, mask, adv, old, None, chunk_size=19, **kwargs)
    other = _run(triton_loss, hidden, weight, targets, mask, adv, old, None, chunk_size=chunk_size, **kwargs)
    assert _rel_err(other[0], base[0]) < 1e-5
    assert _rel_err(other[2], base[2]) < 1e-5
    assert _rel_err(other[3], base[3]) < 1e-3  # bf16 weight grads summed in a different order


def test_token_logprobs_and_entropy_match_reference():
    from rlvr.kernels import reference, triton_loss

    hidden, weight, targets, mask, *_ = _inputs(3, 45, 96, 4099, seed=7)
    logp, entropy = triton_loss.token_logprobs(hidden, weight, targets, mask=mask, chunk_size=64)
    ref_logp, ref_entropy = reference.token_logprobs(hidden.double(), weight.double(), targets, mask=mask)
    assert _rel_err(logp, ref_logp) < BF16_TOL
    assert _rel_err(entropy, ref_entropy) < BF16_TOL
    assert (logp[~mask] == 0).all() and (entropy[~mask] == 0).all()


def test_fp32_inputs_are_close_to_float64():
    from rlvr.kernels import reference, triton_loss

    hidden, weight, targets, mask, adv, old, ref = _inputs(3, 21, 48, 777, seed=11, dtype=torch.float32)
    kwargs = dict(loss_type="grpo", epsilon_low=0.2, epsilon_high=0.2, beta=0.1)
    loss, _, gh, gw = _run(triton_loss, hidden, weight, targets, mask, adv, old, ref, **kwargs)
    r_loss, _, r_gh, r_gw = _run(reference, hidden.double(), weight.double(), targets, mask, adv.double(),
                                 old.double(), ref.double(), **kwargs)
    # fp32 storage; the matmuls may use tf32 (about 3e-4)
    assert _rel_err(loss, r_loss) < 2e-3
    assert _rel_err(gh, r_gh) < 2e-3
    assert _rel_err(gw, r_gw) < 2e-3


def test_a_newly_registered_loss_runs_fused(monkeypatch):
    """One function in the loss registry is all a new variant needs: the fused path runs it."""
    from rlvr.algorithms import POLICY_LOSSES, losses
    from rlvr.kernels import reference, triton_loss

    def token_sum(values, mask, counts, cfg):  # sum over tokens / N: neither grpo's nor dr_grpo's
        return (values * mask).sum() * (counts.processes / counts.sequences)

    def token_sum_loss(inp, cfg):
        return losses.clipped_surrogate_loss(inp, cfg, losses.token_log_ratio(inp), token_sum)

    monkeypatch.setitem(POLICY_LOSSES._entries, "token_sum", token_sum_loss)  # unregistered after
    hidden, weight, targets, mask, adv, old, ref = _inputs(6, 37, 64, 1001, seed=13, dtype=torch.float32)
    kwargs = dict(loss_type="token_sum", epsilon_low=0.2, epsilon_high=0.28, beta=0.04)
    loss, metrics, gh, gw = _run(triton_loss, hidden, weight, targets, mask, adv, old, ref, chunk_size=50, **kwargs)
    r_loss, r_metrics, r_gh, r_gw = _run(reference, hidden.double(), weight.double(), targets, mask, adv.double(),
                                         old.double(), ref.double(), **kwargs)
    assert _rel_err(loss, r_loss) < 2e-3  # fp32 storage, tf32 matmuls at worst (as above)
    assert _rel_err(gh, r_gh) < 2e-3
    assert _rel_err(gw, r_gw) < 2e-3
    assert metrics["clip_ratio/region"] == pytest.approx(r_metrics["clip_ratio/region"], abs=1e-6)
    grpo_loss, *_ = _run(reference, hidden.double(), weight.double(), targets, mask, adv.double(),
                         old.double(), ref.double(), **{**kwargs, "loss_type": "grpo"})
    assert _rel_err(grpo_loss, r_loss) > 0.1  # the variant is not one of the built-in ones


def test_dispatcher_picks_triton_for_cuda(monkeypatch):
    import rlvr.kernels
    from rlvr.kernels import triton_loss

    calls = []
    monkeypatch.setattr(triton_loss, "fused_policy_loss", lambda *a, **k: calls.append(k["loss_type"]))
    hidden, weight, targets, mask, adv, *_ = _inputs(3, 9, 32, 300, seed=3)
    rlvr.kernels.fused_policy_loss(hidden, weight, targets, mask, adv, backend="auto", loss_type="dapo")
    assert calls == ["dapo"]


def test_cpu_tensors_are_refused():
    from rlvr.kernels import triton_loss

    with pytest.raises(ValueError, match="CUDA"):
        triton_loss.token_logprobs(torch.zeros(1, 2, 4), torch.zeros(5, 4), torch.zeros(1, 2, dtype=torch.long))
