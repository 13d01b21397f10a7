"""The fast engine computes the same model as transformers: greedy tokens equal `generate`'s and
the returned log-probs equal a full forward pass over the sampled tokens.

The CPU tests run the engine's eager decode step; the `gpu` tests run the CUDA-graph path
(and the compiled one) on the device machine.
"""
from __future__ import annotations

import warnings

import pytest
import torch

from rlvr.models.char_tokenizer import build_char_tokenizer
from rlvr.rollout import make_engine
from rlvr.rollout.base import SamplingParams
from rlvr.rollout.fast import FastEngine, FastEngineConfig
from rlvr.rollout.hf import HFEngine

PROMPTS = ["Q: 12+7=", "Q: what is 3*4? A:", "hi"]  # different lengths: left padding is exercised


def _model(tokenizer, arch="qwen2", dtype=torch.float32, device="cpu", hidden=64):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    cls_cfg, cls_model = {"qwen2": (Qwen2Config, Qwen2ForCausalLM), "llama": (LlamaConfig, LlamaForCausalLM)}[arch]
    config = cls_cfg(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2,  # grouped-query attention
                     max_position_embeddings=256, initializer_range=0.2,  # peaked logits: no argmax ties
                     pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = cls_model(config).to(device=device, dtype=dtype).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def _prompt_ids(tokenizer):
    return [tokenizer(p)["input_ids"] for p in PROMPTS]


def _forward_logprobs(model, prompt: list[int], completion: list[int], temperature: float) -> torch.Tensor:
    ids = torch.tensor([prompt + completion], device=model.device)
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1: -1].float() / temperature
    return logits.log_softmax(-1).gather(1, torch.tensor(completion, device=ids.device)[:, None]).squeeze(1)


def _check_greedy_matches_generate(model, tokenizer, engine):
    params = SamplingParams(max_new_tokens=24, temperature=0.0)
    prompts = _prompt_ids(tokenizer)
    ours = engine.generate(prompts, 2, params)
    theirs = HFEngine(model, tokenizer).generate(prompts, 2, params)
    assert ours.completion_ids == theirs.completion_ids
    assert ours.truncated == theirs.truncated
    assert ours.texts == theirs.texts


