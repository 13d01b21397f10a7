"""Fast rollout engine for CUDA: static KV cache, the decode step captured in a CUDA graph,
each prompt prefilled once and shared by its G samples.

Why not transformers `generate`: even with a static cache and torch.compile it spends most of
each step in host-side work (logits processors, stopping criteria, cache bookkeeping) and syncs;
here the whole decode step -- embedding, every layer, lm_head, sampling, EOS bookkeeping and the
write of the sampled token and its log-prob -- is one graph replay with no host sync. The host
checks "every sequence finished?" once every `check_every` steps.

The model math is in rlvr.rollout.fast_forward (torch ops) and rlvr.rollout.fast_kernels (Triton);
sampling in rlvr.rollout.sampler; the static tensors of a step in rlvr.rollout.fast_state. A
per-sequence additive bias (N, kv, 1, S) masks padding and unwritten cache columns. The weights
are used in place (the graph reads the parameters' storage), so optimizer steps are seen by the
next rollout without a copy. One exception, on by default with the Triton kernels: q/k/v and
gate/up run as one GEMM each on stacked copies of their weights, refreshed from the parameters at
the start of every generate (`FastEngineConfig.stack_projections`).

Supported: decoder-only models with the Llama/Qwen2/Qwen3 layout (model.model.layers[i].self_attn
.{q,k,v,o}_proj, RMSNorms, rotary_emb); no sliding-window attention.

Sampling: temperature, top-k, top-p (top-p sorts the vocabulary every step: slower), greedy at
temperature 0. The log-prob returned for each token is log softmax(logits / temperature) -- the
distribution before top-k/top-p truncation, which is what a training forward pass recomputes.
Shapes: B prompts, G samples each, N = B*G sequences, P prompt width, S cache length, V vocab.
"""
from __future__ import annotations

import warnings

import torch

from rlvr.rollout.base import Rollout, SamplingParams, eval_mode
from rlvr.rollout.engine_config import FastEngineConfig
from rlvr.rollout.fast_refill import generate_with_refill
from rlvr.rollout.fast_forward import (ModelParts, decode_forward, decode_forward_fused, decode_forward_fused_gemm,
                                       fits_fused_kernels, fits_gemm_kernels, prefill_forward, prefill_forward_fused,
                                       supports)
from rlvr.rollout.fast_split_kv import attention_splits, device_sm_count
from rlvr.rollout.fast_stacked import StackedProjections
from rlvr.rollout.fast_state import DecodeState
from rlvr.rollout.sampler import force_token, sample_tokens
from rlvr.rollout.tokens import cut_completion, eos_token_ids, left_pad, pad_token_id

__all__ = ["FastEngine", "FastEngineConfig", "supports"]


