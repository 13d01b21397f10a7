"""How the update splits its batch into micro-batches (gradient accumulation).

By rows (`micro_batch_size`: consecutive rows, the whole batch when 0), or by a token budget
(`micro_batch_tokens`, as verl's dynamic batch size / ppo_max_token_len_per_gpu): the rows longest
first, cut into runs whose forward holds at most the budget -- padded rows count their run's width
(its longest prompt plus its longest completion) times its rows, packed rows their real tokens. A
row count has to fit the case where every completion runs to the cap; a budget lets short
completions share a forward and bounds memory by what the forward really holds. A row longer than
the budget runs alone.

Every micro-batch leaves out the columns that are padding in all of its rows, so a run of short
sequences is a narrow forward. Under several processes every process runs as many micro-batches
(the largest count among them; ZeRO-3 gathers the parameters in each forward, and the gradient
all-reduce waits on the last one), splitting its largest runs to get there.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from rlvr.trainer.batch import TrainBatch
from rlvr.trainer.metrics import reduce_max
from rlvr.trainer.packing import sequence_lengths


@dataclass(frozen=True)
class MicroBatch:
    rows: slice | torch.Tensor
    """The batch rows (a slice, or an index tensor on the batch's device)."""
    prompt_width: int
    """Its longest real prompt: the prompt columns it keeps (the rightmost ones)."""
    completion_width: int
    """Its longest completion (at least 1): the completion columns it keeps (the leftmost ones)."""
    indices: tuple[int, ...]
    """`rows` as host integers."""
    tokens: int
    """What its forward holds, as a token budget counts it (`_cost`)."""


def micro_batches(batch: TrainBatch, micro_batch_size: int, micro_batch_tokens: int, packing: bool,
                  acc=None) -> list[MicroBatch]:
    """The micro-batches of the local `batch`, in the order the update runs them. `acc` (an
    accelerate Accelerator, or None for one process) evens the count of budget runs over processes."""
    prompt_lens, comp_lens = sequence_lengths(batch)  # one host sync
    n = len(prompt_lens)
    if micro_batch_tokens:
        runs = token_runs(prompt_lens, comp_lens, micro_batch_tokens, packing)
        if acc is not None and acc.num_processes > 1:
            (count,) = reduce_max(acc, [float(len(runs))])
            runs = split_runs(runs, int(count))
        device = batch.input_ids.device
        rows = [torch.tensor(run, dtype=torch.long, device=device) for run in runs]
    else:
        size = micro_batch_size or n
        runs = [list(range(s, min(s + size, n))) for s in range(0, n, size)]
        rows = [slice(run[0], run[-1] + 1) for run in runs]
    return [MicroBatch(r, max(1, max(prompt_lens[i] for i in run)), max(1, max(comp_lens[i] for i in run)),
                       tuple(run), _cost(run, prompt_lens, comp_lens, packing)) for r, run in zip(rows, runs)]


def halved(batch: TrainBatch, groups: list[MicroBatch], packing: bool) -> tuple[list[MicroBatch], int] | None:
    """The batch re-split under half the tokens of the largest of `groups`, counted as `token_runs`
    counts them (so every run of several rows is smaller than before: the halvings end), one process,
    and that budget; None when every micro-batch is already one row."""
    if all(len(g.indices) == 1 for g in groups):
        return None
    budget = max(1, max(g.tokens for g in groups) // 2)
    return micro_batches(batch, 0, budget, packing), budget


def token_runs(prompt_lens: list[int], comp_lens: list[int], budget: int, packing: bool) -> list[list[int]]:
    """Row indices per micro-batch: longest first, a run closed when the next row would take it
    past `budget` tokens (padded: rows x (longest prompt + longest completion); packed: the sum)."""
    order = sorted(range(len(prompt_lens)), key=lambda i: -(prompt_lens[i] + comp_lens[i]))
    runs: list[list[int]] = []
    run: list[int] = []
    for i in order:
        if run and _cost(run + [i], prompt_lens, comp_lens, packing) > budget:
            runs.append(run)
            run = []
        run.append(i)
    return runs + [run] if run else runs


def _cost(run: list[int], prompt_lens: list[int], comp_lens: list[int], packing: bool) -> int:
    if packing:
        return sum(prompt_lens[i] + comp_lens[i] for i in run)
    return len(run) * (max(prompt_lens[i] for i in run) + max(comp_lens[i] for i in run))


def split_runs(runs: list[list[int]], count: int) -> list[list[int]]:
    """`runs` split into `count` (>= len(runs)): the run with the most rows halved, until there are enough."""
    runs = [list(r) for r in runs]
    while len(runs) < count:
        widest = max(range(len(runs)), key=lambda j: len(runs[j]))
        run = runs[widest]
        if len(run) < 2:
            raise RuntimeError(f"micro_batch_tokens: another process runs {count} micro-batches and this one has "
                               f"only {sum(len(r) for r in runs)} rows; every process must run as many")
        runs[widest:widest + 1] = [run[:len(run) // 2], run[len(run) // 2:]]
    return runs


def part(batch: TrainBatch, mb: MicroBatch) -> TrainBatch:
    """The micro-batch's rows of `batch`, without its all-padding columns (prompts are left-padded,
    completions right-padded; positions count from each row's first real token, so they stay)."""
    p, t = batch.prompt_width, mb.completion_width
    cols = slice(p - mb.prompt_width, p + t)
    return TrainBatch(batch.input_ids[mb.rows, cols], batch.attention_mask[mb.rows, cols],
                      batch.position_ids[mb.rows, cols], batch.targets[mb.rows, :t], batch.mask[mb.rows, :t],
                      mb.prompt_width)


def columns(x: torch.Tensor | None, mb: MicroBatch) -> torch.Tensor | None:
    """A per-token (N, T) tensor's entries for the micro-batch: its rows, its completion columns."""
    return None if x is None else x[mb.rows, :mb.completion_width]
