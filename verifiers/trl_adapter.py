"""Use any verifier kind as a TRL `GRPOTrainer` reward function."""
from __future__ import annotations

from typing import Any, Callable

from verifiers.api import DEFAULT_TIMEOUT_S, verify_batch
from verifiers.registry import get_verifier


def trl_reward_func(
    kind: str,
    reference_column: str = "reference",
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    workers: int | None = None,
    **options: Any,
) -> Callable[..., list[float]]:
    """A callable with TRL's ``reward_funcs`` signature ``(prompts, completions, **kwargs)``.

    TRL passes every dataset column as a keyword argument (one value per completion); the
    reference is read from ``reference_column``. Completions may be plain strings or
    conversations (lists of ``{"role", "content"}`` messages, whose last message is scored).
    The callable's ``__name__`` (``"<kind>_reward"``) is what TRL logs the reward under.

    >>> reward = trl_reward_func("math", reference_column="answer")
    >>> reward(prompts=["1+1?"], completions=[[{"role": "assistant", "content": "\\\\boxed{2}"}]], answer=["2"])
    [1.0]
    """
    spec = get_verifier(kind)
    spec.validate_options(options)

    def reward(prompts: list, completions: list, **kwargs: Any) -> list[float]:
        if reference_column not in kwargs:
            columns = sorted(k for k in kwargs if k not in ("trainer_state", "log_extra", "log_metric", "completion_ids"))
            raise KeyError(
                f"{kind}_reward needs the dataset column {reference_column!r} (reference_column); columns given: {columns}"
            )
        texts = [completion_text(c) for c in completions]
        results = verify_batch(kind, texts, kwargs[reference_column], timeout_s=timeout_s, workers=workers, **options)
        return [r.score for r in results]

    reward.__name__ = reward.__qualname__ = f"{kind}_reward"
    return reward


def completion_text(completion: Any) -> str:
    """The text of a TRL completion: a string, or a conversation whose last message is scored."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content", "")
        if isinstance(content, list):  # multimodal style: [{"type": "text", "text": ...}, ...]
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        return str(content)
    raise TypeError(f"a completion must be a string or a list of messages, got {type(completion).__name__}")
