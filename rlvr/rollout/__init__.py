"""Generation engines behind one interface (`RolloutEngine.generate(prompt_ids, G, params)`).

`make_engine(config, model, tokenizer)` builds the engine an `EngineConfig` (or a bare name) asks
for, looked up in `ENGINES` (an `rlvr.registry.Registry` of name -> factory). Factories import their
module lazily, so `import rlvr.rollout` stays light and an engine whose backend is missing (e.g.
`fast` without CUDA) fails only when it is asked for.
"""
from __future__ import annotations

import importlib
from typing import Callable

from rlvr.registry import Registry
from rlvr.rollout.base import Rollout, RolloutEngine, SamplingParams
from rlvr.rollout.engine_config import EngineConfig, FastEngineConfig, as_engine_config

ENGINES: Registry[Callable] = Registry("rollout engine")


def register_engine(name: str, factory: Callable | None = None):
    """Register `factory(model, tokenizer, config: EngineConfig) -> RolloutEngine` under `name`
    (usable as a decorator); the factory takes from `config` the options it has."""

    return ENGINES.add(name, factory) if factory is not None else ENGINES.register(name)


def _lazy(module: str, attr: str, with_options: bool) -> Callable:
    def factory(model, tokenizer, config: EngineConfig):
        cls = getattr(importlib.import_module(module), attr)
        return cls(model, tokenizer, config.fast_options()) if with_options else cls(model, tokenizer)

    factory.__qualname__ = f"{module}.{attr}"
    return factory


register_engine("hf", _lazy("rlvr.rollout.hf", "HFEngine", with_options=False))
register_engine("fast", _lazy("rlvr.rollout.fast", "FastEngine", with_options=True))  # CUDA graphs


def check_engine_name(name: str) -> None:
    """`auto` or a registered engine; otherwise an UnknownNameError listing the valid names."""
    if name != "auto" and name not in ENGINES:
        raise ENGINES.unknown(name, also=["auto"])


def choose_engine(config: EngineConfig | str, model) -> str:
    """The engine `config` names; `auto` is `fast` when the model sits on CUDA and has the
    layout the fast engine runs (Llama/Qwen2/Qwen3, no sliding window), else `hf`. Every stage
    and command that samples picks its engine here, as GRPO does."""
    requested = as_engine_config(config).name
    if requested != "auto":
        check_engine_name(requested)
        return requested
    param = next(model.parameters(), None)
    if param is None or param.device.type != "cuda" or "fast" not in ENGINES:
        return "hf"
    from rlvr.rollout.fast import supports

    return "fast" if supports(model) else "hf"


def make_engine(config: EngineConfig | str, model, tokenizer) -> RolloutEngine:
    """Build the engine `config` asks for (`auto` resolved by `choose_engine`) with its options;
    an unknown name lists the valid ones."""
    config = as_engine_config(config)
    name = config.name if config.name in ENGINES else choose_engine(config, model)
    return ENGINES.get(name)(model, tokenizer, config)


__all__ = ["ENGINES", "EngineConfig", "FastEngineConfig", "Rollout", "RolloutEngine", "SamplingParams",
           "as_engine_config", "check_engine_name", "choose_engine", "make_engine", "register_engine"]
