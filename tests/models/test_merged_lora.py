"""A LoRA policy generates from a plain copy with its adapters merged: the copy computes what the
peft model computes, follows the adapters after `refresh` in the same storage, shares what it can,
and leaves the policy alone; adapters it cannot merge generate through peft."""
import pytest
import torch

from rlvr.models.merged_lora import MergedLoRACopy, lora_layers, mergeable
from rlvr.models.generation_weights import GenerationWeights


def _peft_model(dtype=torch.float32, **lora):
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    model = get_peft_model(Qwen2ForCausalLM(config).to(dtype),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", **lora))
    _move_adapters(model, 0.3)  # peft starts B at zero, where merging changes nothing
    return model.eval()


@torch.no_grad()
def _move_adapters(model, scale: float) -> None:
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.add_(torch.randn_like(p) * scale)


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def test_merged_copy_computes_the_adapted_model_and_follows_its_updates():
    model = _peft_model()
    ids = torch.randint(0, 97, (3, 11))
    weights = GenerationWeights(model, torch.float32, merge_lora=True)
    copy = weights.model
    assert weights.is_copy and not lora_layers(copy)  # a plain model: the engine's fast paths apply
    torch.testing.assert_close(_logits(copy, ids), _logits(model, ids), rtol=1e-4, atol=1e-4)

    q_proj = copy.model.layers[0].self_attn.q_proj
    storage = q_proj.weight.data_ptr()
    base_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    _move_adapters(model, 0.3)
    stale = _logits(copy, ids)
    weights.refresh()
    torch.testing.assert_close(_logits(copy, ids), _logits(model, ids), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(stale, _logits(copy, ids))
    assert q_proj.weight.data_ptr() == storage  # in place: a captured CUDA graph sees the update
    # the policy's base is untouched and shared where it is already in the generation dtype
    assert all(torch.equal(p, base_before[n]) for n, p in model.named_parameters() if "lora_" not in n)
    assert copy.model.embed_tokens.weight is model.get_base_model().model.embed_tokens.weight
    assert q_proj.bias is model.get_base_model().model.layers[0].self_attn.q_proj.base_layer.bias
    assert all(not p.requires_grad for p in copy.parameters() if p.data_ptr() not in
               {q.data_ptr() for q in model.parameters()})


def test_bfloat16_merge_rounds_once_from_float32_adapters():
    model = _peft_model(torch.bfloat16)  # peft keeps the adapters float32 around a bfloat16 base
    layer = lora_layers(model.get_base_model())["model.layers.1.mlp.down_proj"]
    copy = MergedLoRACopy(model, torch.bfloat16).model
    merged = copy.model.layers[1].mlp.down_proj.weight
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    expected = (layer.base_layer.weight.float() + layer.scaling["default"] * (b.float() @ a.float())).to(torch.bfloat16)
    assert merged.dtype == torch.bfloat16 and torch.equal(merged, expected)


def test_adapters_it_cannot_merge_generate_through_peft():
    dora = _peft_model(use_dora=True)
    assert not mergeable(dora)
    weights = GenerationWeights(dora, torch.float32, merge_lora=True)
    assert lora_layers(weights.model) and weights.model is dora  # float32 throughout: no copy at all
    with pytest.raises(ValueError, match="plain LoRA"):
        MergedLoRACopy(dora, torch.float32)
    plain = _peft_model()
    assert mergeable(plain) and lora_layers(GenerationWeights(plain, torch.bfloat16).model)  # merge_lora off



def test_the_engines_stacked_projections_are_views_of_the_merged_copy():
    from rlvr.rollout.fast_forward import ModelParts
    from rlvr.rollout.fast_stacked import StackedProjections

    model = _peft_model()
    weights = GenerationWeights(model, torch.float32, merge_lora=True)
    parts = ModelParts.of(weights.model)
    stacked = StackedProjections(parts)
    layer = parts.layers[1]
    qkv, bias, gate_up = stacked.stacks[1]
    q, gate = layer.self_attn.q_proj.weight, layer.mlp.gate_proj.weight
    assert qkv.data_ptr() == q.data_ptr() and gate_up.data_ptr() == gate.data_ptr()  # no copies
    assert bias.data_ptr() != layer.self_attn.q_proj.bias.data_ptr()  # the shared biases are stacked as before
    _move_adapters(model, 0.3)
    weights.refresh()
    stacked.refresh()
    h = torch.randn(5, 64)
    for got, module in zip(stacked.qkv(1, h) + stacked.gate_up(1, h),
                           (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj,
                            layer.mlp.gate_proj, layer.mlp.up_proj)):
        torch.testing.assert_close(got, module(h))
