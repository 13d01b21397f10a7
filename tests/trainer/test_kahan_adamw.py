"""KahanAdamW: AdamW whose bfloat16 weights keep what rounding drops. Small steps that pure bfloat16
AdamW rounds away add up as they do in float32, float32 parameters step exactly as torch's AdamW,
and a resumed optimizer continues bit for bit."""
from __future__ import annotations

import io

import pytest
import torch

from rlvr.trainer.optimizer import CHUNK, KahanAdamW, make_optimizer

SETTINGS = dict(lr=1e-6, betas=(0.9, 0.999), weight_decay=0.01)


def _weights(n: int = 4096, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, generator=g) * 0.02).to(torch.bfloat16).float()  # values bf16 holds exactly


def _grads(steps: int, n: int = 4096, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    bias = torch.randn(n, generator=g)  # a steady direction, as a learning signal has
    return [(bias + 0.5 * torch.randn(n, generator=g)).to(torch.bfloat16) for _ in range(steps)]


def _train(opt_cls, dtype, grads, **settings) -> tuple[torch.nn.Parameter, torch.optim.Optimizer]:
    p = torch.nn.Parameter(_weights().to(dtype))
    opt = opt_cls([p], **{**SETTINGS, **settings})
    for g in grads:
        p.grad = g.to(dtype)
        opt.step()
    return p, opt


def test_small_steps_add_up_as_in_float32_where_pure_bf16_drops_them():
    grads = _grads(200)
    reference, _ = _train(torch.optim.AdamW, torch.float32, grads)
    kahan, opt = _train(KahanAdamW, torch.bfloat16, grads)
    pure, _ = _train(torch.optim.AdamW, torch.bfloat16, grads)
    start = _weights()
    moved = (reference.detach() - start).abs()
    assert moved.mean() > 1e-4  # 200 steps of about lr each: above bf16's resolution of most weights
    assert kahan.dtype == torch.bfloat16
    # bf16 weight + compensation is the float32 trajectory, up to the compensation's own bf16
    # rounding (half a bf16 step of the residual per update, unbiased)
    effective = kahan.detach().float() + opt.state[kahan]["compensation"].float()
    assert (effective - reference.detach()).abs().mean() < 0.02 * moved.mean()
    # the bf16 weight itself is the float32 one rounded to nearest: within half a bf16 step of it
    half_ulp = reference.detach().abs() * 2.0 ** -8
    assert ((kahan.detach().float() - reference.detach()).abs() <= half_ulp * 1.01).all()
    # pure bf16 AdamW rounded almost every one of the same updates away
    assert (pure.detach().float() != start).float().mean() < 0.1
    assert (kahan.detach().float() != start).float().mean() > 0.8


def test_float32_parameters_step_exactly_as_torch_adamw():
    grads = _grads(20)
    settings = dict(lr=3e-3, weight_decay=0.1, betas=(0.8, 0.95))
    ours, opt = _train(KahanAdamW, torch.float32, grads, **settings)
    theirs, _ = _train(torch.optim.AdamW, torch.float32, grads, foreach=False, **settings)
    torch.testing.assert_close(ours.detach(), theirs.detach(), rtol=1e-6, atol=1e-9)
    assert "compensation" not in opt.state[ours]  # nothing is rounded away in float32


def test_moments_are_float32_and_stay_float32_after_load_state_dict():
    grads = _grads(6)
    p, opt = _train(KahanAdamW, torch.bfloat16, grads[:3])
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    q = torch.nn.Parameter(p.detach().clone())
    resumed = KahanAdamW([q], **SETTINGS)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    state = resumed.state[q]
    assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.float32
    assert state["compensation"].dtype == torch.bfloat16
    for g in grads[3:]:
        p.grad, q.grad = g, g.clone()
        opt.step()
        resumed.step()
    assert torch.equal(p.detach(), q.detach())
    assert torch.equal(opt.state[p]["compensation"], resumed.state[q]["compensation"])


def test_parameters_larger_than_a_chunk_update_every_element(monkeypatch):
    import rlvr.trainer.optimizer as module

    grads = _grads(5)
    whole, _ = _train(KahanAdamW, torch.bfloat16, grads)
    monkeypatch.setattr(module, "CHUNK", 1000)  # 4096 elements in five chunks, the last one short
    chunked, _ = _train(KahanAdamW, torch.bfloat16, grads)
    assert module.CHUNK < 4096 <= CHUNK
    assert torch.equal(whole.detach(), chunked.detach())


def test_parameters_without_gradients_are_left_alone():
    p = torch.nn.Parameter(torch.ones(8, dtype=torch.bfloat16))
    opt = KahanAdamW([p], lr=0.1)
    opt.step()
    assert torch.equal(p.detach(), torch.ones(8, dtype=torch.bfloat16)) and not opt.state


@pytest.mark.parametrize("bad", [dict(lr=-1.0), dict(betas=(0.9, 1.0)), dict(eps=-1e-8), dict(weight_decay=-0.1)])
def test_invalid_settings_are_refused(bad):
    with pytest.raises(ValueError, match="KahanAdamW: invalid"):
        KahanAdamW([torch.nn.Parameter(torch.zeros(2))], **bad)


def test_make_optimizer_picks_kahan_for_bf16_kahan_only():
    params = [torch.nn.Parameter(torch.zeros(2))]
    kwargs = dict(lr=1e-3, weight_decay=0.0, betas=(0.9, 0.99))
    assert type(make_optimizer(params, "bf16-kahan", **kwargs)) is KahanAdamW
    for precision in ("bf16-mixed", "bf16", "fp32"):
        assert type(make_optimizer(params, precision, **kwargs)) is torch.optim.AdamW


@pytest.mark.parametrize("engine", ["zero2", "fsdp2"])
def test_deepspeed_and_fsdp_refuse_kahan_adamw_in_one_line(engine):
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from rlvr.trainer.distributed import DistributedConfigError, prepare

    acc = SimpleNamespace(num_processes=2, is_fsdp2=True,
                          distributed_type=DistributedType.DEEPSPEED if engine == "zero2" else DistributedType.FSDP,
                          state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(zero_stage=2)))
    model = torch.nn.Linear(2, 2)
    with pytest.raises(DistributedConfigError, match=f"bf16-kahan runs on one process or under DDP, not {engine}"):
        prepare(acc, model, KahanAdamW(model.parameters()), max_grad_norm=1.0)


