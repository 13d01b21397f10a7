"""Find the final answer (or program) inside a completion.

Every scan here is linear in the text: completions are model output of any size, and a regex with
nested quantifiers could stall the calling process.
"""
from __future__ import annotations

import re
from typing import Callable, Sequence

DEFAULT_STRATEGIES = ("boxed", "answer_tag", "the_answer_is", "last_number")
"""Tried in this order; the first one that finds something wins."""

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*(?=\{)")
_ANSWER_IS = re.compile(r"(?i)\bthe\s+(?:final\s+)?answer\s+is\s*:?\s*([^\n]*)")
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?(?:/\d+)?")


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`), braces balanced.

    >>> last_boxed(r"so \\boxed{\\frac{1}{2}} and finally \\boxed{3}")
    '3'
    """
    if "\\boxed" not in text and "\\fbox" not in text:
        return None
    closing = _matching_braces(text)
    for start in reversed([match.end() for match in _BOXED.finditer(text)]):
        end = closing.get(start)
        if end is not None:
            return text[start + 1 : end].strip()
    return None


def _matching_braces(text: str) -> dict[int, int]:
    """Index of each "{" -> index of its "}", in one pass (a rescan per candidate would be
    quadratic on a completion of thousands of unclosed boxes)."""
    stack, closing = [], {}
    for index, char in enumerate(text):
        if char == "{":
            stack.append(index)
        elif char == "}" and stack:
            closing[stack.pop()] = index
    return closing


def last_tag(text: str, tag: str) -> str | None:
    """Content of the last `<tag>...</tag>` pair.

    >>> last_tag("<answer>1</answer> then <answer> 2 </answer>", "answer")
    '2'
    """
    close = text.rfind(f"</{tag}>")
    if close == -1:
        return None
    start = text.rfind(f"<{tag}>", 0, close)
    if start == -1:
        return None
    return text[start + len(tag) + 2 : close].strip()


def _from_answer_tag(text: str) -> str | None:
    content = last_tag(text, "answer")
    if content is None:
        return None
    # An answer tag that itself holds a boxed answer means the boxed part.
    return last_boxed(content) or _strip_answer(content) or None


def _from_answer_is(text: str) -> str | None:
    matches = list(_ANSWER_IS.finditer(text))
    if not matches:
        return None
    return _strip_answer(matches[-1].group(1)) or None


def _strip_answer(answer: str) -> str:
    answer = answer.strip()
    while answer and answer[-1] in ".。":
        answer = answer[:-1].rstrip()
    # "$x$", "\(x\)" and "\[x\]" wrappers carry no meaning of their own.
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if answer.startswith(left) and answer.endswith(right) and len(answer) >= len(left) + len(right):
            answer = answer[len(left) : len(answer) - len(right)].strip()
            break
    return answer


def _last_number(text: str) -> str | None:
    last = None
    for last in _NUMBER.finditer(text):
        pass
    return last.group(0).lstrip("+") if last else None


STRATEGIES: dict[str, Callable[[str], str | None]] = {
    "boxed": last_boxed,
    "answer_tag": _from_answer_tag,
    "the_answer_is": _from_answer_is,
    "last_number": _last_number,
    "whole": lambda text: _strip_answer(text) or None,
}


def check_strategies(strategies: Sequence[str]) -> None:
    if isinstance(strategies, str) or not strategies:
        raise ValueError(f"extract must be a non-empty list of strategies out of {list(STRATEGIES)}")
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown extraction strategies {unknown}; valid: {list(STRATEGIES)}")


def extract_answer(text: str, strategies: Sequence[str] = DEFAULT_STRATEGIES) -> str | None:
    """The final answer of a math completion, or None when no strategy finds one.

    Strategies, tried in the given order: ``boxed`` (last ``\\boxed{}``), ``answer_tag`` (last
    ``<answer>...</answer>``), ``the_answer_is`` ("The answer is ..."), ``last_number``; and,
    outside the default list, ``whole`` (the text itself is the answer).

    >>> extract_answer(r"<think>2+2</think><answer>\\boxed{4}</answer>")
    '4'
    >>> extract_answer("So the answer is $\\\\frac{3}{4}$.")
    '\\\\frac{3}{4}'
    >>> extract_answer("I think 12, no wait, 1,234.5 apples")
    '1,234.5'
    >>> extract_answer("no digits here") is None
    True
    """
    check_strategies(strategies)
    for name in strategies:
        found = STRATEGIES[name](text)
        if found:
            return found
    return None


def extract_program(text: str) -> str:
    """The last fenced code block of a completion, or the whole completion when it has none.

    >>> extract_program("Here:\\n```python\\ndef f():\\n    return 1\\n```\\nDone.")
    'def f():\\n    return 1\\n'
    """
    blocks = _fenced_blocks(text)
    if not blocks:
        return text
    python_blocks = [code for lang, code in blocks if lang.lower() in ("", "python", "py", "python3")]
    return (python_blocks or [code for _, code in blocks])[-1]


def _fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of each ``` fenced block, in order; one pass over the text."""
    blocks = []
    pos = 0
    while True:
        start = text.find("```", pos)
        if start == -1:
            return blocks
        line_end = text.find("\n", start)
        if line_end == -1:
            return blocks
        end = text.find("```", line_end)
        if end == -1:
            return blocks
        info = text[start + 3 : line_end].strip()
        blocks.append((info.split()[0] if info else "", text[line_end + 1 : end]))
        pos = end + 3
