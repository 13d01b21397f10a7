"""Thinking budget (budget forcing, Muennighoff et al. 2501.19393 "s1").

The policy thinks inside <think>...</think>. At most `budget` tokens are spent thinking: when the
cap is hit (or the policy stops while still thinking), the think tag is closed for the model and
it must answer within `answer_tokens`.
When thinking ends before `min_thinking` tokens, the closing tag is replaced by `extension`
("Wait,") and thinking goes on, up to `max_extensions` times.
"""
from __future__ import annotations

from dataclasses import dataclass

from rlvr.search.base import Problem, SearchError, SearchResult, register_search, require_positive
from rlvr.search.context import SearchContext, extract

OPEN, CLOSE = "<think>", "</think>"


@dataclass
class ThinkingConfig:
    """Budgeted thinking."""

    budget: int = 128
    """Most tokens generated inside <think> (extensions included)."""
    min_thinking: int = 0
    """Thinking that ends before this many tokens is extended (0: never)."""
    extension: str = "Wait,"
    """Text that replaces an early </think> to make the model think on."""
    max_extensions: int = 1
    """How many times thinking may be extended."""
    answer_tokens: int = 64
    """Tokens allowed for the answer after </think>."""

    def validate(self):
        require_positive("thinking", budget=self.budget, answer_tokens=self.answer_tokens)
        if self.min_thinking < 0 or self.max_extensions < 0:
            raise SearchError("thinking.min_thinking and thinking.max_extensions must be >= 0")


def split_thinking(text: str) -> tuple[str, str]:
    """(thinking, answer part) of a completion; no </think> means it is all thinking."""
    cut = text.find(CLOSE)
    return (text, "") if cut < 0 else (text[:cut], text[cut + len(CLOSE):])


@register_search("thinking", ThinkingConfig, "cap the tokens inside <think>, then force the answer")
def thinking(problem: Problem, ctx: SearchContext, cfg: ThinkingConfig) -> SearchResult:
    # The template may already open the think tag; if not, open it so the budget covers thinking.
    opened = "" if problem.prompt.rstrip().endswith(OPEN) else OPEN
    text, think_tokens, extensions, spent = opened, 0, 0, 0
    forced = False
    while True:
        room = cfg.budget - think_tokens
        part = ctx.sample([problem.prompt + text], 1, room, stop=[CLOSE])[0][0]
        spent += part.num_tokens
        think_tokens += part.num_tokens
        body, _ = split_thinking(part.text)
        text += body
        closed = CLOSE in part.text
        if closed and think_tokens < cfg.min_thinking and extensions < cfg.max_extensions and think_tokens < cfg.budget:
            text += cfg.extension
            extensions += 1
            continue
        # Out of budget, or the policy stopped (EOS) while still thinking: close the tag for it.
        forced = not closed
        text += CLOSE
        break
    answer = ctx.sample([problem.prompt + text], 1, cfg.answer_tokens)[0][0]
    spent += answer.num_tokens
    text += answer.text
    _, answer_part = split_thinking(text)
    return SearchResult(
        answer=extract(answer_part or text), text=text, tokens_spent=spent,
        details={"thinking_tokens": think_tokens, "forced_close": forced, "extensions": extensions},
    )
