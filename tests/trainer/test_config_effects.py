"""Each behaviour-changing GRPOConfig field has an effect (spot checks), bad names fail before any
work, accumulation is split-invariant, and non-finite updates are skipped then stop the run."""
import json

import pytest
import torch

import rlvr.kernels
from rlvr.config import from_dict
from rlvr.trainer import GRPOConfig, NonFiniteError, run_grpo
from rlvr.trainer.checkpoint import list_checkpoints

from grpo_fixtures import SevensTask, small_config, tiny_policy


def train(tmp_path, name, **overrides):
    policy = tiny_policy()
    out = tmp_path / name
    final = run_grpo(policy, SevensTask(), small_config(**overrides), out)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return policy, final, rows


def params(policy) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in policy.model.named_parameters()}


def test_micro_batches_give_the_same_gradient_as_one_batch(tmp_path):
    # Same rollouts (same seed); the first update's loss and gradient norm must not depend on how
    # the batch is split (Adam's sign-like first step would hide small gradient errors in params).
    _, _, whole = train(tmp_path, "whole", steps=1, micro_batch_size=0)
    _, _, split = train(tmp_path, "split", steps=1, micro_batch_size=3)  # 16 rows -> 3+3+3+3+3+1
    for key in ("loss/total", "grad_norm", "loss/policy", "entropy/mean"):
        assert split[0][key] == pytest.approx(whole[0][key], rel=1e-5, abs=1e-7), key
    assert whole[0]["grad_norm"] > 0


@pytest.mark.parametrize("packing", [False, True])
def test_a_token_budget_gives_the_same_update_as_one_batch(tmp_path, packing):
    # stop strings give completions of different lengths; two updates per rollout and a KL term make
    # the old and reference log-probs go through the micro-batches too
    settings = dict(steps=1, stop=["1", "2", "3", "a", "e"], num_iterations=2, beta=0.1, packing=packing)
    _, _, whole = train(tmp_path, "whole", **settings)
    _, _, budget = train(tmp_path, "budget", micro_batch_tokens=40, **settings)
    assert whole[0]["completions/mean_length"] < 5.5, "the stop strings must vary the lengths"
    assert whole[0]["update/micro_batches"] == 1 and budget[0]["update/micro_batches"] >= 3
    for key in ("loss/total", "grad_norm", "loss/policy", "loss/kl", "entropy/mean"):
        assert budget[0][key] == pytest.approx(whole[0][key], rel=1e-5, abs=1e-7), key


def test_micro_batch_size_and_tokens_are_one_or_the_other():
    with pytest.raises(ValueError, match=r"set micro_batch_size \(4\) or micro_batch_tokens \(64\), not both"):
        small_config(micro_batch_size=4, micro_batch_tokens=64)
    with pytest.raises(ValueError, match="micro_batch_tokens must be >= 0"):
        small_config(micro_batch_tokens=-1)


def test_loss_type_advantage_and_stop_change_the_update(tmp_path):
    # stop strings give completions of different lengths, where per-sequence and token means differ
    stop = ["1", "2", "3", "a", "e"]
    _, _, dapo = train(tmp_path, "dapo", steps=1, stop=stop)
    _, _, grpo = train(tmp_path, "grpo", steps=1, stop=stop, loss_type="grpo")
    _, _, rloo = train(tmp_path, "rloo", steps=1, stop=stop, advantage="rloo")
    _, _, nostop = train(tmp_path, "nostop", steps=1)
    assert dapo[0]["completions/mean_length"] < nostop[0]["completions/mean_length"]
    assert dapo[0]["reward/mean"] == grpo[0]["reward/mean"] == rloo[0]["reward/mean"]  # same rollouts
    assert grpo[0]["grad_norm"] != pytest.approx(dapo[0]["grad_norm"], rel=1e-3)
    assert rloo[0]["grad_norm"] != pytest.approx(dapo[0]["grad_norm"], rel=1e-3)


def test_mask_truncated_completions_leaves_them_out_of_the_loss(tmp_path):
    # 3 new tokens: all but one completion (an EOS, in a zero-reward group with this seed) are
    # truncated, so with masking nothing trains
    size = dict(steps=1, max_new_tokens=3, prompts_per_step=8, num_generations=8)
    init = params(tiny_policy())
    masked, _, m_rows = train(tmp_path, "masked", mask_truncated_completions=True, **size)
    unmasked, _, u_rows = train(tmp_path, "unmasked", **size)
    assert m_rows[0]["completions/clipped_ratio"] > 0.95
    assert u_rows[0]["reward/std"] > 0, "some 7s must be sampled for the test to mean anything"
    assert m_rows[0]["grad_norm"] == 0.0 and u_rows[0]["grad_norm"] > 0.0
    assert all(torch.equal(init[k], v) for k, v in params(masked).items())
    assert any(not torch.equal(init[k], v) for k, v in params(unmasked).items())