class FastEngine:
    """`RolloutEngine` with a CUDA-graph decode step (see the module doc)."""

    def __init__(self, model, tokenizer, config: FastEngineConfig | None = None):
        model = getattr(model, "module", model)  # DDP / accelerate wrapper
        if hasattr(model, "get_base_model"):  # peft: its LoRA layers stay in the modules we call
            model = model.get_base_model()
        self.model = model
        self.tokenizer = tokenizer
        self.config = config or FastEngineConfig()
        self.parts = ModelParts.of(model)
        self.eos_ids = eos_token_ids(model, tokenizer)
        self.pad_id = pad_token_id(tokenizer, self.eos_ids)
        self._states: dict[tuple, DecodeState] = {}
        self.last_refill: dict | None = None  # the last refilled generate's counts (runs, refills, steps)
        device = model.lm_head.weight.device
        kernels = self.config.kernels
        if kernels == "auto":
            kernels = "triton" if device.type == "cuda" and fits_fused_kernels(model, self.parts) else "torch"
        elif kernels == "triton" and not (device.type == "cuda" and fits_fused_kernels(model, self.parts)):
            raise ValueError("fast engine kernels='triton' needs CUDA, triton and a SiLU/RMSNorm model "
                             "with a power-of-two head dim; use kernels='torch'")
        self.fused = kernels == "triton"
        self.fused_gemms = self.fused and self.config.fuse_gemms and fits_gemm_kernels(self.parts)
        self.stacked = None if self.fused_gemms else self._stacked_projections()
        self.sm_count = device_sm_count(device)
        self._set_forward()

    def _stacked_projections(self) -> StackedProjections | None:
        """The stacked q/k/v and gate/up weights when the per-op Triton path can use them."""
        fits = self.fused and self.config.stack_projections and StackedProjections.fits(self.parts)
        return StackedProjections(self.parts) if fits else None

    def _attention_splits(self, n: int, length: int) -> int:
        """Column splits of the Triton decode attention over a batch of n rows and a cache of
        `length` columns: a compacted batch (fewer rows, same cache) gets its own, usually more."""
        if not self.config.split_kv:
            return 1
        return attention_splits(n, self.parts.kv_heads, length, self.sm_count)

    def _set_forward(self) -> None:
        forward = (decode_forward_fused_gemm if self.fused_gemms else
                   decode_forward_fused if self.fused else decode_forward)
        self._forward = torch.compile(forward, fullgraph=True, dynamic=False) if self.config.compile else forward

    def prefill(self, ids: torch.Tensor, valid: torch.Tensor):
        """Left-padded prompts' forward (`prefill_forward`): on the Triton kernels when the decode
        step runs them."""
        if self.fused:
            return prefill_forward_fused(self.parts, ids, valid, self.stacked)
        return prefill_forward(self.parts, ids, valid)

    @torch.no_grad()
    def generate(self, prompt_ids: list[list[int]], group_size: int, params: SamplingParams,
                 end_at: list[int] | None = None) -> Rollout:
        """`end_at`, optional: per sequence (N = B*G), the completion length at which EOS is forced
        (its logit set far above the rest): variable-length workloads on random-weight models."""
        _check_request(prompt_ids, group_size, params)
        self._check_end_at(end_at, len(prompt_ids) * group_size)
        if params.seed is not None:
            torch.manual_seed(params.seed)
        with eval_mode(self.model):  # the trainer leaves its policy in train mode
            return self._generate(prompt_ids, group_size, params, end_at)

    def _generate(self, prompt_ids: list[list[int]], group_size: int, params: SamplingParams,
                  end_at: list[int] | None) -> Rollout:
        if self.stacked is not None:
            self.stacked.refresh()  # before capture too: warm-up runs read the copies
        if self.config.refill_rows and len(prompt_ids) * group_size > self.config.refill_rows:
            tokens, logps, self.last_refill = generate_with_refill(self, prompt_ids, group_size, params, end_at)
            return self._rollout(prompt_ids, tokens, logps, params)
        device = self.model.lm_head.weight.device
        ids, valid = left_pad(prompt_ids, self.pad_id, device)  # (B, P)
        valid = valid.bool()
        st = self._state(len(prompt_ids) * group_size, ids.shape[1], params, device, end_at is not None)
        first_logits = self._prefill_into(st, ids, valid, group_size, end_at)
        steps = self._decode(st, first_logits, params)
        return self._rollout(prompt_ids, *self._outputs(st, steps), params)

    def _check_end_at(self, end_at: list[int] | None, n: int) -> None:
        if end_at is None:
            return
        if len(end_at) != n or min(end_at) < 1:
            raise ValueError(f"end_at needs one length >= 1 per sequence ({n}), got {len(end_at)} values")
        if not self.eos_ids:
            raise ValueError("end_at forces EOS, but the model and tokenizer define no EOS token")

    # -- setup

    def _state(self, n: int, width: int, params: SamplingParams, device, forced: bool) -> DecodeState:
        bucket = self.config.length_bucket
        length = -(-(width + params.max_new_tokens - 1) // bucket) * bucket
        key = (n, length, params.max_new_tokens, params.temperature, params.top_k, params.top_p, str(device), forced)
        st = self._states.pop(key, None)  # re-inserted last: the dict is in least-recently-used order
        if st is None:
            while len(self._states) >= self.config.max_graphs:
                self._states.pop(next(iter(self._states)))
            st = DecodeState(self.parts, n, length, params.max_new_tokens, self.model.lm_head.weight.dtype,
                             device, self.eos_ids, self.pad_id, forced)
        self._states[key] = st
        return st

    def _step(self, st: DecodeState, params: SamplingParams) -> None:
        """Decode one token for every sequence; every input and output is a static tensor of `st`."""
        if self.fused:
            stacked = {} if self.fused_gemms else {"stacked": self.stacked}
            splits = self._attention_splits(st.n, st.length)  # a launch shape, fixed in the graph
            logits = self._forward(self.parts, st.tokens, st.pos, st.col, st.start, st.k, st.v,
                                   attn_splits=splits, **stacked)
            self._force_end(st, logits, st.step)
            if not (params.top_k or params.top_p < 1.0):  # the fused sampler also records the step
                from rlvr.rollout.fast_kernels import sample_

                sample_(logits, params.temperature, st.seed, record=st)
                st.counters += 1
                return
            token, logp = sample_tokens(logits.float(), params)
        else:
            logits = self._forward(self.parts, st.tokens, st.pos, st.col, st.bias, st.k, st.v)
            self._force_end(st, logits, st.step)
            token, logp = sample_tokens(logits, params)
        token = torch.where(st.finished, self.pad_id, token)
        logp = torch.where(st.finished, 0.0, logp)
        st.out_tokens.index_copy_(1, st.step, token[:, None])
        st.out_logp.index_copy_(1, st.step, logp[:, None])
        st.finished |= (token[:, None] == st.stop_ids[None, :]).any(dim=1)
        st.tokens.copy_(token)
        st.pos += 1
        st.counters += 1

    @staticmethod
    def _force_end(st: DecodeState, logits: torch.Tensor, column) -> None:
        """With `end_at`: rows whose completion reaches its length at output `column` get EOS."""
        if st.forced:
            force_token(logits, st.end_at <= column + 1, st.force_id)

    def _capture_or_fall_back(self, st: DecodeState, batch: DecodeState,
                              params: SamplingParams) -> torch.cuda.CUDAGraph:
        """Capture the step over `batch` (`st` or a prefix of it); if a Triton build fails (an
        untested GPU/toolchain), step down: fused GEMMs -> per-op triton kernels -> torch ops, with
        a warning each time, and drop the graphs captured with the old kernels."""
        while True:
            try:
                st.graphs[batch.n] = self._capture(st, batch, params)
                return st.graphs[batch.n]
            except Exception as e:
                if not self.fused:
                    raise
                level = "fused GEMM" if self.fused_gemms else "fused Triton"
                fallback = "the per-op triton kernels" if self.fused_gemms else "kernels='torch'"
                warnings.warn(f"fast engine: the {level} decode kernels failed ({type(e).__name__}: {e}); "
                              f"falling back to {fallback}")
                self.fused, self.fused_gemms = self.fused_gemms, False
                self.stacked = self._stacked_projections()
                self._set_forward()
                for other in (st, *self._states.values()):
                    other.graphs.clear()  # they may read the old stacked copies, no longer refreshed
                if not self.fused:
                    st.rebuild_bias()  # decoded columns so far were never opened in the torch mask
                torch.cuda.synchronize()

    def _capture(self, st: DecodeState, batch: DecodeState, params: SamplingParams) -> torch.cuda.CUDAGraph:
        """Warm up on a side stream (cuBLAS handles, compilation), then capture. Mid-generation:
        what the warm-up steps write is put back, except the cache column, which the next real
        step rewrites."""
        saved = st.snapshot()
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    st.restore(saved)
                    self._step(batch, params)
            torch.cuda.current_stream().wait_stream(side)
            st.restore(saved)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._step(batch, params)
            return graph
        finally:
            st.restore(saved)

    # -- generation

    def _prefill_into(self, st: DecodeState, ids, valid, group_size: int, end_at: list[int] | None) -> torch.Tensor:
        """Prefill each prompt once, copy its K/V into its G cache rows; first-token logits (N, V)."""
        width = ids.shape[1]
        logits, keys, values = self.prefill(ids, valid)
        for cache, new in zip(st.k + st.v, keys + values):
            cache[:, :, :width].copy_(new.repeat_interleave(group_size, dim=0))
        row_valid = valid.repeat_interleave(group_size, dim=0)  # (N, P)
        st.bias.fill_(float("-inf"))
        st.bias[:, :, 0, :width].masked_fill_(row_valid[:, None, :], 0.0)
        st.pos.copy_(row_valid.sum(dim=1))  # next position = prompt length
        st.start.copy_(width - st.pos)  # left padding: the prompt starts after width - length pads
        # the fused sampler's seed comes from torch's generator, so params.seed reproduces a rollout
        st.seed.copy_(torch.randint(0, 2**31 - 1, (1,)))
        st.col.fill_(width)
        st.step.fill_(1)  # column 0 is the token sampled from the prefill logits
        st.finished.zero_()
        st.out_tokens.fill_(self.pad_id)
        st.out_logp.zero_()
        st.width = width
        st.reset_order()
        if end_at is not None:
            st.end_at.copy_(torch.tensor(end_at))
        return logits.repeat_interleave(group_size, dim=0)

    def _decode(self, st: DecodeState, first_logits: torch.Tensor, params: SamplingParams) -> int:
        """Sample the first token from the prefill, then decode; returns the output columns used."""
        self._force_end(st, first_logits, 0)
        token, logp = sample_tokens(first_logits, params)
        st.out_tokens[:, 0] = token
        st.out_logp[:, 0] = logp
        st.finished.copy_((token[:, None] == st.stop_ids[None, :]).any(dim=1))
        st.tokens.copy_(token)
        steps, batch = 1, st  # batch: the rows stepped, all of st or a prefix after compaction
        while steps < params.max_new_tokens:
            if steps % self.config.check_every == 0:
                batch = self._check(st, batch, steps)  # host sync
                if batch is None:
                    break
            self._replay(st, batch, params)
            steps += 1
        return steps

    def _check(self, st: DecodeState, batch: DecodeState, steps: int) -> DecodeState | None:
        """None when every row has finished; else the rows to step next (compacted when they fit
        a batch of half the size or less)."""
        if not self.config.compact:
            return None if bool(batch.finished.all()) else batch
        alive = [i for i, done in enumerate(batch.finished.tolist()) if not done]
        return self._compacted(st, batch, alive, steps) if alive else None

    def _compacted(self, st: DecodeState, batch: DecodeState, alive: list[int], steps: int) -> DecodeState:
        """`batch`, or its running slots `alive` moved to the front of `st` when they fit a batch of
        half the size or less (powers of two, at least compact_min_rows)."""
        rows = min(batch.n, max(self.config.compact_min_rows, 1 << (len(alive) - 1).bit_length()))
        if rows * 2 > batch.n:
            return batch
        return st.compact(alive, rows, cols=st.width + steps - 1)

    def _replay(self, st: DecodeState, batch: DecodeState, params: SamplingParams) -> None:
        """One decode step over `batch`: its graph (captured on first use) on CUDA, eager otherwise."""
        graph = st.graphs.get(batch.n)
        if graph is None and st.tokens.is_cuda and self.config.cuda_graph:
            graph = self._capture_or_fall_back(st, batch, params)
        if graph is not None:
            graph.replay()
        else:
            self._step(batch, params)

    @staticmethod
    def _outputs(st: DecodeState, steps: int) -> tuple[list, list]:
        """Output tokens and log-probs per original row (one host copy per batch; compaction moved
        rows: slot i holds row st.order[i])."""
        tokens, logps = [None] * st.n, [None] * st.n
        for row, row_tokens, row_logp in zip(st.order, st.out_tokens[:, :steps].tolist(),
                                             st.out_logp[:, :steps].tolist()):
            tokens[row], logps[row] = row_tokens, row_logp
        return tokens, logps

    def _rollout(self, prompt_ids, tokens: list, logps: list, params) -> Rollout:
        completions, texts, truncated, logprobs = [], [], [], []
        for row, row_logp in zip(tokens, logps):
            ids, ended = cut_completion(row, self.eos_ids, self.tokenizer, params.stop)
            completions.append(ids)
            logprobs.append(row_logp[: len(ids)])
            texts.append(self.tokenizer.decode(ids, skip_special_tokens=True))
            truncated.append(not ended and len(ids) >= params.max_new_tokens)
        return Rollout(prompt_ids=[list(p) for p in prompt_ids], completion_ids=completions, texts=texts,
                       truncated=truncated, logprobs=logprobs)


def _check_request(prompt_ids, group_size: int, params: SamplingParams) -> None:
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if not prompt_ids or any(len(p) == 0 for p in prompt_ids):
        raise ValueError("generate needs at least one prompt and no empty prompt")
    if params.max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {params.max_new_tokens}")
    if params.temperature < 0 or not 0 < params.top_p <= 1 or params.top_k < 0:
        raise ValueError(f"invalid sampling params: temperature={params.temperature}, "
                         f"top_p={params.top_p}, top_k={params.top_k}")
