"""LLM-as-a-judge: a local causal LM grades a solution; the score is P(Yes) / (P(Yes) + P(No)).

For tasks with no verifier. The judge reads a grading prompt and its next-token distribution is
compared at the first token where the two verdict strings differ (" Yes" and " No" share a
leading space token under some tokenizers), so the score is a real probability, not a parsed
string. Usable wherever a scorer is taken (best-of-N, weighted vote, beam search, ...).
"""
from __future__ import annotations

import torch

from rlvr.reward_models.steps import encode

DEFAULT_TEMPLATE = (
    "Problem:\n{problem}\n\nProposed solution:\n{solution}\n\n"
    "Is the proposed solution correct? Answer Yes or No.\nAnswer:"
)


class JudgeScorer:
    name = "judge"

    def __init__(self, model, tokenizer, template: str = DEFAULT_TEMPLATE, yes: str = " Yes", no: str = " No",
                 batch_size: int = 8):
        if "{problem}" not in template or "{solution}" not in template:
            raise ValueError("judge template must contain {problem} and {solution}")
        self.model, self.tokenizer, self.template, self.batch_size = model, tokenizer, template, batch_size
        yes_ids, no_ids = encode(tokenizer, yes), encode(tokenizer, no)
        common = 0
        while common < min(len(yes_ids), len(no_ids)) and yes_ids[common] == no_ids[common]:
            common += 1
        if common == min(len(yes_ids), len(no_ids)):
            raise ValueError(f"judge verdicts {yes!r} and {no!r} do not differ in any token")
        self.shared_prefix = yes_ids[:common]
        """Tokens both verdicts start with; appended to the prompt before reading the distribution."""
        self.yes_id, self.no_id = yes_ids[common], no_ids[common]

    def prompts(self, problem, texts: list[str]) -> list[list[int]]:
        question = problem.example.prompt
        return [encode(self.tokenizer, self.template.format(problem=question, solution=t)) + self.shared_prefix
                for t in texts]

    def num_tokens(self, problem, texts: list[str]) -> int:
        return sum(len(p) for p in self.prompts(problem, texts))

    @torch.no_grad()
    def score(self, problem, texts: list[str], aggregation: str = "last") -> list[float]:
        from rlvr.reward_models.model import aggregate

        aggregate([], aggregation)  # one verdict per solution; still reject unknown names
        seqs = self.prompts(problem, texts)
        out: list[float] = []
        device = next(self.model.parameters()).device
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        for start in range(0, len(seqs), self.batch_size):
            chunk = seqs[start:start + self.batch_size]
            width = max(len(s) for s in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, s in enumerate(chunk):  # left padding: the next token is read at the last column
                ids[i, width - len(s):] = torch.tensor(s)
                mask[i, width - len(s):] = 1
            logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, -1]  # (b, V)
            pair = torch.log_softmax(logits.float(), -1)[:, [self.yes_id, self.no_id]]  # (b, 2)
            out += torch.softmax(pair, -1)[:, 0].tolist()
        return out