def test_greedy_temperature_zero_makes_groups_identical(tmp_path):
    _, _, rows = train(tmp_path, "greedy", steps=1, temperature=0.0)
    assert rows[0]["frac_reward_zero_std"] == 1.0
    # identical samples: zero advantages, so the update has nothing to follow
    assert rows[0]["advantage/abs_max"] == 0.0 and rows[0]["grad_norm"] == 0.0


def test_beta_adds_a_kl_term_and_num_iterations_goes_off_policy(tmp_path):
    _, _, plain = train(tmp_path, "plain", steps=2)
    assert "kl/mean" not in plain[-1] and plain[-1]["loss/kl"] == 0.0
    _, _, kl = train(tmp_path, "kl", steps=3, beta=0.1)
    assert kl[-1]["kl/mean"] > 0.0 and kl[-1]["loss/kl"] != 0.0  # policy moved away from the reference
    _, _, mu = train(tmp_path, "mu", steps=1, num_iterations=3)
    assert mu[0]["ratio/mean"] != 1.0  # later iterations see pi_theta != pi_old
    assert plain[0]["ratio/mean"] == 1.0  # on-policy: the ratio is exactly 1


def test_dynamic_sampling_resamples_and_keeps_informative_groups(tmp_path):
    _, _, off = train(tmp_path, "off", steps=2, prompts_per_step=4, num_generations=2)
    _, _, on = train(tmp_path, "on", steps=2, prompts_per_step=4, num_generations=2,
                     dynamic_sampling=True, max_sampling_rounds=4)
    assert "dynamic_sampling/rounds" not in off[0]
    # the untrained model rarely writes a 7: most groups are all-zero, so it samples again and
    # trains on more informative groups than one round gives (same seed: same first round)
    assert off[0]["frac_reward_zero_std"] > 0.5
    assert on[0]["dynamic_sampling/rounds"] > 1
    assert on[0]["dynamic_sampling/informative_frac"] > 1 - off[0]["frac_reward_zero_std"]
    assert all(1 <= row["dynamic_sampling/rounds"] <= 4 for row in on)


def test_unknown_registry_names_fail_before_training(tmp_path):
    for field, match in (("advantage", "valid: .*grpo"), ("loss_type", "valid: .*dapo"),
                         ("engine", "valid: auto, .*hf"), ("kl_type", "k3")):
        with pytest.raises(ValueError, match=match):
            run_grpo(tiny_policy(), SevensTask(), small_config(**{field: "nope"}), tmp_path / field)
        assert not (tmp_path / field).exists()


@pytest.mark.parametrize("field,value,match", [
    ("num_generations", 1, "num_generations"),
    ("top_p", 0.0, "top_p"),
    ("learning_rate", 0.0, "learning_rate"),
    ("steps", 0, "steps"),
])
def test_invalid_values_raise(field, value, match):
    with pytest.raises(ValueError, match=match):
        from_dict(GRPOConfig, {field: value})  # as a recipe stage: top_p is sampling.top_p


def test_nonfinite_updates_are_skipped_then_the_run_stops_with_a_checkpoint(tmp_path, monkeypatch):
    real = rlvr.kernels.fused_policy_loss

    def nan_loss(*args, **kwargs):
        loss, metrics = real(*args, **kwargs)
        return loss * float("nan"), metrics

    monkeypatch.setattr(rlvr.kernels, "fused_policy_loss", nan_loss)
    policy = tiny_policy()
    init = params(policy)
    with pytest.warns(UserWarning, match="update skipped"):
        with pytest.raises(NonFiniteError, match="2 consecutive"):
            run_grpo(policy, SevensTask(), small_config(steps=5, max_consecutive_nonfinite=2), tmp_path)
    assert [s for s, _ in list_checkpoints(tmp_path / "checkpoints")] == [2]
    assert all(torch.equal(init[k], v) for k, v in params(policy).items())  # no update was applied


