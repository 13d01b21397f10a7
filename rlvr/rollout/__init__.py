"""Generation engines behind one interface (`RolloutEngine.generate(prompt_ids, G, params)`).

`make_engine(name, model, tokenizer)` looks the engine up in `ENGINES` (an `rlvr.registry.Registry`
of name -> factory). Factories import their module lazily, so `import rlvr.rollout` stays light and
an engine whose backend is missing (e.g. `fast` without CUDA) fails only when it is asked for.
"""
from __future__ import annotations

import importlib
from typing import Callable

from rlvr.registry import Registry
from rlvr.rollout.base import Rollout, RolloutEngine, SamplingParams

ENGINES: Registry[Callable] = Registry("rollout engine")


def register_engine(name: str, factory: Callable | None = None):
    """Register `factory(model, tokenizer) -> RolloutEngine` under `name` (usable as a decorator)."""

    return ENGINES.add(name, factory) if factory is not None else ENGINES.register(name)


def _lazy(module: str, attr: str) -> Callable:
    def factory(model, tokenizer):
        return getattr(importlib.import_module(module), attr)(model, tokenizer)

    factory.__qualname__ = f"{module}.{attr}"
    return factory


register_engine("hf", _lazy("rlvr.rollout.hf", "HFEngine"))
register_engine("fast", _lazy("rlvr.rollout.fast", "FastEngine"))  # CUDA graphs (rlvr/rollout/fast.py)


def check_engine_name(name: str) -> None:
    """`auto` or a registered engine; otherwise an UnknownNameError listing the valid names."""
    if name != "auto" and name not in ENGINES:
        raise ENGINES.unknown(name, also=["auto"])


def choose_engine(requested: str, model) -> str:
    """The engine `requested` names; `auto` is `fast` when the model sits on CUDA and has the
    layout the fast engine runs (Llama/Qwen2/Qwen3, no sliding window), else `hf`. Every stage
    and command that samples picks its engine here, as GRPO does."""
    if requested != "auto":
        check_engine_name(requested)
        return requested
    param = next(model.parameters(), None)
    if param is None or param.device.type != "cuda" or "fast" not in ENGINES:
        return "hf"
    from rlvr.rollout.fast import supports

    return "fast" if supports(model) else "hf"


def make_engine(name: str, model, tokenizer) -> RolloutEngine:
    """Build the engine registered as `name`; an unknown name lists the valid ones."""
    return ENGINES.get(name)(model, tokenizer)


__all__ = ["ENGINES", "Rollout", "RolloutEngine", "SamplingParams", "check_engine_name", "choose_engine",
           "make_engine", "register_engine"]
