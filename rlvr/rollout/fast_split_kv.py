"""How many column ranges ("splits") the decode attention divides each sequence's KV cache into.

One program per (sequence, KV head) walks all of its cache columns: with few sequences and long
caches that is fewer programs than the GPU has SMs, each reading thousands of columns in turn
(64 sequences x 2 KV heads = 128 programs on a 132-SM H200). Splitting the columns over several
programs, whose partial softmaxes a second launch combines ("flash-decoding"), fills the GPU.

The count depends only on static shapes, so a CUDA graph's launch grid is fixed. Triton-free: the
engine and the CPU tests ask without importing the kernels.
"""
from __future__ import annotations

import torch

SHORT_CACHE = 1024
"""Caches of at most this many columns are not split: each program's walk is short already."""
MIN_SPLIT_COLUMNS = 256
"""Splits are counted against the whole cache: at least this many columns each once the cache is
full, so a split's fixed cost (q, the partial results) stays small."""
PROGRAMS_PER_SM = 4
"""Programs aimed at per SM (the splits divide the columns visible at each step, so all of them work)."""
INTERPRETER_SMS = 132
"""SMs assumed off CUDA (the Triton CPU interpreter): an H200's, so CPU runs split as it would."""


def attention_splits(n: int, kv: int, s: int, sm_count: int, programs_per_sm: int | None = None) -> int:
    """Splits of the S cache columns of each of the N x kv (sequence, KV head) pairs: 1 (the
    single-pass kernel) when the cache is short or the pairs alone fill the GPU twice over; else
    enough to reach `programs_per_sm` (PROGRAMS_PER_SM when None, read at each call) programs per
    SM, each split keeping MIN_SPLIT_COLUMNS."""
    programs = n * kv
    if s <= SHORT_CACHE or programs >= 2 * sm_count:
        return 1
    wanted = -(-(programs_per_sm or PROGRAMS_PER_SM) * sm_count // programs)
    return max(1, min(wanted, s // MIN_SPLIT_COLUMNS))


def device_sm_count(device: torch.device | str) -> int:
    """The SM count of a CUDA device; INTERPRETER_SMS elsewhere."""
    device = torch.device(device)
    if device.type != "cuda":
        return INTERPRETER_SMS
    return torch.cuda.get_device_properties(device).multi_processor_count
