"""Sample completions for problems and check them with the verifiers (eval, rejection sampling).

Shapes: B problems, K samples per problem; results come back as B lists of K `Sample`s.
"""
from __future__ import annotations

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


def render_prompts(examples: Sequence[Example], tokenizer, template: str) -> list[str]:
    from rlvr.tasks import render_prompt

    return [render_prompt(ex, tokenizer, template=template) for ex in examples]


def sample_and_verify(policy, examples: Sequence[Example], template: str, k: int,
                      params: SamplingParams, batch_size: int, desc: str = "sampling") -> list[list[Sample]]:
    """K completions for each of the B examples, each verified; (B) lists of (K) samples."""
    from tqdm.auto import tqdm

    from rlvr.rollout import make_engine

    engine = make_engine("hf", policy.model, policy.tokenizer)
    prompts = render_prompts(examples, policy.tokenizer, template)
    results: list[list[Sample]] = []
    for start in tqdm(range(0, len(examples), batch_size), desc=desc, leave=False):
        batch_prompts = prompts[start:start + batch_size]
        prompt_ids = [policy.tokenizer(p, add_special_tokens=False)["input_ids"] for p in batch_prompts]
        rollout = engine.generate(prompt_ids, group_size=k, params=params)  # N = B*K rows
        verdicts = verify_texts([ex for ex in examples[start:start + batch_size] for _ in range(k)],
                                rollout.texts)
        for b, prompt in enumerate(batch_prompts):
            rows = range(b * k, (b + 1) * k)
            results.append([Sample(prompt, rollout.texts[i], rollout.lengths[i], rollout.truncated[i],
                                   verdicts[i].correct, verdicts[i].extracted) for i in rows])
    return results


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