def _check_sampled_logprobs(model, tokenizer, engine, params, tol, mean_tol=None):
    prompts = _prompt_ids(tokenizer)
    out = engine.generate(prompts, 3, params)
    assert len(out.completion_ids) == 9 and out.logprobs is not None
    for i, (completion, logprobs) in enumerate(zip(out.completion_ids, out.logprobs)):
        assert len(logprobs) == len(completion) > 0
        expected = _forward_logprobs(model, prompts[i // 3], completion, params.temperature)
        diff = (torch.tensor(logprobs) - expected.cpu()).abs()
        assert diff.max().item() <= tol, (i, diff.max().item())
        if mean_tol is not None:
            assert diff.mean().item() <= mean_tol, (i, diff.mean().item())
    return out


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_greedy_tokens_equal_generate_cpu(arch):
    tokenizer = build_char_tokenizer()
    model = _model(tokenizer, arch)
    _check_greedy_matches_generate(model, tokenizer, FastEngine(model, tokenizer))


def test_sampled_logprobs_match_forward_cpu():
    tokenizer = build_char_tokenizer()
    model = _model(tokenizer)
    params = SamplingParams(max_new_tokens=16, temperature=0.7, top_k=20, top_p=0.9, seed=1)
    out = _check_sampled_logprobs(model, tokenizer, FastEngine(model, tokenizer), params, tol=1e-4)
    # samples of one prompt differ (G independent draws, not copies of one)
    assert len({tuple(c) for c in out.completion_ids[:3]}) > 1


def test_stop_string_cuts_on_token_boundary_cpu():
    tokenizer = build_char_tokenizer()
    model = _model(tokenizer)
    engine = FastEngine(model, tokenizer)
    params = SamplingParams(max_new_tokens=20, temperature=0.0)
    greedy = engine.generate(_prompt_ids(tokenizer), 1, params)
    row = max(range(len(PROMPTS)), key=lambda i: len(greedy.texts[i]))
    assert len(greedy.texts[row]) >= 2, "need two characters to pick a stop string from"
    stop = greedy.texts[row][:2]
    params.stop = [stop]
    cut = engine.generate(_prompt_ids(tokenizer), 1, params)
    assert cut.texts[row] == stop  # greedy is deterministic: the same text, cut after the stop string
    assert cut.truncated[row] is False
    assert cut.completion_ids[row] == greedy.completion_ids[row][: len(cut.completion_ids[row])]


def test_end_at_forces_eos_at_each_rows_length_cpu():
    """`end_at` ends each row with EOS at its own length; the tokens before it are the unforced ones."""
    tokenizer = build_char_tokenizer()
    model = _model(tokenizer)
    engine = FastEngine(model, tokenizer)
    params = SamplingParams(max_new_tokens=12, temperature=0.0)
    free = engine.generate(_prompt_ids(tokenizer), 2, params)
    end_at = [1, 2, 3, 5, 8, 40]  # the last is beyond max_new_tokens: never forced
    forced = engine.generate(_prompt_ids(tokenizer), 2, params, end_at=end_at)
    for free_ids, ids, logps, cut, truncated in zip(free.completion_ids, forced.completion_ids, forced.logprobs,
                                                    end_at, forced.truncated):
        if len(free_ids) < cut:  # the model ended first on its own
            assert ids == free_ids
            continue
        assert ids == free_ids[: cut - 1] + [tokenizer.eos_token_id]
        assert truncated is False and logps[-1] == pytest.approx(0.0, abs=1e-4)
    assert forced.completion_ids[5] == free.completion_ids[5]
    with pytest.raises(ValueError, match="end_at"):
        engine.generate(_prompt_ids(tokenizer), 2, params, end_at=[3] * 5)


def test_registered_as_fast_and_rejects_bad_params():
    tokenizer = build_char_tokenizer()
    model = _model(tokenizer)
    engine = make_engine("fast", model, tokenizer)
    assert isinstance(engine, FastEngine)
    with pytest.raises(ValueError, match="top_p"):
        engine.generate(_prompt_ids(tokenizer), 1, SamplingParams(top_p=0.0))
    with pytest.raises(ValueError, match="group_size"):
        engine.generate(_prompt_ids(tokenizer), 0, SamplingParams())


def test_unsupported_model_is_a_clear_error():
    with pytest.raises(ValueError, match="Llama/Qwen2-style"):
        FastEngine(torch.nn.Linear(2, 2), build_char_tokenizer())


def test_fused_gemm_path_only_for_plain_linear_weights():
    """The norm-fused GEMM kernels read nn.Linear weights directly: a LoRA layer (its adapter would
    be skipped) or a head dim under 32 keeps the per-op kernels."""
    from peft import LoraConfig, get_peft_model

    from rlvr.rollout.fast_forward import ModelParts, fits_gemm_kernels

    tokenizer = build_char_tokenizer()
    assert fits_gemm_kernels(ModelParts.of(_model(tokenizer, hidden=128)))  # head dim 32
    assert not fits_gemm_kernels(ModelParts.of(_model(tokenizer)))  # head dim 16
    lora = get_peft_model(_model(tokenizer, hidden=128), LoraConfig(r=4, target_modules=["q_proj", "up_proj"]))
    assert not fits_gemm_kernels(ModelParts.of(lora.get_base_model()))


def test_stacked_projections_follow_the_weights_and_skip_lora():
    """The stacked q/k/v and gate/up copies compute the modules' outputs, see in-place weight
    updates after `refresh`, and are not used for LoRA projections (the adapter would be lost)."""
    from peft import LoraConfig, get_peft_model

    from rlvr.rollout.fast_forward import ModelParts
    from rlvr.rollout.fast_stacked import StackedProjections

    tokenizer = build_char_tokenizer()
    model = _model(tokenizer)
    parts = ModelParts.of(model)
    stacked = StackedProjections(parts)
    attn, mlp = parts.layers[1].self_attn, parts.layers[1].mlp
    h = torch.randn(5, 64)
    with torch.no_grad():
        attn.k_proj.weight.mul_(0.5)
        attn.v_proj.bias.add_(1.0)
        mlp.up_proj.weight.mul_(2.0)
        stale = stacked.qkv(1, h)[1]
        stacked.refresh()
        for got, module in zip(stacked.qkv(1, h) + stacked.gate_up(1, h),
                               (attn.q_proj, attn.k_proj, attn.v_proj, mlp.gate_proj, mlp.up_proj)):
            torch.testing.assert_close(got, module(h))
    assert not torch.allclose(stale, attn.k_proj(h))  # before refresh: the old copy
    assert StackedProjections.fits(parts)
    lora = get_peft_model(_model(tokenizer), LoraConfig(r=4, target_modules=["v_proj"]))
    assert not StackedProjections.fits(ModelParts.of(lora.get_base_model()))



@pytest.mark.parametrize("engine_cls", [FastEngine, HFEngine])
def test_a_policy_in_train_mode_samples_without_its_lora_dropout(engine_cls):
    """The trainer leaves its policy in train mode after an update; sampling must not draw dropout
    masks (greedy rows of one prompt would differ), and the mode comes back after generate."""
    from peft import LoraConfig, get_peft_model

    tokenizer = build_char_tokenizer()
    model = get_peft_model(_model(tokenizer), LoraConfig(r=4, lora_dropout=0.5, target_modules=["q_proj", "up_proj"]))
    with torch.no_grad():  # peft starts B at zero, where dropout on A's input changes nothing
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 1.0)
    engine = engine_cls(model, tokenizer)
    greedy = SamplingParams(max_new_tokens=10, temperature=0.0)
    prompts = _prompt_ids(tokenizer)
    model.eval()
    expected = engine.generate(prompts, 3, greedy).completion_ids
    model.train()
    torch.manual_seed(1)
    assert engine.generate(prompts, 3, greedy).completion_ids == expected
    assert model.training and all(m.training for m in model.modules())


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_a_merged_lora_copy_generates_what_the_adapted_model_does_and_follows_refresh(device):
    """GRPO's LoRA generation copy (merged adapters, stacked views) in the engine: greedy tokens equal
    transformers' generate on the peft model, before and after an adapter update (on CUDA, in the
    graph captured before it)."""
    from peft import LoraConfig, get_peft_model

    from rlvr.models.generation_weights import GenerationWeights

    tokenizer = build_char_tokenizer()
    model = get_peft_model(_model(tokenizer, device=device), LoraConfig(r=4, target_modules="all-linear")).eval()

    def move_adapters(seed: int) -> None:
        torch.manual_seed(seed)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_" in name:
                    p.add_(torch.randn_like(p) * 0.1)

    move_adapters(1)
    weights = GenerationWeights(model, torch.float32, merge_lora=True)
    engine = FastEngine(weights.model, tokenizer)
    _check_greedy_matches_generate(model, tokenizer, engine)
    move_adapters(2)
    weights.refresh()
    _check_greedy_matches_generate(model, tokenizer, engine)

# ----------------------------------------------------------------------------- CUDA graph path

@pytest.mark.gpu
@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_fused_gemm_kernels_greedy_equal_generate(arch):
    tokenizer = build_char_tokenizer()
    model = _model(tokenizer, arch=arch, device="cuda", hidden=128)  # head dim 32: the fused GEMM path fits
    engine = FastEngine(model, tokenizer, FastEngineConfig(fuse_gemms=True))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="fast engine")  # no fallback
        _check_greedy_matches_generate(model, tokenizer, engine)
    assert engine.fused_gemms


