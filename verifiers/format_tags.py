"""The `format` kind: the completion is ``<think>...</think>`` then ``<answer>...</answer>``.

Checked by finding the tags (one linear pass), not by a backtracking regex over model output.
"""
from __future__ import annotations

from typing import Any

from verifiers.registry import register_verifier
from verifiers.result import VerifyResult, full, zero


@register_verifier("format")
def verify_format(
    completion: str,
    reference: Any = None,
    *,
    think_tag: str = "think",
    answer_tag: str = "answer",
    prompt_opens_think: bool = False,
) -> VerifyResult:
    """Score 1 for exactly one think block followed by exactly one answer block, nothing but
    whitespace around them. The reference is not used (every kind takes one).

    With ``prompt_opens_think=True`` the prompt already ends with ``<think>`` (R1-style
    templates), so the completion starts inside the think block.

    >>> verify_format("<think>2+2=4</think>\\n<answer>4</answer>").score
    1.0
    >>> verify_format("<answer>4</answer>").reason
    'bad format: expected exactly one <think> and one </think>'
    >>> verify_format("2+2=4</think><answer>4</answer>", prompt_opens_think=True).correct
    True
    """
    text = f"<{think_tag}>" + completion if prompt_opens_think else completion
    tags = [f"<{think_tag}>", f"</{think_tag}>", f"<{answer_tag}>", f"</{answer_tag}>"]
    for opening, closing in (tags[:2], tags[2:]):
        if text.count(opening) != 1 or text.count(closing) != 1:
            return zero(f"bad format: expected exactly one {opening} and one {closing}")
    positions = [text.find(tag) for tag in tags]
    if positions != sorted(positions):
        return zero("bad format: tags out of order")
    outside = text[: positions[0]] + text[positions[1] + len(tags[1]) : positions[2]]
    outside += text[positions[3] + len(tags[3]) :]
    if outside.strip():
        return zero("bad format: text outside the think and answer blocks")
    answer = text[positions[2] + len(tags[2]) : positions[3]].strip()
    if not answer:
        return zero("bad format: empty answer")
    return full(answer)
