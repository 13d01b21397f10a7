"""Sample completions for problems and check them with the verifiers (eval, rejection sampling).

Shapes: B problems, K samples per problem; results come back as B lists of K `Sample`s.
Prompts longer than `max_prompt_length` tokens keep their last tokens (the GRPO trainer's rule,
`rlvr.trainer.prompts`); each `Sample` says whether its prompt was cut.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

from rlvr.rollout.base import SamplingParams
from rlvr.tasks.base import Example


@dataclass
class Sample:
    """One completion of one problem, verified."""

    prompt: str
    """The rendered prompt (template applied)."""
    text: str
    """The decoded completion."""
    num_tokens: int
    """Completion length in tokens."""
    truncated: bool
    """True when it hit max_new_tokens."""
    correct: bool
    """The verifier's verdict."""
    answer: str | None
    """The answer the verifier extracted (for voting)."""
    prompt_truncated: bool = False
    """True when the prompt was left-truncated to max_prompt_length (`prompt` stays the full text)."""


def sample_and_verify(policy, examples: Sequence[Example], prompt_format, k: int,
                      params: SamplingParams, batch_size: int, desc: str = "sampling",
                      max_prompt_length: int | None = None, engine="auto") -> list[list[Sample]]:
    """K completions for each of the B examples, each verified; (B) lists of (K) samples.
    `prompt_format`: a `PromptFormat` (or a template name), the recipe's for every stage. Prompts
    over `max_prompt_length` tokens are left-truncated (None: the model's context minus
    max_new_tokens, when the model states it). `engine`: an `EngineConfig` or a name, picked as
    the GRPO trainer picks it (`rlvr.rollout.choose_engine`)."""
    from tqdm.auto import tqdm

    from rlvr.tasks.prompts import as_format
    from rlvr.trainer.prompts import context_limit, prompt_cap

    max_prompt_length = prompt_cap(max_prompt_length, params.max_new_tokens, context_limit(policy.model))
    engine = policy.engine(engine)
    fmt = as_format(prompt_format)
    prompts = [fmt.render(ex, policy.tokenizer) for ex in examples]
    results: list[list[Sample]] = []
    for start in tqdm(range(0, len(examples), batch_size), desc=desc, leave=False):
        batch_prompts = prompts[start:start + batch_size]
        # encoded as the GRPO trainer encodes its prompts: eval and rejection sampling see what
        # training saw
        encoded = [fmt.encode(ex, policy.tokenizer, max_prompt_length) for ex in examples[start:start + batch_size]]
        prompt_ids = [ids for ids, _ in encoded]
        rollout = engine.generate(prompt_ids, group_size=k, params=params)  # N = B*K rows
        verdicts = verify_texts([ex for ex in examples[start:start + batch_size] for _ in range(k)],
                                rollout.texts)
        for b, prompt in enumerate(batch_prompts):
            rows = range(b * k, (b + 1) * k)
            cut = len(prompt_ids[b]) < encoded[b][1]
            results.append([Sample(prompt, rollout.texts[i], rollout.lengths[i], rollout.truncated[i],
                                   verdicts[i].correct, verdicts[i].extracted, cut) for i in rows])
    return results


def check_prompt_cap(policy, cfg) -> None:
    """With `cfg.max_prompt_length` set, fail before sampling when the cap + `cfg.sampling.max_new_tokens`
    exceeds the model's context (the trainer's check; without a cap nothing changes)."""
    from rlvr.trainer.prompts import check_context, context_limit

    if cfg.max_prompt_length is not None:
        check_context(cfg, context_limit(policy.model))


def count_truncated_prompts(groups: Sequence[Sequence[Sample]], max_prompt_length: int | None,
                            stage: str) -> int:
    """How many problems had their prompt left-truncated; warns once (per call) when any did."""
    count = sum(bool(g) and g[0].prompt_truncated for g in groups)
    if count:
        warnings.warn(f"{stage}: {count} of {len(groups)} prompts were left-truncated to max_prompt_length="
                      f"{max_prompt_length} (their last tokens kept); counted as prompts_truncated")
    return count


def verify_texts(examples: Sequence[Example], texts: Sequence[str]) -> list:
    """VerifyResults in input order; examples of different kinds go to their own verifier."""
    from verifiers import verify_batch

    assert len(examples) == len(texts), (len(examples), len(texts))
    out: list = [None] * len(texts)
    by_kind: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        by_kind.setdefault(ex.kind, []).append(i)
    for kind, idx in by_kind.items():
        verdicts = verify_batch(kind, [texts[i] for i in idx], [examples[i].reference for i in idx])
        for i, v in zip(idx, verdicts):
            out[i] = v
    return out
