"""Policy losses: hand-computed values, clipping, KL, masking, gradients, split invariance."""
import math

import pytest
import torch

from rlvr.algorithms import (
    POLICY_LOSSES,
    LossNormalizer,
    PolicyLossConfig,
    PolicyLossInput,
    compute_policy_loss,
    register_policy_loss,
)
from rlvr.config import ConfigError, from_dict

# A 2-sequence, 3-token batch. Sequence 0 (A = +1) has ratios 1.1, 1.3 (above 1 + eps: clipped),
# 0.9; sequence 1 (A = -0.5) has ratios 0.7 (below 1 - eps: clipped), 1.0 and one padded token.
RATIOS = [[1.1, 1.3, 0.9], [0.7, 1.0, 1.0]]
MASK = [[1, 1, 1], [1, 1, 0]]
ADV = [1.0, -0.5]
LOGP = [[-1.0, -2.0, -0.5], [-1.5, -0.7, -3.0]]
EPS = 0.2


def _clip(r):
    return min(max(r, 1 - EPS), 1 + EPS)


def _pg(r, a):  # per-token -min(r A, clip(r) A)
    return -min(r * a, _clip(r) * a)


PG = [[_pg(r, ADV[i]) for r in RATIOS[i]] for i in range(2)]  # [-1.1, -1.2, -0.9], [0.4, 0.5, pad]
LENS = [3, 2]


def _input(ref=None, requires_grad=False, **kw):
    logp = torch.tensor(LOGP, dtype=torch.float64, requires_grad=requires_grad)
    old = torch.tensor(LOGP, dtype=torch.float64) - torch.tensor(RATIOS, dtype=torch.float64).log()
    return PolicyLossInput(logp=logp, advantages=torch.tensor(ADV, dtype=torch.float64),
                           mask=torch.tensor(MASK, dtype=torch.bool), old_logp=old, ref_logp=ref, **kw)


def _loss(name, inp=None, **cfg):
    cfg.setdefault("max_completion_length", 4)
    return compute_policy_loss(name, inp or _input(), PolicyLossConfig(**cfg))


def test_hand_computed_per_token_terms():
    assert PG[0] == pytest.approx([-1.1, -1.2, -0.9])
    assert PG[1][:2] == pytest.approx([0.4, 0.5])


@pytest.mark.parametrize("name, expected", [
    # mean over sequences of each sequence's token mean
    ("grpo", 0.5 * (sum(PG[0]) / 3 + sum(PG[1][:2]) / 2)),
    # token mean over the batch's 5 valid tokens
    ("bnpo", (sum(PG[0]) + sum(PG[1][:2])) / 5),
    ("dapo", (sum(PG[0]) + sum(PG[1][:2])) / 5),
    # sum over tokens / (N * L_max) with L_max = 4
    ("dr_grpo", (sum(PG[0]) + sum(PG[1][:2])) / (2 * 4)),
])
def test_token_level_losses_by_hand(name, expected):
    loss, metrics = _loss(name)
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    assert metrics["loss/policy"] == pytest.approx(expected, abs=1e-12)
    assert metrics["loss/kl"] == 0.0
    assert metrics["clip_ratio/low"] == pytest.approx(1 / 5)  # token 0.7 with A < 0
    assert metrics["clip_ratio/high"] == pytest.approx(1 / 5)  # token 1.3 with A > 0
    assert metrics["clip_ratio/region"] == pytest.approx(2 / 5)
    assert metrics["ratio/mean"] == pytest.approx((1.1 + 1.3 + 0.9 + 0.7 + 1.0) / 5)
    assert metrics["ratio/max"] == pytest.approx(1.3)
    assert metrics["ratio/min"] == pytest.approx(0.7)


