"""Refill: a generate call that asks for more rows than `FastEngineConfig.refill_rows` decodes them
in a fixed set of rows, and a prompt group whose G rows have all finished hands its rows to the
next waiting prompt, prefilled into them mid-generation. Finished rows then cost nothing for long:
the batch stays full while prompts wait, where compaction alone can only shrink it.

Rows are taken in lanes of G (one prompt's samples, prefilled once). Every row shares the cache
column the next step writes (`DecodeState.col`), so a newcomer's prompt is written right before
it, into columns its lane's previous occupant no longer reads; `start` (Triton) and the mask bias
(torch) make its rows see only its own columns, and its positions restart at 0. Its outputs begin
at the current output column (`DecodeState.offset`). The cache holds HORIZON x max_new_tokens
output columns (plus one check interval of slack): a lane takes a newcomer only while the whole
of a new completion still fits; then the run drains (with compaction) and the next run starts
with the prompts still waiting.

Row caps: a newcomer's completion may end past the shared step count, so the cap of
max_new_tokens is enforced per lane at the host checks, and its outputs are cut at the cap.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from rlvr.rollout.base import SamplingParams
from rlvr.rollout.fast_forward import prefill_forward
from rlvr.rollout.fast_state import DecodeState
from rlvr.rollout.sampler import force_token, sample_tokens
from rlvr.rollout.tokens import left_pad

HORIZON = 3
"""Output columns of a run, in max_new_tokens: the first completions plus room for newcomers."""


class RefillRun:
    """One run of `lanes` lanes of G rows over a queue of waiting prompts (indices into
    `prompt_ids`); collects each request row's (tokens, log-probs) as its lane finishes."""

    def __init__(self, engine, prompt_ids: list[list[int]], group: int, params: SamplingParams,
                 end_at: list[int] | None, lanes: int):
        self.engine, self.prompt_ids, self.group, self.params = engine, prompt_ids, group, params
        self.end_at = end_at
        self.lanes = lanes
        self.outputs: dict[int, tuple[list[int], list[float]]] = {}  # request row -> its outputs
        self.refills = 0
        self.steps = 0

    def run(self, queue: list[int]) -> list[int]:
        """Decode until every lane is done; returns the prompts still waiting (none fitted)."""
        e, g, params = self.engine, self.group, self.params
        width = max(len(self.prompt_ids[i]) for i in queue)  # every waiting prompt fits before the first column
        self.horizon = HORIZON * params.max_new_tokens + e.config.check_every
        device = e.model.lm_head.weight.device
        st = e._state(self.lanes * g, width, replace(params, max_new_tokens=self.horizon), device,
                      self.end_at is not None)
        first, queue = queue[: self.lanes], queue[self.lanes:]
        st.reset_order()
        self._prefill_first(st, first, width)
        steps, batch, refilling = 1, st, True
        while True:
            if steps % e.config.check_every == 0 or steps >= self.horizon:
                finished = st.finished.tolist()  # host sync, once per check
                self._collect_done(st, finished, steps)
                refilling = refilling and bool(queue) and steps + params.max_new_tokens + e.config.check_every \
                    <= self.horizon
                if refilling:
                    queue = self._refill(st, queue, steps)
                    finished = st.finished.tolist()
                    batch = st
                else:
                    batch = self._compacted(st, batch, finished, steps)
                if batch is None or steps >= self.horizon:
                    break
            e._replay(st, batch, params)
            steps += 1
        self._collect_done(st, st.finished.tolist(), steps, final=True)
        self.steps += steps
        return queue

    # -- lanes

    def _request_rows(self, prompt: int) -> list[int]:
        return list(range(prompt * self.group, (prompt + 1) * self.group))

    def _capped(self, st: DecodeState, slot: int, steps: int) -> bool:
        return steps - st.offset[slot] >= self.params.max_new_tokens

    def _collect_done(self, st: DecodeState, finished: list[bool], steps: int, final: bool = False) -> None:
        """Copy out the outputs of every occupied slot whose row is finished or capped (every one
        when `final`), and mark the slot empty (order -1). A lane is free when all its slots are."""
        done = [s for s in range(st.n) if st.order[s] >= 0 and (final or finished[s] or self._capped(st, s, steps))]
        if not done:
            return
        index = torch.tensor(done, device=st.out_tokens.device)
        tokens, logps = st.out_tokens[index].tolist(), st.out_logp[index].tolist()
        cap = self.params.max_new_tokens
        for slot, row_tokens, row_logp in zip(done, tokens, logps):
            o = st.offset[slot]
            self.outputs[st.order[slot]] = (row_tokens[o:o + cap], row_logp[o:o + cap])
            st.order[slot] = -1

    def _compacted(self, st: DecodeState, batch: DecodeState, finished: list[bool], steps: int):
        """The draining batch: None when no lane is left; else the rows still running, compacted
        (as the engine's own check does) when they fit half the batch."""
        alive = [s for s in range(batch.n) if st.order[s] >= 0 and not finished[s] and not self._capped(st, s, steps)]
        if not alive:
            return None
        if not self.engine.config.compact:
            return batch
        rows = min(batch.n, max(self.engine.config.compact_min_rows, 1 << (len(alive) - 1).bit_length()))
        if rows * 2 > batch.n:
            return batch
        return st.compact(alive, rows, cols=st.width + steps - 1)

    # -- prefill

    def _prefill_first(self, st: DecodeState, prompts: list[int], width: int) -> None:
        """The first prompts into lanes 0.. (left-padded to `width`, so later prompts fit too);
        lanes left without a prompt are empty from the start."""
        e = self.engine
        ids, valid = _left_pad_to([self.prompt_ids[i] for i in prompts], width, e.pad_id, st.tokens.device)
        rows = len(prompts) * self.group
        end_at = self._end_at(prompts, offset=0)
        first_logits = e._prefill_into(st.view(rows) if rows < st.n else st, ids, valid.bool(), self.group, end_at)
        # _prefill_into set the shared scalars; rows past `rows` (no prompt) stay finished and empty
        st.width = width
        st.order = [r for p in prompts for r in self._request_rows(p)] + [-1] * (st.n - rows)
        st.offset = [0] * st.n
        if rows < st.n:  # a state reused from an earlier call: clear what the empty rows hold
            st.finished[rows:] = True
            st.start[rows:] = width  # nothing to read: only the columns they write themselves
            st.bias[rows:] = float("-inf")
            st.out_tokens[rows:] = e.pad_id
            st.out_logp[rows:] = 0.0
        self._first_tokens(st, torch.arange(rows, device=st.tokens.device), first_logits, 0, end_at)

    def _refill(self, st: DecodeState, queue: list[int], steps: int) -> list[int]:
        """Prefill waiting prompts into the empty lanes, before the column the next step writes."""
        g = self.group
        free = [lane for lane in range(self.lanes) if all(st.order[s] < 0 for s in range(lane * g, (lane + 1) * g))]
        take, queue = queue[: len(free)], queue[len(free):]
        if not take:
            return queue
        e = self.engine
        device = st.tokens.device
        col = st.width + steps - 1  # the column the next step writes
        ids, valid = left_pad([self.prompt_ids[i] for i in take], e.pad_id, device)
        width = ids.shape[1]
        logits, keys, values = prefill_forward(e.parts, ids, valid.bool())
        slots = [s for lane in free[: len(take)] for s in range(lane * g, (lane + 1) * g)]
        index = torch.tensor(slots, device=device)
        for cache, new in zip(st.k + st.v, keys + values):
            cache[index, :, col - width:col] = new.repeat_interleave(g, dim=0)
        row_valid = valid.bool().repeat_interleave(g, dim=0)  # (rows, width)
        bias = torch.full((len(slots), st.bias.shape[-1]), float("-inf"), dtype=st.bias.dtype, device=device)
        bias[:, col - width:col].masked_fill_(row_valid, 0.0)
        st.bias[index] = bias[:, None, None, :].expand(-1, st.bias.shape[1], 1, -1)
        lengths = row_valid.sum(dim=1)
        st.pos[index] = lengths  # positions restart: the first token sits at the prompt length
        st.start[index] = col - lengths
        offset = steps - 1  # the first token takes the output column the previous step wrote
        st.out_tokens[index, offset:] = e.pad_id
        st.out_logp[index, offset:] = 0.0
        end_at = self._end_at(take, offset)
        if end_at is not None:
            st.end_at[index] = torch.tensor(end_at, device=device)
        for slot, row in zip(slots, [r for p in take for r in self._request_rows(p)]):
            st.order[slot], st.offset[slot] = row, offset
        self._first_tokens(st, index, logits.repeat_interleave(g, dim=0), offset, end_at)
        self.refills += len(take)
        return queue

    def _first_tokens(self, st: DecodeState, index: torch.Tensor, logits: torch.Tensor, offset: int,
                      end_at: list[int] | None) -> None:
        """Sample each new row's first token from its prefill logits into output column `offset`."""
        if end_at is not None:  # a completion of length 1 ends right here
            force_token(logits, torch.tensor(end_at, device=logits.device) <= offset + 1, st.force_id)
        token, logp = sample_tokens(logits, self.params)
        st.out_tokens[index, offset] = token
        st.out_logp[index, offset] = logp
        st.finished[index] = (token[:, None] == st.stop_ids[None, :]).any(dim=1)
        st.tokens[index] = token

    def _end_at(self, prompts: list[int], offset: int) -> list[int] | None:
        """Forced lengths of these prompts' rows, as output columns (`offset` + length)."""
        if self.end_at is None:
            return None
        return [offset + self.end_at[r] for p in prompts for r in self._request_rows(p)]


