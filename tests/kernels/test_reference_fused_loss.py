"""The chunked torch reference of the fused loss equals the plain computation
(full logits -> log_softmax -> gather -> compute_policy_loss), in value and gradients."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import rlvr.kernels as kernels
from rlvr.algorithms import POLICY_LOSSES, LossNormalizer, PolicyLossConfig, PolicyLossInput, compute_advantages, compute_policy_loss
from rlvr.kernels import reference

LOSSES = sorted(POLICY_LOSSES.names())
# odd shapes: N*T not a multiple of the chunk, V not a power of two
N, T, H, V = 3, 5, 8, 37
TOL = {torch.float64: dict(rtol=1e-10, atol=1e-12), torch.float32: dict(rtol=1e-4, atol=1e-5)}


def _batch(dtype, seed=0, with_old=True, with_ref=True):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, T, H, generator=g, dtype=dtype)
    weight = torch.randn(V, H, generator=g, dtype=dtype) / H**0.5
    targets = torch.randint(0, V, (N, T), generator=g)
    mask = torch.ones(N, T, dtype=torch.bool)
    mask[0, 3:] = False
    mask[2, 1] = False  # a hole in the middle, e.g. a masked tool-output token
    targets[0, 4] = -100  # padding label outside [0, V): must be skipped, not gathered
    with torch.no_grad():
        logp = _plain_logp(hidden, weight, targets.clamp(min=0))
    old = (logp + 0.5 * torch.randn(N, T, generator=g, dtype=dtype)) if with_old else None
    ref = (logp + 0.1 * torch.randn(N, T, generator=g, dtype=dtype)) if with_ref else None
    adv = torch.randn(N, generator=g, dtype=dtype)
    return hidden, weight, targets, mask, adv, old, ref


def _plain_logp(hidden, weight, targets):
    logits = hidden @ weight.T  # (N, T, V): what the fused path never builds
    return logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def _plain_loss(loss_type, hidden, weight, targets, mask, adv, old, ref, cfg, normalizer=None):
    logp = _plain_logp(hidden, weight, targets.clamp(min=0))
    return compute_policy_loss(loss_type, PolicyLossInput(logp, adv, mask, old, ref, normalizer), cfg)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("loss_type", LOSSES)
@pytest.mark.parametrize("off_policy", [True, False])
def test_matches_plain_loss_and_gradients(loss_type, dtype, off_policy):
    hidden, weight, targets, mask, adv, old, ref = _batch(dtype, with_old=off_policy)
    kw = dict(epsilon_low=0.2, epsilon_high=0.28, beta=0.04, kl_type="k3", max_completion_length=T)
    h1, w1 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    loss, metrics = reference.fused_policy_loss(h1, w1, targets, mask, adv, old, ref, loss_type=loss_type,
                                                chunk_size=4, **kw)
    loss.backward()
    h2, w2 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    expected, expected_metrics = _plain_loss(loss_type, h2, w2, targets, mask, adv, old, ref, PolicyLossConfig(**kw))
    expected.backward()
    torch.testing.assert_close(loss, expected, **TOL[dtype])
    torch.testing.assert_close(h1.grad, h2.grad, **TOL[dtype])
    torch.testing.assert_close(w1.grad, w2.grad, **TOL[dtype])
    assert h1.grad[~mask].abs().sum() == 0  # masked positions get no gradient
    for key, value in expected_metrics.items():
        assert metrics[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    if off_policy:
        assert metrics["clip_ratio/region"] > 0 or loss_type == "gspo"


@pytest.mark.parametrize("chunk_size", [1, 3, 16, 1000])
def test_chunk_size_does_not_change_the_result(chunk_size):
    hidden, weight, targets, mask, adv, old, ref = _batch(torch.float64, seed=3)
    h = hidden.clone().requires_grad_()
    loss, _ = reference.fused_policy_loss(h, weight, targets, mask, adv, old, ref, loss_type="dapo",
                                          chunk_size=chunk_size)
    loss.backward()
    h2 = hidden.clone().requires_grad_()
    expected, _ = _plain_loss("dapo", h2, weight, targets, mask, adv, old, ref, PolicyLossConfig())
    expected.backward()
    torch.testing.assert_close(loss, expected, **TOL[torch.float64])
    torch.testing.assert_close(h.grad, h2.grad, **TOL[torch.float64])


def test_normalizer_is_passed_through():
    hidden, weight, targets, mask, adv, old, ref = _batch(torch.float64, seed=4)
    norm = LossNormalizer(num_sequences=12, num_tokens=40.0, num_processes=2)
    loss, _ = reference.fused_policy_loss(hidden, weight, targets, mask, adv, old, ref, loss_type="dapo",
                                          normalizer=norm, chunk_size=4)
    expected, _ = _plain_loss("dapo", hidden, weight, targets, mask, adv, old, ref, PolicyLossConfig(), norm)
    torch.testing.assert_close(loss, expected, **TOL[torch.float64])


def test_bf16_inputs_compute_in_fp32_and_return_bf16_grads():
    hidden, weight, targets, mask, adv, old, ref = _batch(torch.float32, seed=5)
    hb = hidden.bfloat16().requires_grad_()
    wb = weight.bfloat16().requires_grad_()
    loss, _ = reference.fused_policy_loss(hb, wb, targets, mask, adv, old, ref, loss_type="grpo", chunk_size=4)
    loss.backward()
    assert loss.dtype == torch.float32 and hb.grad.dtype == torch.bfloat16 and wb.grad.dtype == torch.bfloat16
    h32 = hb.detach().float().requires_grad_()
    expected, _ = _plain_loss("grpo", h32, wb.detach().float(), targets, mask, adv, old, ref, PolicyLossConfig())
    expected.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(hb.grad.float(), h32.grad, rtol=2e-2, atol=1e-3)


def test_autocast_does_not_lower_the_logits_precision():
    hidden, weight, targets, mask, adv, old, ref = _batch(torch.float32, seed=7)

    def run():
        h = hidden.clone().requires_grad_()
        loss, _ = reference.fused_policy_loss(h, weight, targets, mask, adv, old, ref, loss_type="grpo", chunk_size=4)
        loss.backward()
        return loss.detach(), h.grad

    plain_loss, plain_grad = run()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto_loss, auto_grad = run()
    torch.testing.assert_close(auto_loss, plain_loss, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(auto_grad, plain_grad, rtol=1e-6, atol=1e-7)


def test_token_logprobs_and_entropy_match_the_full_softmax():
    hidden, weight, targets, mask, *_ = _batch(torch.float64, seed=6)
    logp, entropy = reference.token_logprobs(hidden, weight, targets, mask=mask, chunk_size=4)
    logits = hidden @ weight.T
    full_logp = logits.log_softmax(-1)
    expected_logp = full_logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    expected_entropy = -(full_logp.exp() * full_logp).sum(-1)
    torch.testing.assert_close(logp[mask], expected_logp[mask])
    torch.testing.assert_close(entropy[mask], expected_entropy[mask])
    assert (logp[~mask] == 0).all() and (entropy[~mask] == 0).all()
    assert not logp.requires_grad
    _, metrics = reference.fused_policy_loss(hidden, weight, targets, mask, torch.zeros(N, dtype=torch.float64),
                                             loss_type="grpo")
    assert metrics["entropy/mean"] == pytest.approx(expected_entropy[mask].mean().item())


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any op creates (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("chunk_size", [8, 16])
def test_peak_tensor_is_one_chunk_of_logits(chunk_size):
    n, t, h, v = 4, 16, 4, 50  # N*T*V = 3200 logits; V*H = 200 and N*T*H = 256 are smaller than a chunk
    hidden = torch.randn(n, t, h, requires_grad=True)
    weight = torch.randn(v, h, requires_grad=True)
    targets = torch.randint(0, v, (n, t))
    mask = torch.ones(n, t)
    with _LargestTensor() as probe:
        loss, _ = reference.fused_policy_loss(hidden, weight, targets, mask, torch.randn(n), loss_type="grpo",
                                              chunk_size=chunk_size)
        loss.backward()
    assert probe.largest == chunk_size * v  # never n * t * v


@pytest.mark.parametrize("loss_type", LOSSES)
def test_a_fully_masked_micro_batch_gives_zero_loss_and_zero_grads(loss_type):
    hidden, weight, targets, mask, adv, old, ref = _batch(torch.float32)
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    none = torch.zeros_like(mask)  # e.g. every completion truncated and masked out
    loss, metrics = reference.fused_policy_loss(h, w, targets, none, adv, old, ref, loss_type=loss_type,
                                                beta=0.04, max_completion_length=T,
                                                normalizer=LossNormalizer(num_sequences=6, num_tokens=20.0))
    loss.backward()
    assert loss.item() == 0.0 and metrics["entropy/mean"] == 0.0
    assert h.grad.abs().sum() == 0 and w.grad.abs().sum() == 0


def test_bad_targets_and_shapes_raise():
    hidden, weight, targets, mask, adv, old, ref = _batch(torch.float64)
    bad = targets.clone()
    bad[1, 1] = V
    with pytest.raises(ValueError, match=r"targets of valid tokens must be in \[0, V=37\)"):
        reference.fused_policy_loss(hidden, weight, bad, mask, adv, loss_type="grpo")
    with pytest.raises(ValueError, match="weight must be"):
        reference.fused_policy_loss(hidden, weight[:, :3], targets, mask, adv, loss_type="grpo")
    with pytest.raises(ValueError, match="unknown policy loss 'ppo'"):
        reference.fused_policy_loss(hidden, weight, targets, mask, adv, loss_type="ppo")


# ----------------------------------------------------------------------------- dispatch

def test_dispatch_on_cpu_uses_the_reference():
    hidden, weight, targets, mask, adv, old, ref = _batch(torch.float64)
    a, _ = kernels.fused_policy_loss(hidden, weight, targets, mask, adv, old, ref, loss_type="grpo")
    b, _ = kernels.fused_policy_loss(hidden, weight, targets, mask, adv, old, ref, loss_type="grpo", backend="torch")
    c, _ = reference.fused_policy_loss(hidden, weight, targets, mask, adv, old, ref, loss_type="grpo")
    assert a.item() == b.item() == c.item()
    lp, _ = kernels.token_logprobs(hidden, weight, targets, mask=mask)
    torch.testing.assert_close(lp, reference.token_logprobs(hidden, weight, targets, mask=mask)[0])


def test_dispatch_errors():
    hidden, weight, targets, mask, adv, *_ = _batch(torch.float64)
    with pytest.raises(ValueError, match="valid: auto, torch, triton"):
        kernels.fused_policy_loss(hidden, weight, targets, mask, adv, loss_type="grpo", backend="cuda")
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        kernels.fused_policy_loss(hidden, weight, targets, mask, adv, loss_type="grpo", backend="triton")
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        kernels.group_advantages(torch.zeros(4), 2, "grpo", backend="triton")


@pytest.mark.parametrize("kind", ["grpo", "dr_grpo", "rloo", "grpo_batch_std"])
def test_group_advantages_on_cpu(kind):
    r = torch.rand(12)
    torch.testing.assert_close(kernels.group_advantages(r, 4, kind), compute_advantages(kind, r, 4)[0])