def test_gspo_by_hand():
    s0 = (1.1 * 1.3 * 0.9) ** (1 / 3)  # exp(mean log r) over 3 tokens
    s1 = (0.7 * 1.0) ** (1 / 2)  # padded token excluded
    expected = 0.5 * (_pg(s0, ADV[0]) + _pg(s1, ADV[1]))
    loss, metrics = _loss("gspo")
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    # s1 = 0.837 is inside [0.8, 1.2]: nothing clipped at the sequence level
    assert metrics["clip_ratio/region"] == 0.0


def test_gspo_clips_on_the_sequence_ratio():
    loss, metrics = _loss("gspo", epsilon_low=0.05, epsilon_high=0.05)
    s1 = 0.7 ** 0.5
    # s0 = 1.088 > 1.05 with A > 0 (3 tokens), s1 = 0.837 < 0.95 with A < 0 (2 tokens)
    assert metrics["clip_ratio/high"] == pytest.approx(3 / 5)
    assert metrics["clip_ratio/low"] == pytest.approx(2 / 5)
    assert loss.item() == pytest.approx(0.5 * (-1.05 * 1.0 + 0.95 * 0.5), abs=1e-12)
    assert s1 < 0.95


def test_kl_term_k3_by_hand():
    d = [[0.3, -0.2, 0.1], [0.5, 0.0, 9.0]]  # ref - logp; the padded 9.0 must not count
    ref = torch.tensor(LOGP, dtype=torch.float64) + torch.tensor(d, dtype=torch.float64)
    k3 = [[math.exp(x) - x - 1 for x in row] for row in d]
    beta = 0.1
    loss, metrics = _loss("grpo", _input(ref=ref), beta=beta)
    kl_part = beta * 0.5 * (sum(k3[0]) / 3 + sum(k3[1][:2]) / 2)
    policy = 0.5 * (sum(PG[0]) / 3 + sum(PG[1][:2]) / 2)
    assert metrics["loss/kl"] == pytest.approx(kl_part, abs=1e-12)
    assert loss.item() == pytest.approx(policy + kl_part, abs=1e-12)
    assert metrics["kl/mean"] == pytest.approx((sum(k3[0]) + sum(k3[1][:2])) / 5, abs=1e-12)
    k1_loss, _ = _loss("grpo", _input(ref=ref), beta=beta, kl_type="k1")
    assert k1_loss.item() != pytest.approx(loss.item())


def test_clipped_tokens_get_no_gradient_and_the_others_do():
    inp = _input(requires_grad=True)
    loss, _ = _loss("dapo", inp)
    loss.backward()
    g = inp.logp.grad
    # clipped: r = 1.3 with A > 0, r = 0.7 with A < 0; padded token: nothing
    assert g[0, 1].item() == 0.0 and g[1, 0].item() == 0.0 and g[1, 2].item() == 0.0
    # d/dlogp of -(r A)/5 = -r A / 5
    assert g[0, 0].item() == pytest.approx(-1.1 / 5)
    assert g[0, 2].item() == pytest.approx(-0.9 / 5)
    assert g[1, 1].item() == pytest.approx(0.5 / 5)


def test_unclipped_side_keeps_its_gradient():
    # A > 0 with r below 1 - eps and A < 0 with r above 1 + eps are NOT clipped (pessimistic min)
    logp = torch.zeros(2, 1, dtype=torch.float64, requires_grad=True)
    old = torch.tensor([[math.log(2.0)], [math.log(0.5)]], dtype=torch.float64)  # r = 0.5 and 2.0
    inp = PolicyLossInput(logp=logp, advantages=torch.tensor([1.0, -1.0], dtype=torch.float64),
                          mask=torch.ones(2, 1), old_logp=old)
    loss, metrics = compute_policy_loss("bnpo", inp, PolicyLossConfig())
    loss.backward()
    assert logp.grad[:, 0].tolist() == pytest.approx([-0.5 / 2, 2.0 / 2])
    assert metrics["clip_ratio/region"] == 0.0