def test_a_loaded_step_count_comes_back_as_a_float32_cpu_tensor():
    p, opt = _train(KahanAdamW, torch.bfloat16, _grads(2))
    saved = opt.state_dict()
    saved["state"][0]["step"] = saved["state"][0]["step"].to(torch.float64)  # as a map_location may leave it
    resumed = KahanAdamW([torch.nn.Parameter(p.detach().clone())], **SETTINGS)
    resumed.load_state_dict(saved)
    (state,) = resumed.state.values()
    assert state["step"].device.type == "cpu" and state["step"].dtype == torch.float32 and state["step"].item() == 2


@pytest.mark.slow
def test_the_compiled_update_steps_as_the_eager_ops(monkeypatch):
    import rlvr.trainer.optimizer as module

    grads = _grads(20)
    eager, eager_opt = _train(KahanAdamW, torch.bfloat16, grads, update="eager")
    monkeypatch.setattr(module, "COMPILE_FROM", 4096)  # the default compiles a model this large
    with torch._dynamo.config.patch(error_on_recompile=True):  # one graph for every step
        fused, fused_opt = _train(KahanAdamW, torch.bfloat16, grads)
    assert fused_opt._compiled_update is not None and fused_opt.update is None  # compiled, no fallback
    # one fused kernel may contract a multiply-add the eager ops round twice: equal up to float32 rounding
    effective = [p.detach().float() + opt.state[p]["compensation"].float()
                 for p, opt in ((eager, eager_opt), (fused, fused_opt))]
    torch.testing.assert_close(effective[0], effective[1], rtol=0, atol=1e-9)
    assert (eager.detach() == fused.detach()).float().mean() > 0.99
    for key in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(eager_opt.state[eager][key], fused_opt.state[fused][key])


@pytest.mark.parametrize("update", ["compiled", "triton"])
def test_a_failing_compiled_or_triton_update_warns_and_steps_with_the_eager_ops(monkeypatch, update):
    import rlvr.trainer.optimizer as module

    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    if update == "compiled":
        monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: broken)
    else:
        monkeypatch.setattr(module, "_triton_update", broken)
    grads = _grads(3)
    with pytest.warns(UserWarning, match=f"{update} update failed .*no compiler here.*eager ops"):
        fallen, opt = _train(KahanAdamW, torch.bfloat16, grads, update=update)
    eager, _ = _train(KahanAdamW, torch.bfloat16, grads, update="eager")
    assert opt.update == "eager" and torch.equal(fallen.detach(), eager.detach())


def test_the_cpu_default_is_the_eager_ops():
    _, opt = _train(KahanAdamW, torch.bfloat16, _grads(2))
    assert opt.update is None and opt.update_for(next(iter(opt.state))) == "eager" and opt._compiled_update is None


def test_an_unknown_update_is_refused():
    with pytest.raises(ValueError, match="unknown update 'fused'; valid: eager, compiled, triton"):
        KahanAdamW([torch.nn.Parameter(torch.zeros(2))], update="fused")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("update", [None, "compiled"])
def test_on_cuda_the_default_and_the_compiled_update_step_as_the_eager_ops(update):
    grads = [g.cuda() for g in _grads(20)]

    def train(update):
        p = torch.nn.Parameter(_weights().to("cuda", torch.bfloat16))
        opt = KahanAdamW([p], update=update, **SETTINGS)
        for g in grads:
            p.grad = g
            opt.step()
        return p, opt

    eager, eager_opt = train("eager")
    # one graph for all 20 steps: a recompile (the step size changes every step) raises, and the
    # optimizer falls back to the eager ops, which the next line catches
    with torch._dynamo.config.patch(error_on_recompile=True):
        fused, fused_opt = train(update)
    assert fused_opt.update == update and fused_opt.update_for(fused) == (update or "triton")  # no fallback
    # a weight rounded to the neighbouring bf16 value moves one step into the compensation, which
    # rounds at 2^-9 of it (tests/kernels/test_triton_kahan_adamw.py has the kernel's own tests)
    effective = [p.detach().float() + opt.state[p]["compensation"].float()
                 for p, opt in ((eager, eager_opt), (fused, fused_opt))]
    torch.testing.assert_close(effective[0], effective[1], rtol=0, atol=2.5e-7)
    assert (effective[0] - effective[1]).abs().mean() < 1e-9
    assert (eager.detach() == fused.detach()).float().mean() > 0.99
