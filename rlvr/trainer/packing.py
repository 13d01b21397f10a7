"""Padding-free forward of the update: a TrainBatch's sequences packed end to end into rows.

Each sequence keeps only its real tokens (the prompt without its left padding, the completion
without its right padding and without its last token, which predicts nothing), laid end to end
into rows of at most `row_tokens` tokens (0: the longest sequence's length; first-fit decreasing;
a longer sequence gets a row of its own). Positions restart at 0 for every sequence, and the model is called with
`attention_mask=None` so attention never crosses a sequence boundary:

- sdpa / eager / flex: transformers' mask builder sees positions that restart and makes the mask
  block-diagonal causal (`masking_utils.find_packed_sequence_indices`);
- flash attention: the varlen kwargs `cu_seq_lens_q/k`, `max_length_q/k` (the sequence boundaries
  in the flattened rows) make it call the varlen kernel.

A row's unused tail is one more segment (pad token ids, positions 0..k-1): both attention paths
see it as a sequence of its own, so it never leaks into a real one.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from rlvr.trainer.batch import TrainBatch, final_hidden

FILLER_ID = 0
"""Token id of a row's unused tail (any id works: the tail attends only to itself)."""


@dataclass
class PackedRows:
    input_ids: torch.Tensor
    """(R, W) the sequences' real tokens end to end, each row's tail filled with FILLER_ID."""
    position_ids: torch.Tensor
    """(R, W) 0, 1, ... within every sequence (and within each row's tail)."""
    cu_seq_lens: torch.Tensor
    """(S+1,) int32 segment boundaries in the flattened (R*W) rows, tails included."""
    max_length: int
    """Longest segment."""
    source: torch.Tensor
    """(N, T) index into the flattened (R*W) hidden states of the state predicting completion
    token t of sequence i; R*W (one past the end) where there is no completion token."""


def sequence_lengths(batch: TrainBatch) -> tuple[list[int], list[int]]:
    """Real prompt and completion lengths per sequence (one host sync)."""
    p = batch.prompt_width
    real = batch.attention_mask.sum(dim=1, dtype=torch.long)
    prompt = batch.attention_mask[:, :p].sum(dim=1, dtype=torch.long)
    both = torch.stack([prompt, real - prompt]).tolist()
    return both[0], both[1]


def first_fit(lengths: list[int], cap: int) -> list[list[int]]:
    """Sequence indices per row: longest first, each into the first row with room."""
    rows: list[list[int]] = []
    used: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        row = next((r for r, u in enumerate(used) if u + lengths[i] <= cap), None)
        if row is None:  # a sequence longer than the cap opens a row that nothing else fits into
            rows.append([])
            used.append(0)
            row = len(rows) - 1
        rows[row].append(i)
        used[row] += lengths[i]
    return rows


def pack(batch: TrainBatch, row_tokens: int = 0) -> PackedRows:
    """The packed rows of `batch` and where each completion position's hidden state lands."""
    prompt_lens, comp_lens = sequence_lengths(batch)
    if min(prompt_lens) < 1:
        raise ValueError("packing needs a prompt token before every completion (a sequence has an empty prompt)")
    n, t = batch.targets.shape
    p = batch.prompt_width
    seq_lens = [lp + max(lc - 1, 0) for lp, lc in zip(prompt_lens, comp_lens)]  # the last token predicts nothing
    rows = first_fit(seq_lens, row_tokens or max(seq_lens))
    width = max(sum(seq_lens[i] for i in row) for row in rows)
    take = torch.full((len(rows), width), -1, dtype=torch.long)  # index into the flattened input_ids
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    source = torch.full((n, t), len(rows) * width, dtype=torch.long)
    row_width = batch.input_ids.shape[1]
    segments = []
    for r, row in enumerate(rows):
        col = 0
        for i in row:
            length, first = seq_lens[i], i * row_width + p - prompt_lens[i]
            take[r, col:col + length] = torch.arange(first, first + length)
            pos[r, col:col + length] = torch.arange(length)
            # completion token j sits at column col + prompt_len + j; its predictor one column earlier
            start = r * width + col + prompt_lens[i] - 1
            source[i, :comp_lens[i]] = torch.arange(start, start + comp_lens[i])
            segments.append(length)
            col += length
        if col < width:
            pos[r, col:] = torch.arange(width - col)
            segments.append(width - col)
    device = batch.input_ids.device
    take = take.to(device)
    ids = torch.where(take >= 0, batch.input_ids.reshape(-1)[take.clamp(min=0)], FILLER_ID)
    cu = torch.tensor([0] + segments, dtype=torch.int32).cumsum(0, dtype=torch.int32)
    return PackedRows(ids, pos.to(device), cu.to(device), max(segments), source.to(device))


def packed_completion_hidden(model, batch: TrainBatch, row_tokens: int = 0) -> torch.Tensor:
    """`completion_hidden(model, batch)` computed on packed rows: the same (N, T, H) hidden states
    at every completion token, zeros at the completion padding."""
    rows = pack(batch, row_tokens)
    hidden = final_hidden(
        model,
        input_ids=rows.input_ids,
        attention_mask=None,  # positions that restart mark the sequences (see the module docstring)
        position_ids=rows.position_ids,
        cu_seq_lens_q=rows.cu_seq_lens, cu_seq_lens_k=rows.cu_seq_lens,
        max_length_q=rows.max_length, max_length_k=rows.max_length,
    )  # (R, W, H)
    flat = hidden.reshape(-1, hidden.shape[-1])
    flat = torch.cat([flat, flat.new_zeros(1, flat.shape[-1])])  # index R*W: the zero row for padding
    n, t = batch.targets.shape
    return flat[rows.source.reshape(-1)].reshape(n, t, -1)
