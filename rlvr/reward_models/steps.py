"""Reasoning steps: how a solution text is cut into steps and how steps become token ids.

A step ends at the step separator (default a blank line, as in search-and-learn). The PRM is
trained and queried on exactly the same encoding: each step is tokenized on its own, followed by
the separator, so the position of every step's last token is known without offsets mapping and
does not depend on whether the solution is finished.
"""
from __future__ import annotations

DEFAULT_SEPARATOR = "\n\n"


def split_steps(text: str, separator: str = DEFAULT_SEPARATOR) -> list[str]:
    """Non-empty steps of `text`, separators removed.

    >>> split_steps("a = 1\\n\\nb = 2\\n\\n")
    ['a = 1', 'b = 2']
    """
    if not separator:
        raise ValueError("step separator must be a non-empty string")
    return [s for s in (part.strip("\n") for part in text.split(separator)) if s.strip()]


def join_steps(steps: list[str], separator: str = DEFAULT_SEPARATOR) -> str:
    """The text of a (partial) solution: every step followed by the separator."""
    return "".join(step + separator for step in steps)


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of a piece of text, no special tokens (pieces are concatenated)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_steps(tokenizer, prompt: str, steps: list[str], separator: str = DEFAULT_SEPARATOR) -> tuple[list[int], list[int]]:
    """(ids, step_ends): the prompt's ids, then each step + separator; step_ends[i] is the index
    of the last token of step i (its separator included), where the PRM reads step i's score.
    """
    ids = encode(tokenizer, prompt)
    ends = []
    for step in steps:
        piece = encode(tokenizer, step + separator)
        if not piece:
            raise ValueError(f"step {step!r} encodes to no tokens")
        ids.extend(piece)
        ends.append(len(ids) - 1)
    return ids, ends
