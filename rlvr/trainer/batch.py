"""The step's data: scored rollouts (`Samples`), their padded tensors (`TrainBatch`), and the
policy's per-token hidden states on the completion tokens.

Sequences are laid out as [left-padded prompt | right-padded completion], so the completion
region starts at the same column P for every row: hidden[:, P-1+t] predicts completion token t,
and one slice gives hidden (N, T, H) aligned with the targets (N, T).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from rlvr.tasks.base import Example


@dataclass
class Samples:
    """N = B*G scored completions; sequence i belongs to group i // G."""

    examples: list[Example]
    """(N) the problem each completion answers (repeated G times)."""
    prompt_ids: list[list[int]]
    """(N) prompt token ids."""
    completion_ids: list[list[int]]
    """(N) sampled completion token ids (never re-tokenized)."""
    texts: list[str]
    truncated: list[bool]
    rewards: list[float]
    per_verifier: dict[str, list[float]]
    correct: list[bool]
    reasons: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.completion_ids)

    def group_rewards(self, group_size: int) -> list[list[float]]:
        r = self.rewards
        return [r[i:i + group_size] for i in range(0, len(r), group_size)]

    def select_groups(self, groups: list[int], group_size: int) -> "Samples":
        idx = [g * group_size + j for g in groups for j in range(group_size)]
        pick = lambda xs: [xs[i] for i in idx] if xs else []  # noqa: E731
        return Samples(
            examples=pick(self.examples), prompt_ids=pick(self.prompt_ids),
            completion_ids=pick(self.completion_ids), texts=pick(self.texts),
            truncated=pick(self.truncated), rewards=pick(self.rewards),
            per_verifier={k: pick(v) for k, v in self.per_verifier.items()},
            correct=pick(self.correct), reasons=pick(self.reasons),
        )

    @staticmethod
    def concat(parts: list["Samples"]) -> "Samples":
        kinds = sorted({k for p in parts for k in p.per_verifier})
        nan = float("nan")
        return Samples(
            examples=[x for p in parts for x in p.examples],
            prompt_ids=[x for p in parts for x in p.prompt_ids],
            completion_ids=[x for p in parts for x in p.completion_ids],
            texts=[x for p in parts for x in p.texts],
            truncated=[x for p in parts for x in p.truncated],
            rewards=[x for p in parts for x in p.rewards],
            per_verifier={k: [x for p in parts for x in p.per_verifier.get(k, [nan] * len(p))] for k in kinds},
            correct=[x for p in parts for x in p.correct],
            reasons=[x for p in parts for x in (p.reasons or [""] * len(p))],
        )


@dataclass
class TrainBatch:
    input_ids: torch.Tensor
    """(N, P+T) [left-padded prompt | right-padded completion]."""
    attention_mask: torch.Tensor
    """(N, P+T) 1 on real tokens."""
    position_ids: torch.Tensor
    """(N, P+T) positions counted from each row's first real token."""
    targets: torch.Tensor
    """(N, T) completion token ids (padding: pad id, masked)."""
    mask: torch.Tensor
    """(N, T) 1.0 on completion tokens that enter the loss."""
    prompt_width: int
    """P."""


def build_train_batch(samples: Samples, pad_id: int, device, mask_truncated: bool) -> TrainBatch:
    n = len(samples)
    p = max(len(x) for x in samples.prompt_ids)
    t = max(1, max(len(c) for c in samples.completion_ids))
    input_ids = torch.full((n, p + t), pad_id, dtype=torch.long)
    attention = torch.zeros((n, p + t), dtype=torch.long)
    mask = torch.zeros((n, t), dtype=torch.float32)
    for i, (prompt, comp) in enumerate(zip(samples.prompt_ids, samples.completion_ids)):
        input_ids[i, p - len(prompt):p] = torch.tensor(prompt, dtype=torch.long)
        attention[i, p - len(prompt):p] = 1
        if comp:
            input_ids[i, p:p + len(comp)] = torch.tensor(comp, dtype=torch.long)
            attention[i, p:p + len(comp)] = 1
            if not (mask_truncated and samples.truncated[i]):
                mask[i, :len(comp)] = 1.0
    position_ids = (attention.cumsum(dim=1) - 1).clamp(min=0)
    return TrainBatch(
        input_ids=input_ids.to(device), attention_mask=attention.to(device),
        position_ids=position_ids.to(device), targets=input_ids[:, p:].to(device),
        mask=mask.to(device), prompt_width=p,
    )


def completion_hidden(model, batch: TrainBatch) -> torch.Tensor:
    """Final (post-norm) hidden states (N, T, H) at the positions that predict each completion token.

    The forward goes through `model` itself (DDP/FSDP wrappers need their own forward for gradient
    sync); `logits_to_keep=1` keeps the full (N, L, V) logits from ever being built: the loss
    computes log-probs from these hidden states and the lm_head weight in chunks.
    """
    hidden = final_hidden(model, input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                          position_ids=batch.position_ids)  # (N, P+T, H)
    p, t = batch.prompt_width, batch.targets.shape[1]
    return hidden[:, p - 1:p - 1 + t]  # (N, T, H)


def sdpa_backends(names: list[str]):
    """A context in which SDPA uses only the kernels `names`, in that order of preference; no
    restriction when empty. The backward runs the kernel the forward chose."""
    if not names:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from rlvr.trainer.config import SDPA_BACKENDS

    return sdpa_kernel([getattr(SDPBackend, SDPA_BACKENDS[n]) for n in names], set_priority=True)


def final_hidden(model, **inputs) -> torch.Tensor:
    """The model's last hidden states (after the final norm) for `inputs`, without logits for
    every position (`logits_to_keep=1`) or a KV cache."""
    return model(**inputs, output_hidden_states=True, logits_to_keep=1, use_cache=False).hidden_states[-1]


def output_weight(model) -> torch.Tensor:
    """The lm_head weight (V, H) of an unwrapped (possibly peft) model; rejects heads the fused
    loss cannot reproduce (a bias)."""
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError("the policy has no output embeddings (lm_head); GRPO needs a causal LM")
    if getattr(head, "bias", None) is not None:
        raise ValueError("lm_head has a bias; the fused log-prob path supports weight-only heads")
    return head.weight