def test_a_skipped_update_names_the_parameters_whose_gradients_are_not_finite(tmp_path):
    """A finite loss with a NaN born inside the backward pass (as the GPU runs' rare skipped
    updates): it reaches every parameter before its origin, and the warning brackets the origin
    with the bad parameters nearest the output and the finite ones after them."""
    policy = tiny_policy()
    names = [n for n, _ in policy.model.named_parameters()]

    def poison_input_grad(module, args, out):  # NaN enters below layer 0's down_proj (training forward only)
        if args[0].requires_grad:
            args[0].register_hook(lambda grad: grad * float("nan"))

    policy.model.model.layers[0].mlp.down_proj.register_forward_hook(poison_input_grad)
    with pytest.warns(UserWarning, match="update skipped") as caught:
        with pytest.raises(NonFiniteError):
            run_grpo(policy, SevensTask(), small_config(steps=3, max_consecutive_nonfinite=2), tmp_path)
    message = str(next(w.message for w in caught if "update skipped" in str(w.message)))
    # registration order within a layer: attention, MLP, then both norms (whose gradients come after the NaN)
    bad = names[:names.index("model.layers.0.mlp.down_proj.weight")] + [
        "model.layers.0.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight"]
    assert "grad norm (nan)" in message
    bad_part, finite_part = message.split("non-finite gradients in ")[1].split("; finite (")
    assert bad_part.startswith(f"{len(bad)} of {len(names)} parameters, nearest the output: "
                               "model.layers.0.post_attention_layernorm.weight, model.layers.0.input_layernorm.weight")
    assert finite_part.startswith(f"{len(names) - len(bad)}), nearest the output: model.norm.weight")
    assert "layers.0" not in finite_part and "layers.1" not in bad_part


def test_attention_backends_choose_the_kernel_of_the_update(tmp_path):
    """`attention_backends: [math]` trains as torch's own choice does (the CPU has no faster kernel
    for a padding mask); a kernel this machine lacks fails the update, so the choice does reach it;
    an unknown name fails before any work."""
    policy, _, rows = train(tmp_path, "math", steps=2, attention_backends=["math"])
    _, _, default_rows = train(tmp_path, "default", steps=2)
    assert default_rows[0]["grad_norm"] > 0
    assert [r["grad_norm"] for r in rows] == pytest.approx([r["grad_norm"] for r in default_rows], rel=1e-5)
    assert all(torch.isfinite(p).all() for p in params(policy).values())
    policy = tiny_policy()  # its attention is sdpa
    with pytest.raises(RuntimeError, match="No viable backend for scaled_dot_product_attention"):
        run_grpo(policy, SevensTask(), small_config(steps=1, attention_backends=["efficient"]), tmp_path / "efficient")
    with pytest.raises(ValueError, match="attention_backends: unknown \\['fast'\\]"):
        small_config(attention_backends=["fast"])


def _small_device(monkeypatch, holds: int, logprobs_hold: int | None = None) -> list[int]:
    """A device that holds the activations of `holds` sequences at most in the update (and of
    `logprobs_hold` in the no-grad log-prob passes; default: as many); returns the rows of every
    update forward that fit."""
    fused, scored, fitted = rlvr.kernels.fused_policy_loss, rlvr.kernels.token_logprobs, []

    def small_device(hidden, *args, **kwargs):
        if hidden.shape[0] > holds:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 700.00 MiB.")
        fitted.append(hidden.shape[0])
        return fused(hidden, *args, **kwargs)

    def small_device_no_grad(hidden, *args, **kwargs):
        if hidden.shape[0] > (holds if logprobs_hold is None else logprobs_hold):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 300.00 MiB.")
        return scored(hidden, *args, **kwargs)

    monkeypatch.setattr(rlvr.kernels, "fused_policy_loss", small_device)
    monkeypatch.setattr(rlvr.kernels, "token_logprobs", small_device_no_grad)
    return fitted


def test_out_of_memory_in_the_update_names_the_settings_that_fit(tmp_path, monkeypatch):
    # without split_on_oom the whole batch (16) fails with a message naming micro_batch_size, and the
    # setting it names trains
    _small_device(monkeypatch, holds=4)
    with pytest.raises(torch.OutOfMemoryError, match=r"16 of 16 sequences x up to \d+ tokens.*micro_batch_size.*"
                                                     r"gradient_checkpointing.*--resume auto.*Tried to allocate"):
        train(tmp_path, "whole", steps=1, split_on_oom=False)
    _, _, rows = train(tmp_path, "split", steps=1, micro_batch_size=4)
    assert rows[0]["grad_norm"] > 0 and rows[0]["update/oom_splits"] == 0