@pytest.mark.gpu
def test_fused_gemm_kernels_sampled_logprobs_bf16():
    tokenizer = build_char_tokenizer()
    model = _model(tokenizer, dtype=torch.bfloat16, device="cuda", hidden=128)
    engine = FastEngine(model, tokenizer, FastEngineConfig(fuse_gemms=True))
    params = SamplingParams(max_new_tokens=32, temperature=1.0, seed=3)
    _check_sampled_logprobs(model, tokenizer, engine, params, tol=0.3, mean_tol=0.05)
    with torch.no_grad():  # weights updated in place are seen by the captured graph
        model.model.layers[0].mlp.up_proj.weight.mul_(1.5)
        model.model.layers[1].self_attn.q_proj.weight.mul_(0.5)
    _check_sampled_logprobs(model, tokenizer, engine, params, tol=0.3, mean_tol=0.05)
    assert engine.fused_gemms and len(engine._states) == 1


@pytest.mark.gpu
@pytest.mark.parametrize("kernels", ["triton", "torch"])
@pytest.mark.parametrize("compile_step", [False, True])
def test_greedy_tokens_equal_generate_cuda_graph(compile_step, kernels):
    tokenizer = build_char_tokenizer()
    model = _model(tokenizer, device="cuda")
    engine = FastEngine(model, tokenizer, FastEngineConfig(compile=compile_step, kernels=kernels))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="fast engine")  # no fallback from triton to torch
        _check_greedy_matches_generate(model, tokenizer, engine)
    assert engine.fused == (kernels == "triton")
    assert all(st.graph is not None for st in engine._states.values())


