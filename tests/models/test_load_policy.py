"""Tiny model, load_policy/save_policy round trips, LoRA, gradient checkpointing, local HF dirs."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlvr.config import ConfigError, from_dict
from rlvr.models import LoraSettings, ModelConfig, TinyModelConfig, build_char_tokenizer, build_tiny_model
from rlvr.models import load_policy, save_policy

SMALL = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_position_embeddings=64)
TEXT = ["Q: 23+58=?\nA: <think>3+8=11", "Q: 7-5=?\nA: "]


def logits_of(model, tokenizer, texts=TEXT) -> torch.Tensor:
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch).logits


@pytest.fixture(scope="module")
def tiny():
    return load_policy(ModelConfig(name_or_path="tiny", tiny=SMALL, seed=3), device="cpu")


def test_tiny_policy_is_a_real_llama_in_float32(tiny):
    assert type(tiny.model).__name__ == "LlamaForCausalLM"
    assert tiny.model.dtype == torch.float32  # dtype auto on the CPU
    assert tiny.model.config.vocab_size == len(tiny.tokenizer)
    assert tiny.tokenizer.padding_side == "left" and tiny.tokenizer.pad_token_id is not None
    assert tiny.device.type == "cpu"


def test_forward_backward_reach_every_parameter(tiny):
    batch = tiny.tokenizer(TEXT, return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    tiny.model.zero_grad()
    loss = tiny.model(**batch, labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss)
    # A random model is near uniform over the vocabulary: loss about log(V).
    assert abs(loss.item() - torch.log(torch.tensor(float(len(tiny.tokenizer)))).item()) < 1.0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in tiny.model.parameters())
    tiny.model.zero_grad()


def test_seeded_init_and_qwen2_architecture():
    tokenizer = build_char_tokenizer()
    a, b = build_tiny_model(tokenizer, SMALL, seed=1), build_tiny_model(tokenizer, SMALL, seed=1)
    c = build_tiny_model(tokenizer, SMALL, seed=2)
    assert torch.equal(logits_of(a, tokenizer), logits_of(b, tokenizer))
    assert not torch.equal(logits_of(a, tokenizer), logits_of(c, tokenizer))
    before = torch.random.get_rng_state()
    qwen2 = build_tiny_model(tokenizer, TinyModelConfig(architecture="qwen2", hidden_size=32, num_layers=1,
                                                        num_heads=2, intermediate_size=64), seed=0)
    assert torch.equal(torch.random.get_rng_state(), before)  # building leaves the global RNG alone
    assert type(qwen2).__name__ == "Qwen2ForCausalLM"


def test_tiny_generates_left_padded_batches(tiny):
    batch = tiny.tokenizer(TEXT, return_tensors="pt", padding=True)
    out = tiny.model.generate(**batch, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert out.shape == (2, batch["input_ids"].shape[1] + 5)
    # Left padding: the short prompt generates the same tokens alone as inside the batch.
    alone = tiny.tokenizer(TEXT[1:], return_tensors="pt")
    out_alone = tiny.model.generate(**alone, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert torch.equal(out[1, -5:], out_alone[0, -5:])


def test_save_then_load_gives_equal_logits(tiny, tmp_path):
    directory = save_policy(tiny, tmp_path / "model")
    assert (directory / "model.safetensors").is_file() and (directory / "tokenizer.json").is_file()
    expected = logits_of(tiny.model, tiny.tokenizer)
    # Plain transformers loads it as is...
    plain = AutoModelForCausalLM.from_pretrained(directory)
    assert torch.allclose(logits_of(plain, AutoTokenizer.from_pretrained(directory)), expected)
    # ...and so does load_policy, tokenizer included.
    again = load_policy(ModelConfig(name_or_path=str(directory)), device="cpu")
    assert torch.allclose(logits_of(again.model, again.tokenizer), expected)
    assert again.tokenizer.get_vocab() == tiny.tokenizer.get_vocab()


def test_qwen2_tiny_dir_keeps_the_character_tokenizer(tmp_path):
    # transformers 5's AutoTokenizer would hand back Qwen2's byte-level tokenizer for this directory.
    qwen = load_policy(ModelConfig(tiny=TinyModelConfig(architecture="qwen2", hidden_size=32, num_layers=1,
                                                        num_heads=2, intermediate_size=64)), device="cpu")
    directory = save_policy(qwen, tmp_path / "qwen")
    again = load_policy(ModelConfig(name_or_path=str(directory)), device="cpu")
    assert type(again.model).__name__ == "Qwen2ForCausalLM"
    assert again.tokenizer(TEXT)["input_ids"] == qwen.tokenizer(TEXT)["input_ids"]
    assert torch.allclose(logits_of(again.model, again.tokenizer), logits_of(qwen.model, qwen.tokenizer))


def test_save_replaces_an_existing_directory_completely(tiny, tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    save_policy(tiny, target)
    assert not (target / "stale.txt").exists() and (target / "config.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no staging folders left behind


def test_lora_trains_only_adapters_and_saves_merged(tmp_path):
    cfg = ModelConfig(name_or_path="tiny", tiny=SMALL, lora=LoraSettings(r=4, alpha=8, dropout=0.0))
    policy = load_policy(cfg, device="cpu")
    trainable = [n for n, p in policy.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    frozen = [n for n, p in policy.model.named_parameters() if not p.requires_grad]
    assert any("embed_tokens" in n for n in frozen)
    with torch.no_grad():  # LoRA's B starts at zero; make the adapters change the output
        for name, param in policy.model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    expected = logits_of(policy.model, policy.tokenizer)
    directory = save_policy(policy, tmp_path / "merged")
    assert (directory / "adapter" / "adapter_config.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(directory)
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    assert torch.allclose(logits_of(merged, policy.tokenizer), expected, atol=1e-5)
    assert any("lora_" in n for n, _ in policy.model.named_parameters())  # the live policy keeps its adapters


def test_gradient_checkpointing_gives_the_same_gradients():
    lora = LoraSettings(r=2, alpha=4, dropout=0.0, target_modules=["q_proj", "v_proj"])
    grads = []
    for checkpointing in (False, True):
        policy = load_policy(ModelConfig(tiny=SMALL, gradient_checkpointing=checkpointing, lora=lora), device="cpu")
        base = policy.model.base_model.model
        assert base.is_activation_checkpointing == checkpointing
        policy.model.train()
        batch = policy.tokenizer(TEXT, return_tensors="pt", padding=True)
        policy.model(**batch, labels=batch["input_ids"]).loss.backward()
        grads.append({n: p.grad for n, p in policy.model.named_parameters() if p.requires_grad})
    assert all(g.abs().sum() > 0 for n, g in grads[0].items() if "lora_B" in n)
    assert grads[0].keys() == grads[1].keys()
    assert all(torch.allclose(grads[0][n], grads[1][n], atol=1e-6) for n in grads[0])


def test_local_dir_without_pad_token_gets_eos_and_left_padding(tmp_path):
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(tokenizer, SMALL)
    tokenizer.pad_token = None
    tokenizer.padding_side = "right"
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    policy = load_policy(ModelConfig(name_or_path=str(tmp_path), precision="bf16"), device="cpu")
    assert policy.tokenizer.pad_token == "<eos>" and policy.tokenizer.padding_side == "left"
    assert policy.model.config.pad_token_id == policy.tokenizer.eos_token_id
    assert policy.model.dtype == torch.bfloat16


def test_model_config_from_yaml_data_is_strict():
    cfg = from_dict(ModelConfig, {"name_or_path": "tiny", "tiny": {"num_layers": 2}, "lora": {"r": 4}})
    assert cfg.tiny.num_layers == 2 and cfg.lora.r == 4 and cfg.lora.alpha == 32
    with pytest.raises(ConfigError, match="unknown key model.tiny.layers"):
        from_dict(ModelConfig, {"tiny": {"layers": 2}}, "model")
    with pytest.raises(ConfigError, match="must be divisible"):
        from_dict(ModelConfig, {"tiny": {"hidden_size": 30, "num_heads": 4}}, "model")
    with pytest.raises(ConfigError, match=r"model.precision: must be one of"):
        from_dict(ModelConfig, {"precision": "fp8"}, "model")
    with pytest.raises(ConfigError, match=r"model.dtype: renamed to precision"):
        from_dict(ModelConfig, {"dtype": "float32"}, "model")


def test_missing_gguf_file_in_a_local_dir_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.gguf_file: nope.gguf not found"):
        load_policy(ModelConfig(name_or_path=str(tmp_path), gguf_file="nope.gguf"), device="cpu")


class _ZeRO3Config:
    """Stands in for the DeepSpeed config accelerate registers with transformers (ZeRO-3 on)."""

    def is_zero3(self):
        return True


def test_load_after_a_zero3_stage_gives_whole_weights(tiny, tmp_path):
    # After a ZeRO-3 stage, accelerate leaves its DeepSpeed config registered with transformers;
    # from_pretrained would then build partitioned (empty) parameters that cannot generate.
    import weakref

    from transformers.integrations import deepspeed as hf_deepspeed

    directory = save_policy(tiny, tmp_path / "model")
    registered = _ZeRO3Config()
    hf_deepspeed._hf_deepspeed_config_weak_ref = weakref.ref(registered)
    try:
        loaded = load_policy(ModelConfig(name_or_path=str(directory)))
        assert hf_deepspeed.is_deepspeed_zero3_enabled()  # the run's own setting is left as it was
    finally:
        hf_deepspeed.unset_hf_deepspeed_config()
    embed = loaded.model.get_input_embeddings().weight
    assert embed.shape == tiny.model.get_input_embeddings().weight.shape
    assert torch.equal(embed, tiny.model.get_input_embeddings().weight)