def test_epsilon_high_changes_the_upper_clip_only():
    base, _ = _loss("dapo")
    higher, m = _loss("dapo", epsilon_high=0.28)
    # 1.3 is still above 1.28: clipped at 1.28 instead of 1.2
    assert higher.item() == pytest.approx(base.item() + (-1.28 + 1.2) / 5, abs=1e-12)
    assert m["clip_ratio/high"] == pytest.approx(1 / 5)
    lower, m = _loss("dapo", epsilon_low=0.35)
    assert m["clip_ratio/low"] == 0.0  # 0.7 > 0.65


@pytest.mark.parametrize("name", sorted(POLICY_LOSSES.names()))
def test_gradients_flow_only_through_logp(name):
    inp = _input(ref=torch.tensor(LOGP, dtype=torch.float64) + 0.1, requires_grad=True)
    inp.old_logp.requires_grad_(True)
    inp.ref_logp.requires_grad_(True)
    inp.advantages.requires_grad_(True)
    loss, _ = _loss(name, inp, beta=0.1)
    loss.backward()
    assert inp.logp.grad is not None and inp.logp.grad.abs().sum() > 0
    assert inp.old_logp.grad is None and inp.ref_logp.grad is None and inp.advantages.grad is None


@pytest.mark.parametrize("name", sorted(POLICY_LOSSES.names()))
def test_masked_tokens_contribute_nothing_even_when_inf_or_nan(name):
    clean = _input(ref=torch.tensor(LOGP, dtype=torch.float64) + 0.1, requires_grad=True)
    dirty = _input(ref=torch.tensor(LOGP, dtype=torch.float64) + 0.1, requires_grad=True)
    with torch.no_grad():
        dirty.logp[1, 2] = -math.inf
        dirty.old_logp[1, 2] = math.nan
        dirty.ref_logp[1, 2] = math.inf
    a, ma = _loss(name, clean, beta=0.1)
    b, mb = _loss(name, dirty, beta=0.1)
    a.backward()
    b.backward()
    assert a.item() == pytest.approx(b.item(), abs=1e-12)
    assert torch.equal(clean.logp.grad, dirty.logp.grad)
    assert dirty.logp.grad[1, 2].item() == 0.0
    assert ma == pytest.approx(mb)


@pytest.mark.parametrize("name", ["grpo", "bnpo", "dapo", "dr_grpo"])
def test_gspo_equals_token_level_grpo_on_policy_only(name):
    torch.manual_seed(0)
    logp = torch.randn(4, 5, dtype=torch.float64)
    mask = torch.rand(4, 5) > 0.3
    mask[:, 0] = True
    adv = torch.randn(4, dtype=torch.float64)

    def run(loss_name, old):
        lp = logp.clone().requires_grad_(True)
        loss, _ = compute_policy_loss(loss_name, PolicyLossInput(lp, adv, mask, old_logp=old), PolicyLossConfig())
        loss.backward()
        return loss.item(), lp.grad

    gspo_val, gspo_grad = run("gspo", None)
    grpo_val, grpo_grad = run("grpo", None)
    assert gspo_val == pytest.approx(grpo_val, abs=1e-12)
    assert torch.allclose(gspo_grad, grpo_grad, atol=1e-12)
    old = logp + 0.3 * torch.randn(4, 5, dtype=torch.float64)
    assert run("gspo", old)[0] != pytest.approx(run("grpo", old)[0], abs=1e-6)


# ----------------------------------------------------------------------------- without metrics

@pytest.mark.parametrize("name", sorted(POLICY_LOSSES.names()))
def test_without_metrics_gives_the_same_loss_and_gradient(name):
    ref = torch.tensor(LOGP, dtype=torch.float64) + 0.1
    cfg = PolicyLossConfig(beta=0.1, max_completion_length=4)
    full, lean = _input(ref=ref, requires_grad=True), _input(ref=ref, requires_grad=True)
    a, metrics = compute_policy_loss(name, full, cfg)
    b, no_metrics = compute_policy_loss(name, lean, cfg, with_metrics=False)
    a.backward()
    b.backward()
    assert "loss/total" in metrics and no_metrics == {}
    assert a.item() == b.item()
    assert torch.equal(full.logp.grad, lean.logp.grad)