def _left_pad_to(seqs: list[list[int]], width: int, pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """`left_pad`, widened to `width` columns."""
    ids, valid = left_pad(seqs, pad_id, device)
    extra = width - ids.shape[1]
    if extra > 0:
        ids = torch.cat([torch.full((ids.shape[0], extra), pad_id, dtype=ids.dtype, device=device), ids], dim=1)
        valid = torch.cat([torch.zeros((valid.shape[0], extra), dtype=valid.dtype, device=device), valid], dim=1)
    return ids, valid


def generate_with_refill(engine, prompt_ids: list[list[int]], group: int, params: SamplingParams,
                         end_at: list[int] | None) -> tuple[list[list[int]], list[list[float]], dict]:
    """Every request row's output tokens and log-probs (up to max_new_tokens, before cutting at
    EOS), decoded `engine.config.refill_rows` rows at a time; and the run's counts."""
    lanes = max(1, engine.config.refill_rows // group)
    queue = list(range(len(prompt_ids)))
    outputs: dict[int, tuple[list[int], list[float]]] = {}
    stats = {"runs": 0, "refills": 0, "steps": 0}
    while queue:
        run = RefillRun(engine, prompt_ids, group, params, end_at, lanes)
        queue = run.run(queue)
        outputs.update(run.outputs)
        stats["runs"] += 1
        stats["refills"] += run.refills
        stats["steps"] += run.steps
    rows = range(len(prompt_ids) * group)
    return [outputs[r][0] for r in rows], [outputs[r][1] for r in rows], stats
