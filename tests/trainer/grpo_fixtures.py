"""Helpers for the trainer tests: a tiny random Qwen2 with the character tokenizer, and a toy task
whose reward a model that small learns in seconds: write the digit 7. (Imported by this unique
name: `from conftest import` would get another test folder's conftest in a full-suite run.)

The `sevens` verifier is a real registered verifier (inline: pure string counting), so rewards go
through `rlvr.rewards.compute_rewards` and `verifiers.verify_batch` as in any run.
"""
from __future__ import annotations

import random

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from rlvr.config import from_dict
from rlvr.models import Policy, build_char_tokenizer
from rlvr.tasks.base import Example
from rlvr.trainer import GRPOConfig
from verifiers import available_kinds, register_verifier
from verifiers.result import VerifyResult

# Tiny matrices: one thread is faster than several fighting over a shared CPU.
torch.set_num_threads(1)

if "sevens" not in available_kinds():

    @register_verifier("sevens")
    def _sevens(completion: str, reference) -> VerifyResult:
        """Score: the share of characters that are '7' (dense, so a tiny model learns it fast)."""
        score = completion.count("7") / max(len(completion), 1)
        return VerifyResult(score=score, correct=score >= 0.5, reason=f"{completion.count('7')} sevens",
                            extracted=None)


class SevensTask:
    """A seeded stream of prompts (random digit strings); the stream position is its state."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.drawn = 0

    def _example(self, index: int, split: str) -> Example:
        rng = random.Random(f"{self.seed}:{split}:{index}")
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 3)))
        return Example(prompt=digits, reference=None, kind="sevens", id=f"{split}-{index}")

    def sample(self, n: int) -> list[Example]:
        out = [self._example(self.drawn + i, "train") for i in range(n)]
        self.drawn += n
        return out

    def held_out(self, n: int) -> list[Example]:
        return [self._example(i, "test") for i in range(n)]

    def state_dict(self) -> dict:
        return {"drawn": self.drawn}

    def load_state_dict(self, state: dict) -> None:
        self.drawn = state["drawn"]


def tiny_policy(seed: int = 0, hidden: int = 32) -> Policy:
    tok = build_char_tokenizer()
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=128, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    return Policy(model=Qwen2ForCausalLM(cfg), tokenizer=tok)


def lora_policy(dropout: float = 0.0) -> Policy:
    """A tiny Qwen2 through rlvr.models with LoRA adapters on q/v and gradient checkpointing."""
    from rlvr.models import LoraSettings, ModelConfig, TinyModelConfig, load_policy

    cfg = ModelConfig(name_or_path="tiny", gradient_checkpointing=True,
                      tiny=TinyModelConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                                           max_position_embeddings=128),
                      lora=LoraSettings(r=4, alpha=8, dropout=dropout, target_modules=["q_proj", "v_proj"]))
    return load_policy(cfg, device="cpu")


def small_config(**overrides) -> GRPOConfig:
    base = dict(steps=4, prompts_per_step=4, num_generations=4, max_new_tokens=6, temperature=1.0,
                learning_rate=3e-2, template="plain", engine="hf", kernels="torch", report_to="none",
                sample_every=0, log_every=1, seed=0)
    base.update(overrides)
    return from_dict(GRPOConfig, base)  # as a recipe's stage: flat sampling keys fill `sampling`


def resume_config(**overrides) -> GRPOConfig:
    """The run the resume tests interrupt: a warm-up/decay schedule, two updates per rollout and
    micro-batches, so scheduler, old log-probs and accumulation all have to come back exactly."""
    base = dict(steps=6, save_every=2, keep_last=0, lr_scheduler="linear", warmup_steps=2,
                num_iterations=2, micro_batch_size=6, learning_rate=1e-2)
    base.update(overrides)
    return small_config(**base)