@pytest.mark.parametrize("name", sorted(POLICY_LOSSES.names()))
def test_without_metrics_never_reads_a_value(name):
    """Meta tensors have shapes and no data, so any host sync (.item(), bool(tensor), .tolist())
    raises on them: the loss without metrics computes on them, the metrics cannot."""
    def meta(*shape, dtype=torch.float64):
        return torch.empty(*shape, device="meta", dtype=dtype)

    inp = PolicyLossInput(meta(2, 3), meta(2), meta(2, 3, dtype=torch.bool), old_logp=meta(2, 3),
                          ref_logp=meta(2, 3), normalizer=LossNormalizer(num_sequences=4, num_tokens=9.0))
    cfg = PolicyLossConfig(beta=0.1, max_completion_length=4)
    loss, _ = compute_policy_loss(name, inp, cfg, with_metrics=False)
    assert loss.device.type == "meta" and loss.shape == ()
    with pytest.raises((NotImplementedError, RuntimeError), match="meta"):
        compute_policy_loss(name, inp, cfg)


# ----------------------------------------------------------------------------- split invariance

def _random_batch(n=8, t=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(n, t, generator=g, dtype=torch.float64) * 3
    old = logp + 0.3 * torch.randn(n, t, generator=g, dtype=torch.float64)
    ref = logp + 0.2 * torch.randn(n, t, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, t + 1, (n,), generator=g)
    mask = torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)
    adv = torch.randn(n, generator=g, dtype=torch.float64)
    return logp, old, ref, mask, adv


CFG = PolicyLossConfig(epsilon_high=0.28, beta=0.05, max_completion_length=6)


def _micro_losses(name, logp_leaf, old, ref, mask, adv, parts, normalizer_for):
    total = 0.0
    for idx in parts:
        inp = PolicyLossInput(logp_leaf[idx], adv[idx], mask[idx], old[idx], ref[idx], normalizer_for(idx))
        loss, _ = compute_policy_loss(name, inp, CFG)
        total = total + loss
    return total


def _full(name, logp, old, ref, mask, adv):
    leaf = logp.clone().requires_grad_(True)
    loss, _ = compute_policy_loss(name, PolicyLossInput(leaf, adv, mask, old, ref), CFG)
    loss.backward()
    return loss.item(), leaf.grad


@pytest.mark.parametrize("name", sorted(POLICY_LOSSES.names()))
@pytest.mark.parametrize("num_micro", [2, 4])
def test_gradient_accumulation_split_gives_the_full_batch_loss(name, num_micro):
    logp, old, ref, mask, adv = _random_batch()
    full_loss, full_grad = _full(name, logp, old, ref, mask, adv)
    total_tokens = float(mask.sum())
    norm = LossNormalizer(num_sequences=8, num_tokens=total_tokens, num_local_tokens=total_tokens)
    leaf = logp.clone().requires_grad_(True)
    parts = torch.arange(8).chunk(num_micro)
    summed = _micro_losses(name, leaf, old, ref, mask, adv, parts, lambda idx: norm)
    summed.backward()
    assert summed.item() == pytest.approx(full_loss, abs=1e-12)
    assert torch.allclose(leaf.grad, full_grad, atol=1e-12)


