"""Refill: a generate call that asks for more rows than `FastEngineConfig.refill_rows` decodes them
in that many rows, and a row whose completion has finished is handed to the next waiting sample,
prefilled into it mid-generation. Finished rows then cost nothing for long: the batch stays full
while samples wait, where compaction alone can only shrink it.

The unit is a row, not a prompt's group of G: a group holds its rows until its longest sample
ends, and long-tailed lengths make that most of the cap. Newcomers that share a prompt share its
prefill. Every row shares the cache column the next step writes (`DecodeState.col`), so a
newcomer's prompt is written right before it, into columns the row's previous occupant no longer
reads; `start` (Triton) and the mask bias (torch) make the row see only its own columns, and its
positions restart at 0. Its outputs begin at the current output column (`DecodeState.offset`).
The cache holds `FastEngineConfig.refill_horizon` x max_new_tokens output columns (plus one check
interval of slack; the host checks at least once per max_new_tokens steps): a row takes a newcomer
only while a whole new completion still fits; then the run drains (with compaction) and the next
run starts with the samples still waiting.

A newcomer's completion may end past the shared step count, so the cap of max_new_tokens is
enforced per row at the host checks, and its outputs are cut at the cap.

The checks do not wait for the GPU: the finished flags are copied to the host an eighth of a check
interval before each check and read at it, while the steps queued after the copy run, and a
finished row's outputs are gathered into a device buffer that the host copies once, after the last
run. A check's host work (collecting, the newcomers' prefill, the cache writes) then overlaps the
queued steps instead of leaving the GPU idle; the price is that a row is seen finished up to
1.125 check intervals late (0.625 on average). Nothing in a check may synchronize: one blocking copy
makes the host wait for every queued step and leaves the GPU idle while the host then works.

On CUDA (with `cuda_graph`) the newcomers' prefill replays a captured graph (`PrefillGraphs`) of
the engine's prefill, on the Triton kernels when the decode step runs them: a refill prefills a
few prompts, so its cost is launches, on the host when eager and on the GPU in a graph.
"""
from __future__ import annotations

import itertools
import time
import warnings
from dataclasses import replace

import torch

from rlvr.rollout.base import SamplingParams
from rlvr.rollout.fast_state import DecodeState
from rlvr.rollout.sampler import force_token, sample_tokens
from rlvr.rollout.tokens import host_to_device, left_pad

FLAG_LEAD_DIVISOR = 8
"""The finished flags a check reads are copied refill_check_every // this many steps before it:
the smaller that lead, the sooner a finished row is seen, the less queued GPU work covers the
check's host work (read at each run). On one H200 at 256 rows and interval 32 (the Qwen2-0.5B
shape, `profile_refill.py --flag-lead 4,8,16`): a lead of 4 steps beat 8 and 2."""


class PrefillGraphs:
    """The engine's prefill (`FastEngine.prefill`) captured in CUDA graphs, one per batch bucket
    (a power of two) at one prompt width. A call copies its prompts into the bucket's static
    inputs (the rows past them stay padding, never read) and returns views of the static outputs:
    read before the next call (a reader queued on the stream before it is)."""

    def __init__(self, forward, width: int, pad_id: int, device):
        self.forward, self.width, self.pad_id, self.device = forward, width, pad_id, device
        self.graphs: dict[int, tuple] = {}  # bucket -> graph, static inputs, static outputs

    def __call__(self, ids: torch.Tensor, valid: torch.Tensor):
        b, width = ids.shape
        if width != self.width:
            raise ValueError(f"prefill graphs take prompts padded to width {self.width}, got {width}")
        bucket = 1 << (b - 1).bit_length()
        if bucket not in self.graphs:
            self.graphs[bucket] = self._capture(bucket)
        graph, static_ids, static_valid, (logits, keys, values) = self.graphs[bucket]
        static_ids[:b].copy_(ids)
        static_ids[b:].fill_(self.pad_id)
        static_valid[:b].copy_(valid)
        static_valid[b:].fill_(False)
        graph.replay()
        return logits[:b], [k[:b] for k in keys], [v[:b] for v in values]

    def _capture(self, bucket: int) -> tuple:
        ids = torch.full((bucket, self.width), self.pad_id, dtype=torch.long, device=self.device)
        valid = torch.zeros((bucket, self.width), dtype=torch.bool, device=self.device)
        side = torch.cuda.Stream()  # warm-up off the capture (cuBLAS handles, lazy initialisation)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self.forward(ids, valid)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):  # a pool of its own: small, and no replay-order constraint
            out = self.forward(ids, valid)
        return graph, ids, valid, out