def test_split_on_oom_runs_the_update_again_in_smaller_micro_batches(tmp_path, monkeypatch):
    # by default the failed update runs again under half the tokens until its micro-batches fit: the
    # same update as micro-batches chosen up front, a warning, and the splits counted; the later
    # updates of the batch (num_iterations) start from the micro-batches that fit
    _, _, planned = train(tmp_path, "planned", steps=1, micro_batch_size=2, num_iterations=2)
    fitted = _small_device(monkeypatch, holds=4)
    with pytest.warns(UserWarning, match=r"out of memory in the GRPO update with 1 micro-batch\(es\); running it"):
        _, _, rows = train(tmp_path, "split", steps=1, num_iterations=2)
    assert rows[0]["update/oom_splits"] >= 2  # 16 -> at most 4 rows: the first pass (old log-probs) split it
    assert fitted and max(fitted) <= 4 and sum(fitted) == 2 * 16  # the updates started from micro-batches that fit
    assert rows[0]["grad_norm"] == pytest.approx(planned[0]["grad_norm"], rel=1e-5)
    assert rows[0]["loss/total"] == pytest.approx(planned[0]["loss/total"], rel=1e-5, abs=1e-7)

    # a failure in the second micro-batch, after the first one's backward: its gradients are dropped
    monkeypatch.undo()
    fused, calls = rlvr.kernels.fused_policy_loss, []

    def fails_once_late(hidden, *args, **kwargs):
        calls.append(hidden.shape[0])
        if len(calls) == 2:
            raise torch.OutOfMemoryError("CUDA out of memory (fragmented)")
        return fused(hidden, *args, **kwargs)

    monkeypatch.setattr(rlvr.kernels, "fused_policy_loss", fails_once_late)
    with pytest.warns(UserWarning, match="with 2 micro-batch"):
        _, _, late = train(tmp_path, "late", steps=1, micro_batch_size=8, num_iterations=2)
    assert late[0]["grad_norm"] == pytest.approx(planned[0]["grad_norm"], rel=1e-5)

    # the old log-prob pass fits where the update does not: the update splits, the log-probs stay whole
    _small_device(monkeypatch, holds=4, logprobs_hold=16)
    _, _, late_split = train(tmp_path, "update-only", steps=1, num_iterations=2)
    assert late_split[0]["update/oom_splits"] >= 2
    assert late_split[0]["grad_norm"] == pytest.approx(planned[0]["grad_norm"], rel=1e-5)

    # packed rows: the halvings count real tokens as the packing budget does, so they end
    fitted = _small_device(monkeypatch, holds=1)  # packed: each forward is one row of sequences end to end
    _, _, packed = train(tmp_path, "packed", steps=1, packing=True, packing_row_tokens=24)
    assert packed[0]["update/oom_splits"] >= 1 and packed[0]["grad_norm"] > 0

    # a device that holds no row: split down to single rows, then the error with its hint
    _small_device(monkeypatch, holds=0)
    with pytest.raises(torch.OutOfMemoryError, match=r"1 of 16 sequences x up to \d+ tokens per forward, after "
                                                     r"\d+ halving\(s\) by split_on_oom.*gradient_checkpointing"):
        train(tmp_path, "none", steps=1)


@pytest.mark.parametrize("engine", ["ddp", "zero2", "fsdp2"])
def test_split_on_oom_leaves_the_error_to_distributed_engines(engine):
    # other processes would wait in a collective, and DeepSpeed steps inside the last backward: no retry
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from rlvr.trainer.grpo import _Fitting, _PassesOOM
    from rlvr.trainer.micro_batches import micro_batches
    from test_micro_batches import _batch

    kind = {"ddp": DistributedType.MULTI_GPU, "zero2": DistributedType.DEEPSPEED, "fsdp2": DistributedType.FSDP}
    acc = SimpleNamespace(distributed_type=kind[engine], num_processes=2, is_fsdp2=True,
                          state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(zero_stage=2)))
    batch = _batch()
    t = SimpleNamespace(acc=acc, optimizer=None)
    fit = _Fitting(t, batch, micro_batches(batch, 0, 0, False), small_config())
    calls = []

    def passes(groups):
        calls.append(len(groups))
        raise _PassesOOM() from torch.OutOfMemoryError("CUDA out of memory.")

    with pytest.raises(torch.OutOfMemoryError, match="8 of 8 sequences"):
        fit.run(passes)
    assert calls == [1] and fit.splits == 0