@pytest.mark.parametrize("name", ["grpo", "dapo", "dr_grpo", "gspo"])
def test_data_parallel_split_gives_the_full_batch_loss(name):
    """2 processes x 2 micro-batches; the backend averages over processes, as DDP does."""
    logp, old, ref, mask, adv = _random_batch(seed=1)
    full_loss, full_grad = _full(name, logp, old, ref, mask, adv)
    leaf = logp.clone().requires_grad_(True)
    norm = LossNormalizer(num_sequences=8, num_tokens=float(mask.sum()), num_processes=2)
    processes = [torch.arange(0, 4), torch.arange(4, 8)]
    per_process = [_micro_losses(name, leaf, old, ref, mask, adv, p.chunk(2), lambda idx: norm) for p in processes]
    averaged = sum(per_process) / 2
    averaged.backward()
    assert averaged.item() == pytest.approx(full_loss, abs=1e-12)
    assert torch.allclose(leaf.grad, full_grad, atol=1e-12)


def test_bnpo_is_the_mean_of_per_process_token_means():
    logp, old, ref, mask, adv = _random_batch(seed=2)
    processes = [torch.arange(0, 4), torch.arange(4, 8)]
    expected = sum(_full("bnpo", logp[p], old[p], ref[p], mask[p], adv[p])[0] for p in processes) / 2
    leaf = logp.clone().requires_grad_(True)
    per_process = []
    for p in processes:
        norm = LossNormalizer(num_sequences=8, num_tokens=float(mask.sum()),
                              num_local_tokens=float(mask[p].sum()), num_processes=2)
        per_process.append(_micro_losses("bnpo", leaf, old, ref, mask, adv, p.chunk(2), lambda idx: norm))
    assert (sum(per_process) / 2).item() == pytest.approx(expected, abs=1e-12)
    # and it differs from dapo's global token mean when the processes hold different token counts
    assert float(mask[processes[0]].sum()) != float(mask[processes[1]].sum())
    assert expected != pytest.approx(_full("dapo", logp, old, ref, mask, adv)[0], abs=1e-9)


# ----------------------------------------------------------------------------- errors and config

def test_registry_duplicate_and_unknown():
    with pytest.raises(ValueError, match="already registered"):
        register_policy_loss("grpo")(lambda inp, cfg: None)
    with pytest.raises(ValueError, match="valid: bnpo, dapo, dr_grpo, grpo, gspo"):
        compute_policy_loss("ppo", _input())


def test_bad_inputs_name_the_field():
    with pytest.raises(ValueError, match="max_completion_length"):
        compute_policy_loss("dr_grpo", _input(), PolicyLossConfig())
    with pytest.raises(ValueError, match="completions have 3 tokens > max_completion_length 2"):
        compute_policy_loss("dr_grpo", _input(), PolicyLossConfig(max_completion_length=2))
    with pytest.raises(ValueError, match="ref_logp"):
        compute_policy_loss("grpo", _input(), PolicyLossConfig(beta=0.1))
    with pytest.raises(ValueError, match="advantages"):
        compute_policy_loss("grpo", PolicyLossInput(torch.zeros(2, 3), torch.zeros(3), torch.ones(2, 3)))
    with pytest.raises(ValueError, match="num_sequences and num_tokens"):
        compute_policy_loss("grpo", _input(normalizer=LossNormalizer(num_processes=2)))
    with pytest.raises(ValueError, match="normalizer.num_tokens"):
        compute_policy_loss("grpo", _input(normalizer=LossNormalizer(num_tokens=0)))


def test_config_loads_from_yaml_data_and_validates():
    cfg = from_dict(PolicyLossConfig, {"epsilon_high": 0.28, "beta": 0.04, "kl_type": "k2"})
    assert cfg.epsilon_high == 0.28 and cfg.kl_type == "k2"
    with pytest.raises(ConfigError, match="unknown key epsilon"):
        from_dict(PolicyLossConfig, {"epsilon": 0.2})
    with pytest.raises(ConfigError, match="epsilon_low must be in"):
        from_dict(PolicyLossConfig, {"epsilon_low": 1.5})
    with pytest.raises(ConfigError, match="kl_type 'k9' unknown"):
        from_dict(PolicyLossConfig, {"kl_type": "k9"})