class RefillOutputs:
    """Every request row's output window (max_new_tokens columns from its first output column),
    gathered on the device as rows finish; the host copies them once, at the end."""

    def __init__(self, rows: int, cap: int, device):
        self.tokens = torch.zeros((rows, cap), dtype=torch.long, device=device)
        self.logp = torch.zeros((rows, cap), dtype=torch.float32, device=device)
        self.kept = [0] * rows  # columns of each row's window inside its run's output columns

    def take(self, st: DecodeState, slots: list[int]) -> None:
        """The windows of `slots` (device copies, no host sync)."""
        device, cap, width = st.out_tokens.device, self.tokens.shape[1], st.out_tokens.shape[1]
        offsets = [st.offset[s] for s in slots]
        columns = host_to_device(offsets, device)[:, None] + torch.arange(cap, device=device)
        columns = columns.clamp_(max=width - 1)  # past the run's end: cut by `kept`
        index = host_to_device(slots, device)[:, None]
        rows = host_to_device([st.order[s] for s in slots], device)
        self.tokens[rows] = st.out_tokens[index, columns]
        self.logp[rows] = st.out_logp[index, columns]
        for slot, offset in zip(slots, offsets):
            self.kept[st.order[slot]] = min(cap, width - offset)

    def lists(self, stop_ids: list[int]) -> tuple[list[list[int]], list[list[float]]]:
        """Each row's tokens and log-probs up to its first stop token (kept: its window otherwise).
        The cut is made on the device and only those columns are copied, once: a deep queue's
        windows are mostly padding after EOS (listing 4096 windows of 1024 whole took 0.66 s on two
        CPU cores, cut 0.37 s)."""
        device = self.tokens.device
        columns = torch.arange(self.tokens.shape[1], device=device)
        kept = torch.tensor(self.kept, device=device)
        stops = torch.isin(self.tokens, torch.tensor(stop_ids, dtype=torch.long, device=device))
        stops &= columns < kept[:, None]
        lengths = torch.where(stops.any(dim=1), stops.int().argmax(dim=1) + 1, kept)
        keep = columns < lengths[:, None]
        tokens, logps = self.tokens[keep].tolist(), self.logp[keep].tolist()  # row-major: rows end to end
        ends = list(itertools.accumulate(lengths.tolist()))
        starts = [0] + ends[:-1]
        return ([tokens[a:b] for a, b in zip(starts, ends)], [logps[a:b] for a, b in zip(starts, ends)])


class FinishedFlags:
    """The rows' finished flags copied to the host without waiting (pinned memory, an event on
    CUDA): taken when a check ends, read at the next, so the host never waits for the steps queued
    in between."""

    def __init__(self, st: DecodeState):
        cuda = st.finished.is_cuda
        self.host = torch.zeros(st.n, dtype=torch.bool, pin_memory=cuda)
        self.copied = torch.cuda.Event() if cuda else None

    def take(self, st: DecodeState) -> None:
        self.host.copy_(st.finished, non_blocking=True)
        if self.copied is not None:
            self.copied.record()

    def read(self) -> list[bool]:
        if self.copied is not None:
            self.copied.synchronize()  # the copy only: steps queued after it keep running
        return self.host.tolist()


