"""Load a policy: tiny model built from a config, SmolLM2 from GGUF, hub or local dir; LoRA."""
from rlvr.models.char_tokenizer import build_char_tokenizer
from rlvr.models.config import LoraSettings, ModelConfig, TinyModelConfig
from rlvr.models.loading import Policy, find_smollm2_gguf, load_policy, save_policy
from rlvr.models.tiny import build_tiny_model

__all__ = [
    "ModelConfig", "TinyModelConfig", "LoraSettings", "Policy",
    "build_char_tokenizer", "build_tiny_model", "find_smollm2_gguf", "load_policy", "save_policy",
]
