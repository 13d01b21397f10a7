"""Token-level helpers every rollout engine shares: padding, EOS/pad ids, the completion cut.

Engines keep the sampled token ids; text is decoded only to find stop strings, and the cut is made
on a token boundary so completions are never re-tokenized.
"""
from __future__ import annotations

import torch


def cut_completion(row: list[int], eos_ids: list[int], tokenizer, stop: list[str]) -> tuple[list[int], bool]:
    """Completion ids up to and including the first EOS, then cut after the first stop string.

    Returns (ids, ended): ended is False when neither EOS nor a stop string was reached.
    """
    ended = False
    first = _first_index(row, eos_ids)
    if first is not None:
        row, ended = row[: first + 1], True
    if stop:
        k = first_stop_prefix(tokenizer, row, stop)
        if k is not None:
            row, ended = row[:k], True
    return row, ended


def _first_index(row: list[int], values: list[int]) -> int | None:
    """Position of the first element of `row` in `values` (list.index: C speed over long rows)."""
    first = None
    for value in values:
        try:
            first = row.index(value, 0, len(row) if first is None else first)
        except ValueError:
            continue
    return first


def first_stop_prefix(tokenizer, ids: list[int], stops: list[str]) -> int | None:
    """Smallest k such that decode(ids[:k]) contains a stop string, or None.

    Containment only grows with k, so a binary search needs O(log T) decodes.
    """
    def hit(k: int) -> bool:
        text = tokenizer.decode(ids[:k], skip_special_tokens=True)
        return any(s in text for s in stops)

    if not ids or not hit(len(ids)):
        return None
    lo, hi = 1, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if hit(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def host_to_device(values, device, dtype=torch.long) -> torch.Tensor:
    """A host list or tensor on `device` without waiting: a blocking host-to-device copy
    synchronizes the stream (the host waits for every queued kernel), a copy from pinned memory
    does not (PyTorch keeps the pinned block alive until the copy has run)."""
    t = values if isinstance(values, torch.Tensor) else torch.tensor(values, dtype=dtype)
    if torch.device(device).type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def left_pad(seqs: list[list[int]], pad_id: int, device, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) of `seqs` left-padded to `width` (None: the longest; a static shape for a graph)."""
    width = max(len(s) for s in seqs) if width is None else width
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s):] = 1
    return host_to_device(ids, device), host_to_device(mask, device)


def eos_token_ids(model, tokenizer) -> list[int]:
    ids: list[int] = []
    for source in (getattr(getattr(model, "generation_config", None), "eos_token_id", None),
                   getattr(tokenizer, "eos_token_id", None)):
        if source is None:
            continue
        for i in source if isinstance(source, (list, tuple)) else [source]:
            if i not in ids:
                ids.append(int(i))
    return ids


def pad_token_id(tokenizer, eos_ids: list[int]) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is not None:
        return int(pad)
    if eos_ids:
        return eos_ids[0]
    raise ValueError("the tokenizer has neither a pad token nor an EOS token; left padding needs one")