class RefillRun:
    """One run of `rows` rows over a queue of waiting request rows (prompt * G + sample); gathers
    each request row's outputs into `outputs` as it finishes."""

    COUNTS = ("refills", "steps", "drain_steps", "row_steps", "check_s", "prefill_s", "wait_s")
    """What a run counts (attributes of the same names; `_s`: host seconds), summed over runs."""

    def __init__(self, engine, prompt_ids: list[list[int]], group: int, params: SamplingParams,
                 end_at: list[int] | None, rows: int, outputs: RefillOutputs):
        self.engine, self.prompt_ids, self.group, self.params = engine, prompt_ids, group, params
        self.end_at = end_at
        self.rows = rows
        self.outputs = outputs
        self.refills = 0  # rows prefilled mid-generation
        self.steps = 0
        self.row_steps = 0  # rows stepped, summed over steps: what the decode paid for
        self.drain_steps = 0  # steps after the last refill: the queue is empty, the longest rows decide
        self.check_s = 0.0  # host seconds of the checks' own work (collection, refill, compaction)
        self.prefill_s = 0.0  # the part of check_s spent launching the newcomers' prefill forwards
        self.wait_s = 0.0  # host seconds waiting for the flags: the GPU was behind (the host was not)
        self.graphs: PrefillGraphs | None = None  # set per run, on CUDA

    def run(self, queue: list[int]) -> list[int]:
        """Decode until every row is done; returns the request rows still waiting."""
        e, params = self.engine, self.params
        width = max(len(self.prompt_ids[r // self.group]) for r in queue)  # every waiting prompt fits
        # checks at least once per completion length: short completions free their rows in time
        every = max(1, min(e.config.refill_check_every, params.max_new_tokens))
        # the flags a check reads are copied `lead` steps before it, not at the check before: a
        # finished row is seen every/2 + lead steps later on average instead of 1.5 x every, and the
        # check's host work still overlaps the `lead` steps queued after the copy
        lead = every // FLAG_LEAD_DIVISOR
        self.horizon = e.config.refill_horizon * params.max_new_tokens + every
        device = e.model.lm_head.weight.device
        st = e._state(self.rows, width, replace(params, max_new_tokens=self.horizon), device, self.end_at is not None)
        self.graphs = PrefillGraphs(e.prefill, width, e.pad_id, device) if self._graphed(st) else None
        self._reset(st, width)
        filled = time.perf_counter()
        queue, _ = self._refill(st, queue, steps=1)  # the first fill, not counted as refills
        self.check_s += time.perf_counter() - filled  # host work like a check's (prefill_s counts it too)
        flags = FinishedFlags(st)
        flags.take(st)
        steps, batch, refilling = 1, st, True
        while True:
            if steps % every == 0 or steps >= self.horizon:
                asked = time.perf_counter()
                finished = flags.read()  # as they were `lead` steps ago
                checked = time.perf_counter()
                self.wait_s += checked - asked
                self._collect_done(st, finished, steps)
                refilling = refilling and bool(queue) and steps + params.max_new_tokens + every <= self.horizon
                if refilling:
                    waiting = len(queue)
                    queue, slots = self._refill(st, queue, steps)
                    self.refills += waiting - len(queue)
                    for slot in slots:  # running until a later check reads their flags
                        finished[slot] = False
                batch = self._running(st, batch, finished, steps, compact=not refilling)
                self.check_s += time.perf_counter() - checked
                if batch is None or steps >= self.horizon:
                    break
            e._replay(st, batch, params)
            self.row_steps += batch.n
            self.drain_steps += not refilling
            steps += 1
            if (steps + lead) % every == 0:
                flags.take(st)
        self._collect_done(st, None, steps, final=True)
        self.steps += steps
        return queue

    def _reset(self, st: DecodeState, width: int) -> None:
        """Every row empty; the shared scalars at the first column (`width`: the widest prompt)."""
        st.order, st.offset = [-1] * st.n, [0] * st.n
        st.width = width
        st.col.fill_(width)
        st.step.fill_(1)  # output column 0 holds each row's first token, sampled from its prefill
        st.seed.copy_(torch.randint(0, 2**31 - 1, (1,)))  # the fused sampler's; params.seed reproduces
        st.finished.fill_(True)
        st.start.fill_(width)  # an empty row reads only the columns it writes itself
        st.bias.fill_(float("-inf"))
        st.out_tokens.fill_(self.engine.pad_id)
        st.out_logp.zero_()

    def _graphed(self, st: DecodeState) -> bool:
        return st.tokens.is_cuda and self.engine.config.cuda_graph

    def _prefill(self, ids: torch.Tensor, valid: torch.Tensor):
        """The newcomers' prefill: its captured graph where there is one, eager otherwise (and from
        the first failed capture on, with a warning)."""
        if self.graphs is not None:
            try:
                return self.graphs(ids, valid)
            except Exception as e:  # an untested GPU or toolchain: eager is slower, not wrong
                warnings.warn(f"refill: capturing the prefill failed ({type(e).__name__}: {e}); prefilling eagerly")
                self.graphs = None
        return self.engine.prefill(ids, valid)

    def _capped(self, st: DecodeState, slot: int, steps: int) -> bool:
        return steps - st.offset[slot] >= self.params.max_new_tokens

    def _collect_done(self, st: DecodeState, finished: list[bool] | None, steps: int, final: bool = False) -> None:
        """Gather the outputs of every occupied slot whose row is finished or capped (every one
        when `final`), and mark the slot empty (order -1)."""
        done = [s for s in range(st.n) if st.order[s] >= 0 and (final or finished[s] or self._capped(st, s, steps))]
        if done:
            self.outputs.take(st, done)
        for slot in done:
            st.order[slot] = -1

    def _running(self, st: DecodeState, batch: DecodeState, finished: list[bool], steps: int, compact: bool):
        """The rows to step: None when none is running; while draining (`compact`), the running
        rows moved to the front when they fit half the batch, as the engine's own check does."""
        alive = [s for s in range(batch.n) if st.order[s] >= 0 and not finished[s] and not self._capped(st, s, steps)]
        if not alive:
            return None
        if not compact or not self.engine.config.compact:
            return batch
        return self.engine._compacted(st, batch, alive, steps)

    def _refill(self, st: DecodeState, queue: list[int], steps: int) -> tuple[list[int], list[int]]:
        """Prefill waiting request rows into the empty slots, before the column the next step
        writes; rows of one prompt share its prefill. Returns the queue left and the slots filled."""
        free = [s for s in range(st.n) if st.order[s] < 0]
        take, queue = queue[: len(free)], queue[len(free):]
        if not take:
            return queue, []
        e, g = self.engine, self.group
        device = st.tokens.device
        col = st.width + steps - 1  # the column the next step writes
        prefill_of = {p: i for i, p in enumerate(dict.fromkeys(r // g for r in take))}  # each prompt once
        ids, valid = left_pad([self.prompt_ids[p] for p in prefill_of], e.pad_id, device,
                              width=None if self.graphs is None else st.width)  # a graph's static width
        width = ids.shape[1]
        launched = time.perf_counter()
        logits, keys, values = self._prefill(ids, valid.bool())
        self.prefill_s += time.perf_counter() - launched
        which = host_to_device([prefill_of[r // g] for r in take], device)  # each row's prefill
        slots = free[: len(take)]
        index = host_to_device(slots, device)
        for cache, new in zip(st.k + st.v, keys + values):
            cache[index, :, col - width:col] = new[which]
        row_valid = valid.bool()[which]  # (rows, width)
        bias = torch.full((len(slots), st.bias.shape[-1]), float("-inf"), dtype=st.bias.dtype, device=device)
        bias[:, col - width:col].masked_fill_(row_valid, 0.0)
        st.bias[index] = bias[:, None, None, :].expand(-1, st.bias.shape[1], 1, -1)
        lengths = row_valid.sum(dim=1)
        st.pos[index] = lengths  # positions restart: the first token sits at the prompt length
        st.start[index] = col - lengths
        offset = steps - 1  # the first token takes the output column the previous step wrote
        # index_fill_, not `out[index, offset:] = scalar`: that form copies the scalar to the device
        # with a blocking copy, and the host would wait for every step queued since the last check
        st.out_tokens[:, offset:].index_fill_(0, index, e.pad_id)
        st.out_logp[:, offset:].index_fill_(0, index, 0.0)
        end_at = None if self.end_at is None else [offset + self.end_at[r] for r in take]
        if end_at is not None:  # forced lengths as output columns
            st.end_at[index] = host_to_device(end_at, device)
        for slot, row in zip(slots, take):
            st.order[slot], st.offset[slot] = row, offset
        self._first_tokens(st, index, logits[which], offset, end_at)
        return queue, slots

    def _first_tokens(self, st: DecodeState, index: torch.Tensor, logits: torch.Tensor, offset: int,
                      end_at: list[int] | None) -> None:
        """Sample each new row's first token from its prefill logits into output column `offset`."""
        if end_at is not None:  # a completion of length 1 ends right here
            force_token(logits, host_to_device(end_at, logits.device) <= offset + 1, st.force_id)
        token, logp = sample_tokens(logits, self.params)
        st.out_tokens[index, offset] = token
        st.out_logp[index, offset] = logp
        st.finished[index] = (token[:, None] == st.stop_ids[None, :]).any(dim=1)
        st.tokens[index] = token


def generate_with_refill(engine, prompt_ids: list[list[int]], group: int, params: SamplingParams,
                         end_at: list[int] | None) -> tuple[list[list[int]], list[list[float]], dict]:
    """Every request row's output tokens and log-probs (up to max_new_tokens, before cutting at
    EOS), decoded `engine.config.refill_rows` rows at a time; and the runs' counts: `drain_steps`
    (steps after the last refill, while the longest rows finish), `prefill_s` (host seconds launching
    the newcomers' prefill, part of check_s), `row_steps`
    (rows stepped, summed over steps: useful tokens / row_steps is the occupancy), `check_s`
    (host seconds of the checks' work: collection, the newcomers' prefill, compaction) and `wait_s`
    (host seconds waiting for the finished flags: large when the GPU is the bottleneck)."""
    queue = list(range(len(prompt_ids) * group))
    outputs = RefillOutputs(len(queue), params.max_new_tokens, engine.model.lm_head.weight.device)
    stats = dict.fromkeys(("runs", *RefillRun.COUNTS), 0)
    while queue:
        run = RefillRun(engine, prompt_ids, group, params, end_at, engine.config.refill_rows, outputs)
        queue = run.run(queue)
        stats["runs"] += 1
        for key in RefillRun.COUNTS:
            stats[key] += getattr(run, key)
    for key in RefillRun.COUNTS:
        if key.endswith("_s"):
            stats[key] = round(stats[key], 4)
    return (*outputs.lists(engine.eos_ids), stats)