@pytest.mark.gpu
def test_fused_sampler_draws_from_the_softmax():
    from rlvr.rollout.fast_kernels import sample_

    logits = (torch.randn(1, 1000, device="cuda") * 3).to(torch.bfloat16)
    rows = logits.repeat(20000, 1)
    seed = torch.tensor([7], device="cuda")
    tokens, logp = sample_(rows, 0.7, seed)
    expected = (logits.float() / 0.7).log_softmax(-1)[0]
    freq = torch.bincount(tokens, minlength=1000).float() / tokens.numel()
    # total variation between the empirical and the true distribution: about 0.02 expected here
    assert 0.5 * (freq - expected.exp()).abs().sum().item() < 0.06
    torch.testing.assert_close(logp, expected[tokens], atol=1e-4, rtol=0)
    greedy, _ = sample_(logits, 0.0, seed)
    assert greedy.item() == logits.float().argmax().item()


@pytest.mark.gpu
def test_fused_sampler_split_vocabulary():
    """Few rows and a large vocabulary: each row's vocabulary is split over programs; the draws
    still follow the softmax (mass placed in a late split included), log-probs are exact, greedy
    is argmax and a tie across splits goes to the lower column."""
    from rlvr.rollout.fast_kernels import sample_

    v = 100_003
    logits = torch.zeros(1, v, device="cuda")
    late, early = torch.arange(90_000, 90_010), torch.arange(1_000, 1_010)
    logits[0, late] = 9.0  # about 0.38 of the mass in a late split, 0.14 in an early one
    logits[0, early] = 8.0 + torch.linspace(0, 1, 10, device="cuda")
    rows = logits.repeat(64, 1)
    expected = logits.log_softmax(-1)[0]
    draws = []
    for seed in range(100):
        tokens, logp = sample_(rows, 1.0, torch.tensor([seed], device="cuda"))
        torch.testing.assert_close(logp, expected[tokens], atol=1e-4, rtol=0)
        draws.append(tokens)
    counts = torch.bincount(torch.cat(draws), minlength=v).float()
    freq, p = counts / counts.sum(), expected.exp()
    for group in (late, early):  # 6400 draws: a binomial sd of about 0.006
        assert abs(freq[group].sum().item() - p[group].sum().item()) < 0.03
    within = freq[early] / freq[early].sum() - p[early] / p[early].sum()
    assert 0.5 * within.abs().sum().item() < 0.1  # the shape inside the early group too
    greedy, _ = sample_(rows[:3], 0.0, torch.tensor([0], device="cuda"))
    assert greedy.tolist() == [logits.argmax().item()] * 3
    tie = torch.zeros(2, v, device="cuda")
    tie[:, [3_000, 97_000]] = 5.0
    assert sample_(tie, 0.0, torch.tensor([0], device="cuda"))[0].tolist() == [3_000, 3_000]


@pytest.mark.gpu
@pytest.mark.parametrize("kernels", ["triton", "torch"])
def test_sampled_logprobs_match_forward_cuda_graph_bf16(kernels):
    tokenizer = build_char_tokenizer()
    model = _model(tokenizer, dtype=torch.bfloat16, device="cuda")
    engine = FastEngine(model, tokenizer, FastEngineConfig(kernels=kernels))
    params = SamplingParams(max_new_tokens=32, temperature=1.0, seed=3)
    # bf16 activations through different kernels (decode vs full forward): a few 0.1s at most,
    # about 0.03 on average (measured on an H200: up to 0.033 for the fused kernels)
    _check_sampled_logprobs(model, tokenizer, engine, params, tol=0.3, mean_tol=0.05)
    # a second call reuses the captured graph and sees weights updated in place (the stacked
    # q/k/v and gate/up copies included)
    with torch.no_grad():
        model.lm_head.weight.mul_(1.5)
        model.model.layers[0].self_attn.k_proj.weight.mul_(0.5)
        model.model.layers[1].mlp.up_proj.weight.mul_(1.5)
    _check_sampled_logprobs(model, tokenizer, engine, params, tol=0.3, mean_tol=0.05)
    assert len(engine._states) == 1
    assert (engine.stacked is not None) == (kernels == "triton")


@pytest.mark.gpu
def test_greedy_tokens_equal_generate_without_stacked_projections():
    tokenizer = build_char_tokenizer()
    model = _model(tokenizer, device="cuda")
    engine = FastEngine(model, tokenizer, FastEngineConfig(stack_projections=False))
    _check_greedy_matches_generate(model, tokenizer, engine)
    assert engine.fused and engine.stacked is None


@pytest.mark.gpu
def test_sampled_logprobs_match_forward_cuda_graph_fp32_topk_topp():
    tokenizer = build_char_tokenizer()
    model = _model(tokenizer, device="cuda")
    params = SamplingParams(max_new_tokens=32, temperature=0.8, top_k=30, top_p=0.95, seed=4)
    _check_sampled_logprobs(model, tokenizer, FastEngine(model, tokenizer), params, tol=1e-3)
