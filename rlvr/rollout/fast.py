"""Fast rollout engine for CUDA: static KV cache, the decode step captured in a CUDA graph,
each prompt prefilled once and shared by its G samples.

Why not transformers `generate`: even with a static cache and torch.compile it spends most of
each step in host-side work (logits processors, stopping criteria, cache bookkeeping) and syncs;
here the whole decode step -- embedding, every layer, lm_head, sampling, EOS bookkeeping and the
write of the sampled token and its log-prob -- is one graph replay with no host sync. The host
checks "every sequence finished?" once every `check_every` steps.

How: the engine runs the model's own modules (embed_tokens, per layer input_layernorm, q/k/v/o
projections, RoPE from the model's rotary_emb, post_attention_layernorm, mlp; norm, lm_head) on a
preallocated cache of shape (N, kv_heads, S, D) per layer. Prompts are left-padded to P, so every
sequence writes column P + s at step s; a per-sequence additive bias (N, kv, 1, S) masks padding
and unwritten columns. The weights are used in place (the graph reads the parameters' storage),
so optimizer steps are seen by the next rollout without a copy; LoRA layers (peft) work as is.
One exception, on by default with the Triton kernels: q/k/v and gate/up run as one GEMM each on
stacked copies of their weights, refreshed from the parameters at the start of every generate
(`FastEngineConfig.stack_projections`).

Supported: decoder-only models with the Llama/Qwen2/Qwen3 layout (model.model.layers[i].self_attn
.{q,k,v,o}_proj, RMSNorms, rotary_emb); no sliding-window attention.

Sampling: temperature, top-k, top-p (top-p sorts the vocabulary every step: slower), greedy at
temperature 0. The log-prob returned for each token is log softmax(logits / temperature) -- the
distribution before top-k/top-p truncation, which is what a training forward pass recomputes.
Shapes: B prompts, G samples each, N = B*G sequences, P prompt width, S cache length, V vocab.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rlvr.rollout.base import Rollout, SamplingParams
from rlvr.rollout.tokens import cut_completion, eos_token_ids, left_pad, pad_token_id


@dataclass
class FastEngineConfig:
    cuda_graph: bool = True
    """Capture the decode step in a CUDA graph (CUDA only; on the CPU the step runs eagerly)."""
    compile: bool = False
    """torch.compile the model part of the decode step before capture: fuses norms, RoPE and
    elementwise work into fewer kernels; costs one compile per (N, S) shape."""
    length_bucket: int = 64
    """The cache length S is rounded up to a multiple of this, so graphs are reused across
    batches whose prompt widths differ (tokens)."""
    check_every: int = 16
    """Decode steps between host checks for "every sequence finished" (each is a sync)."""
    max_graphs: int = 4
    """Captured graphs kept (each holds its KV cache); the oldest is dropped beyond this."""
    kernels: str = "auto"
    """Decode-step implementation: `triton` (fused kernels of rlvr.rollout.fast_kernels: one
    kernel each for add+RMSNorm, RoPE+cache write, attention, SiLU*up, sampling), `torch`
    (torch ops only), or `auto` (triton on CUDA when triton imports and the model fits: SiLU MLP,
    RMSNorm, power-of-two head dim, no q/k norm)."""
    fuse_gemms: bool = False
    """With triton kernels: also fuse residual add + RMSNorm + the q/k/v projections + RoPE +
    cache write into one Triton GEMM kernel, and add + RMSNorm + gate/up + SiLU*up into another (5
    launches per layer instead of 12). Off by default: these GEMMs are slower than cuBLAS's by
    more than the saved launches gain (BENCHMARKS.md). Used when the projections are plain
    nn.Linear (not LoRA), the MLP has no bias and the head dim is >= 32; otherwise the per-op
    triton kernels run."""

    stack_projections: bool = True
    """With triton kernels: run q/k/v as one GEMM and gate/up as one, on stacked copies of those
    weights refreshed at the start of every generate (fewer launches per decode step, for the
    memory of the copies: about 2/3 of the non-embedding weights; BENCHMARKS.md). Off: the
    model's own modules, no copy. Skipped for LoRA projections."""

    def __post_init__(self) -> None:
        if self.kernels not in ("auto", "triton", "torch"):
            raise ValueError(f"kernels must be auto, triton or torch, got {self.kernels!r}")
        if self.length_bucket < 1 or self.check_every < 1 or self.max_graphs < 1:
            raise ValueError("length_bucket, check_every and max_graphs must be >= 1")


@dataclass
class _Parts:
    """The model's modules the engine calls, and its attention geometry."""

    embed: torch.nn.Module
    layers: list
    norm: torch.nn.Module
    lm_head: torch.nn.Module
    rotary: torch.nn.Module
    heads: int
    kv_heads: int
    head_dim: int
    scaling: float

    @classmethod
    def of(cls, model) -> "_Parts":
        inner = getattr(model, "model", None)
        needed = ("embed_tokens", "layers", "norm", "rotary_emb")
        if inner is None or not all(hasattr(inner, n) for n in needed) or not hasattr(model, "lm_head"):
            raise ValueError(f"fast engine: {type(model).__name__} is not a Llama/Qwen2-style causal LM "
                             "(needs model.model.{embed_tokens,layers,norm,rotary_emb} and lm_head); use engine 'hf'")
        attn = inner.layers[0].self_attn
        for layer in inner.layers:
            if getattr(layer.self_attn, "sliding_window", None):
                raise ValueError("fast engine: sliding-window attention is not supported; use engine 'hf'")
        cfg = model.config
        head_dim = getattr(attn, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        return cls(embed=inner.embed_tokens, layers=list(inner.layers), norm=inner.norm,
                   lm_head=model.lm_head, rotary=inner.rotary_emb, heads=cfg.num_attention_heads,
                   kv_heads=cfg.num_key_value_heads, head_dim=head_dim,
                   scaling=getattr(attn, "scaling", head_dim ** -0.5))


def supports(model) -> bool:
    """Whether the fast engine can run `model` (a Llama/Qwen-layout causal LM, LoRA included)."""
    model = getattr(model, "module", model)
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    try:
        _Parts.of(model)
    except ValueError:
        return False
    return True


class _DecodeState:
    """Static tensors of one captured decode step (their addresses are baked into the graph)."""

    def __init__(self, parts: _Parts, n: int, length: int, max_new: int, dtype, device, stop_ids: list[int],
                 pad_id: int):
        shape = (n, parts.kv_heads, length, parts.head_dim)
        # zeros, not empty: masked columns get probability 0, and 0 * NaN garbage would be NaN
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in parts.layers]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in parts.layers]
        # additive attention mask (N, kv, 1, S) in the model dtype: 0 visible, -inf not (yet)
        self.bias = torch.full((n, parts.kv_heads, 1, length), float("-inf"), dtype=dtype, device=device)
        self.tokens = torch.zeros(n, dtype=torch.long, device=device)  # last sampled token
        self.pos = torch.zeros(n, dtype=torch.long, device=device)  # its position id
        # the step's scalars share one tensor: one launch advances them all
        self.counters = torch.zeros(3, dtype=torch.long, device=device)
        self.col = self.counters[0:1]  # the cache column of the last sampled token
        self.step = self.counters[1:2]  # output column
        self.seed = self.counters[2:3]  # the fused sampler's RNG seed, +1 per step
        self.finished = torch.zeros(n, dtype=torch.bool, device=device)
        self.out_tokens = torch.zeros(n, max_new, dtype=torch.long, device=device)
        self.out_logp = torch.zeros(n, max_new, dtype=torch.float32, device=device)
        self.stop_ids = torch.tensor(stop_ids, dtype=torch.long, device=device)
        self.pad_id = pad_id
        self.start = torch.zeros(n, dtype=torch.long, device=device)  # first non-padding column
        self.graph: torch.cuda.CUDAGraph | None = None


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + _rotate_half(x) * sin


def _qkv(parts: _Parts, layer, h: torch.Tensor, lead: tuple[int, ...]):
    """q (*lead, heads, D), k and v (*lead, kv_heads, D), q/k-normed where the model has it (Qwen3)."""
    attn = layer.self_attn
    q = attn.q_proj(h).view(*lead, parts.heads, parts.head_dim)
    k = attn.k_proj(h).view(*lead, parts.kv_heads, parts.head_dim)
    v = attn.v_proj(h).view(*lead, parts.kv_heads, parts.head_dim)
    if hasattr(attn, "q_norm"):
        q, k = attn.q_norm(q), attn.k_norm(k)
    return q, k, v


def decode_forward(parts: _Parts, tokens, pos, col, bias, k_cache: list, v_cache: list) -> torch.Tensor:
    """One token for each of N sequences -> logits (N, V) fp32; writes K/V at column `col`.

    Written for few kernels per layer (the step is launch-bound at these sizes): RoPE on q and k
    together, and attention as baddbmm (scale and mask bias in the GEMM) + softmax + bmm. The
    cache writes are index_put_ (`cache[..., col] = ...`), which torch.compile keeps in place.
    """
    n = tokens.shape[0]
    heads, kv, d = parts.heads, parts.kv_heads, parts.head_dim
    group = heads // kv
    length = bias.shape[-1]
    x = parts.embed(tokens)  # (N, H)
    cos, sin = parts.rotary(x, pos[:, None])  # (N, 1, D): broadcasts over heads
    bias.index_fill_(3, col, 0.0)  # the column written below becomes visible (a fill: no host copy)
    scores_bias = bias.view(n * kv, 1, length)  # (N*kv, 1, S): broadcasts over the group
    for i, layer in enumerate(parts.layers):
        q, k, v = _qkv(parts, layer, layer.input_layernorm(x), (n,))
        qk = _rope(torch.cat((q, k), dim=1), cos, sin)  # (N, heads + kv, D)
        k_cache[i][:, :, col] = qk[:, heads:].unsqueeze(2)
        v_cache[i][:, :, col] = v.unsqueeze(2)
        qg = qk[:, :heads].reshape(n * kv, group, d)  # GQA: a group of heads shares one K/V head
        keys = k_cache[i].view(n * kv, length, d)
        scores = torch.baddbmm(scores_bias, qg, keys.transpose(1, 2), alpha=parts.scaling)  # (N*kv, g, S)
        probs = scores.softmax(dim=-1)  # fp32 inside the kernel, stored in the model dtype
        out = torch.bmm(probs, v_cache[i].view(n * kv, length, d)).reshape(n, heads * d)
        x = x + layer.self_attn.o_proj(out)
        x = x + layer.mlp(layer.post_attention_layernorm(x))
    return parts.lm_head(parts.norm(x)).float()


class StackedProjections:
    """Per layer, copies of the q/k/v weights (and biases) stacked into one matrix and of gate/up
    into another, so each is one GEMM launch instead of three and two: the decode step is
    launch-bound. Being copies, they are refreshed (`refresh`, a few hundred microseconds) at the
    start of every generate, so optimizer steps are seen; they cost the memory of those weights
    (about 2/3 of a Qwen2/Llama model's non-embedding weights). Only for plain nn.Linear
    projections: a LoRA layer's adapter would be skipped (see `fits`)."""

    def __init__(self, parts: _Parts):
        self.parts = parts
        self.q_size, self.kv_size = parts.heads * parts.head_dim, parts.kv_heads * parts.head_dim
        # per layer [qkv weight, qkv bias (None without), gate/up weight]
        self.stacks = [[None if group is None else torch.cat(group).detach() for group in self._sources(layer)]
                       for layer in parts.layers]

    @staticmethod
    def _sources(layer) -> tuple:
        """The parameters each stack is made of (None: the model has no q/k/v bias)."""
        qkv = (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj)
        return ([m.weight for m in qkv], None if qkv[0].bias is None else [m.bias for m in qkv],
                [layer.mlp.gate_proj.weight, layer.mlp.up_proj.weight])

    @staticmethod
    def fits(parts: _Parts) -> bool:
        """Plain nn.Linear q/k/v/gate/up, q/k/v bias all or none, no gate/up bias."""
        for layer in parts.layers:
            attn, mlp = layer.self_attn, layer.mlp
            qkv = (attn.q_proj, attn.k_proj, attn.v_proj)
            if not all(type(m) is torch.nn.Linear for m in (*qkv, mlp.gate_proj, mlp.up_proj)):
                return False
            if len({m.bias is None for m in qkv}) != 1 or mlp.gate_proj.bias is not None or mlp.up_proj.bias is not None:
                return False
        return True

    @torch.no_grad()
    def refresh(self) -> None:
        for layer, stacks in zip(self.parts.layers, self.stacks):
            for group, stack in zip(self._sources(layer), stacks):
                if group is not None:
                    torch.cat(group, out=stack)

    def qkv(self, i: int, h: torch.Tensor):
        """q (N, heads*D), k, v (N, kv*D): column slices of one GEMM's output."""
        weight, bias, _ = self.stacks[i]
        return F.linear(h, weight, bias).split([self.q_size, self.kv_size, self.kv_size], dim=1)

    def gate_up(self, i: int, h: torch.Tensor):
        return F.linear(h, self.stacks[i][2]).chunk(2, dim=1)


def decode_forward_fused(parts: _Parts, tokens, pos, col, start, k_cache: list, v_cache: list,
                         stacked: StackedProjections | None = None) -> torch.Tensor:
    """`decode_forward` on the Triton kernels of rlvr.rollout.fast_kernels: about 9 launches per
    layer with `stacked` projections (12 without) instead of about 36. Returns logits (N, V) in
    the model dtype."""
    from rlvr.rollout import fast_kernels as K

    n = tokens.shape[0]
    x = parts.embed(tokens)  # (N, H): the residual stream, updated in place below
    cos, sin = parts.rotary(x, pos[:, None])  # (N, 1, D)
    cos, sin = cos.reshape(n, -1).contiguous(), sin.reshape(n, -1).contiguous()
    delta = None  # what the previous block adds to the residual stream
    for i, layer in enumerate(parts.layers):
        attn, mlp = layer.self_attn, layer.mlp
        h = K.add_rmsnorm_(x, delta, layer.input_layernorm.weight, layer.input_layernorm.variance_epsilon)
        q, k, v = stacked.qkv(i, h) if stacked else (attn.q_proj(h), attn.k_proj(h), attn.v_proj(h))
        q = K.rope_and_cache_(q, k, v, cos, sin, k_cache[i], v_cache[i], col)
        out = K.decode_attention(q, k_cache[i], v_cache[i], start, col, parts.scaling)
        norm = layer.post_attention_layernorm
        h = K.add_rmsnorm_(x, attn.o_proj(out), norm.weight, norm.variance_epsilon)
        gate, up = stacked.gate_up(i, h) if stacked else (mlp.gate_proj(h), mlp.up_proj(h))
        delta = mlp.down_proj(K.silu_mul(gate, up))
    return parts.lm_head(K.add_rmsnorm_(x, delta, parts.norm.weight, parts.norm.variance_epsilon))


def decode_forward_fused_gemm(parts: _Parts, tokens, pos, col, start, k_cache: list, v_cache: list) -> torch.Tensor:
    """`decode_forward_fused` with the norm-fused GEMM kernels: per layer one launch for add +
    norm + q/k/v + RoPE + cache write, attention, o_proj, one for add + norm + gate/up + SiLU*up,
    down_proj. The residual stream alternates between two buffers (a kernel's programs read the
    old stream while one of them writes the new one)."""
    from rlvr.rollout import fast_kernels as K

    n = tokens.shape[0]
    x = parts.embed(tokens)  # (N, H)
    spare = torch.empty_like(x)
    cos, sin = parts.rotary(x, pos[:, None])  # (N, 1, D)
    cos, sin = cos.reshape(n, -1).contiguous(), sin.reshape(n, -1).contiguous()
    delta = None  # what the previous block adds to the residual stream
    for i, layer in enumerate(parts.layers):
        attn, mlp, norm = layer.self_attn, layer.mlp, layer.input_layernorm
        q = K.norm_qkv_rope_cache_(x, delta, spare, norm.weight, norm.variance_epsilon, attn.q_proj, attn.k_proj,
                                   attn.v_proj, cos, sin, k_cache[i], v_cache[i], col)
        if delta is not None:
            x, spare = spare, x
        out = K.decode_attention(q, k_cache[i], v_cache[i], start, col, parts.scaling)
        norm = layer.post_attention_layernorm
        act = K.norm_gate_up_silu(x, attn.o_proj(out), spare, norm.weight, norm.variance_epsilon,
                                  mlp.gate_proj, mlp.up_proj)
        x, spare = spare, x
        delta = mlp.down_proj(act)
    return parts.lm_head(K.add_rmsnorm_(x, delta, parts.norm.weight, parts.norm.variance_epsilon))


def _fits_gemm_kernels(parts: _Parts) -> bool:
    """Whether `decode_forward_fused_gemm` reads this model's weights right: plain nn.Linear
    projections (a LoRA layer's adapter would be skipped), q/k/v bias all or none, no MLP bias,
    head dim >= 32 (each half of a head is a GEMM tile of at least 16 columns)."""
    plain_rest = all(type(m) is torch.nn.Linear for layer in parts.layers
                     for m in (layer.self_attn.o_proj, layer.mlp.down_proj))
    return StackedProjections.fits(parts) and plain_rest and parts.head_dim >= 32


def _fits_fused_kernels(model, parts: _Parts) -> bool:
    """Whether `decode_forward_fused` computes this model: SiLU MLP, RMSNorm (weight, eps), head
    dim a power of two >= 16, no q/k norm; and triton importable."""
    import importlib.util

    if importlib.util.find_spec("triton") is None:
        return False
    norms = [parts.norm] + [m for layer in parts.layers for m in (layer.input_layernorm, layer.post_attention_layernorm)]
    return (getattr(model.config, "hidden_act", None) == "silu"
            and all(hasattr(m, "weight") and hasattr(m, "variance_epsilon") for m in norms)
            and all(hasattr(layer.mlp, n) for layer in parts.layers for n in ("gate_proj", "up_proj", "down_proj"))
            and not any(hasattr(layer.self_attn, "q_norm") for layer in parts.layers)
            and parts.head_dim >= 16 and parts.head_dim & (parts.head_dim - 1) == 0)


def prefill_forward(parts: _Parts, ids: torch.Tensor, valid: torch.Tensor):
    """Left-padded prompts (B, P) -> last-position logits (B, V) fp32, and per layer K, V (B, kv, P, D)."""
    b, p = ids.shape
    group = parts.heads // parts.kv_heads
    pos = (valid.long().cumsum(1) - 1).clamp(min=0)
    x = parts.embed(ids)  # (B, P, H)
    cos, sin = parts.rotary(x, pos)  # (B, P, D)
    cos, sin = cos[:, None], sin[:, None]  # (B, 1, P, D): broadcasts over heads
    causal = torch.ones(p, p, dtype=torch.bool, device=ids.device).tril()
    # padding queries see only themselves (their outputs are never used; this avoids all -inf rows)
    allowed = causal & (valid[:, None, :] | torch.eye(p, dtype=torch.bool, device=ids.device))
    allowed = allowed[:, None]  # (B, 1, P, P)
    keys, values = [], []
    for layer in parts.layers:
        q, k, v = _qkv(parts, layer, layer.input_layernorm(x), (b, p))
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, heads, P, D)
        q, k = _rope(q, cos, sin), _rope(k, cos, sin)
        keys.append(k)
        values.append(v)
        out = F.scaled_dot_product_attention(
            q, k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1),
            attn_mask=allowed, scale=parts.scaling)
        x = x + layer.self_attn.o_proj(out.transpose(1, 2).reshape(b, p, -1))
        x = x + layer.mlp(layer.post_attention_layernorm(x))
    logits = parts.lm_head(parts.norm(x[:, -1])).float()  # left padding: the last column is real
    return logits, keys, values


def sample_tokens(logits: torch.Tensor, params: SamplingParams) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (N, V) fp32 -> token (N,) and its log-prob under softmax(logits / temperature) (N,).

    Sampling is the exponential race argmax(p / E), E ~ Exp(1) (equivalent to multinomial; it has
    no host sync, so it can live inside a CUDA graph).
    """
    if params.temperature == 0:
        token = logits.argmax(dim=-1)
        return token, logits.log_softmax(dim=-1).gather(1, token[:, None]).squeeze(1)
    scaled = logits / params.temperature
    logp_all = scaled.log_softmax(dim=-1)
    kept = _top_k_top_p(scaled, params.top_k, params.top_p)
    probs = kept.softmax(dim=-1)
    token = (probs / torch.empty_like(probs).exponential_()).argmax(dim=-1)
    return token, logp_all.gather(1, token[:, None]).squeeze(1)


def _top_k_top_p(scaled: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """scaled logits with everything outside the top-k and the top-p nucleus set to -inf."""
    if 0 < top_k < scaled.shape[-1]:
        kth = torch.topk(scaled, top_k, dim=-1).values[:, -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = scaled.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token when the tokens ranked above it already hold top_p (the first always stays)
        drop = (probs.cumsum(dim=-1) - probs) > top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        scaled = torch.full_like(scaled, float("-inf")).scatter(1, order, sorted_logits)
    return scaled


class FastEngine:
    """`RolloutEngine` with a CUDA-graph decode step (see the module doc)."""

    def __init__(self, model, tokenizer, config: FastEngineConfig | None = None):
        model = getattr(model, "module", model)  # DDP / accelerate wrapper
        if hasattr(model, "get_base_model"):  # peft: its LoRA layers stay in the modules we call
            model = model.get_base_model()
        self.model = model
        self.tokenizer = tokenizer
        self.config = config or FastEngineConfig()
        self.parts = _Parts.of(model)
        self.eos_ids = eos_token_ids(model, tokenizer)
        self.pad_id = pad_token_id(tokenizer, self.eos_ids)
        self._states: dict[tuple, _DecodeState] = {}
        device = model.lm_head.weight.device
        kernels = self.config.kernels
        if kernels == "auto":
            kernels = "triton" if device.type == "cuda" and _fits_fused_kernels(model, self.parts) else "torch"
        elif kernels == "triton" and not (device.type == "cuda" and _fits_fused_kernels(model, self.parts)):
            raise ValueError("fast engine kernels='triton' needs CUDA, triton and a SiLU/RMSNorm model "
                             "with a power-of-two head dim; use kernels='torch'")
        self.fused = kernels == "triton"
        self.fused_gemms = self.fused and self.config.fuse_gemms and _fits_gemm_kernels(self.parts)
        self.stacked = None if self.fused_gemms else self._stacked_projections()
        self._set_forward()

    def _stacked_projections(self) -> StackedProjections | None:
        """The stacked q/k/v and gate/up weights when the per-op Triton path can use them."""
        fits = self.fused and self.config.stack_projections and StackedProjections.fits(self.parts)
        return StackedProjections(self.parts) if fits else None

    def _set_forward(self) -> None:
        forward = (decode_forward_fused_gemm if self.fused_gemms else
                   decode_forward_fused if self.fused else decode_forward)
        self._forward = torch.compile(forward, fullgraph=True, dynamic=False) if self.config.compile else forward

    @torch.no_grad()
    def generate(self, prompt_ids: list[list[int]], group_size: int, params: SamplingParams) -> Rollout:
        _check_request(prompt_ids, group_size, params)
        if params.seed is not None:
            torch.manual_seed(params.seed)
        device = self.model.lm_head.weight.device
        ids, valid = left_pad(prompt_ids, self.pad_id, device)  # (B, P)
        valid = valid.bool()
        if self.stacked is not None:
            self.stacked.refresh()  # before capture too: warm-up runs read the copies
        st = self._state(len(prompt_ids) * group_size, ids.shape[1], params, device)
        first_logits = self._prefill_into(st, ids, valid, group_size)
        steps = self._decode(st, first_logits, params)
        return self._rollout(prompt_ids, group_size, st, steps, params)

    # -- setup

    def _state(self, n: int, width: int, params: SamplingParams, device) -> _DecodeState:
        bucket = self.config.length_bucket
        length = -(-(width + params.max_new_tokens - 1) // bucket) * bucket
        key = (n, length, params.max_new_tokens, params.temperature, params.top_k, params.top_p, str(device))
        st = self._states.pop(key, None)  # re-inserted last: the dict is in least-recently-used order
        if st is None:
            while len(self._states) >= self.config.max_graphs:
                self._states.pop(next(iter(self._states)))
            st = _DecodeState(self.parts, n, length, params.max_new_tokens, self.model.lm_head.weight.dtype,
                              device, self.eos_ids, self.pad_id)
            if device.type == "cuda" and self.config.cuda_graph:
                self._capture_or_fall_back(st, params)
        self._states[key] = st
        return st

    def _step(self, st: _DecodeState, params: SamplingParams) -> None:
        """Decode one token for every sequence; every input and output is a static tensor of `st`."""
        if self.fused:
            stacked = {} if self.fused_gemms else {"stacked": self.stacked}
            logits = self._forward(self.parts, st.tokens, st.pos, st.col, st.start, st.k, st.v, **stacked)
            if not (params.top_k or params.top_p < 1.0):  # the fused sampler also records the step
                from rlvr.rollout.fast_kernels import sample_

                sample_(logits, params.temperature, st.seed, record=st)
                st.counters += 1
                return
            token, logp = sample_tokens(logits.float(), params)
        else:
            logits = self._forward(self.parts, st.tokens, st.pos, st.col, st.bias, st.k, st.v)
            token, logp = sample_tokens(logits, params)
        token = torch.where(st.finished, self.pad_id, token)
        logp = torch.where(st.finished, 0.0, logp)
        st.out_tokens.index_copy_(1, st.step, token[:, None])
        st.out_logp.index_copy_(1, st.step, logp[:, None])
        st.finished |= (token[:, None] == st.stop_ids[None, :]).any(dim=1)
        st.tokens.copy_(token)
        st.pos += 1
        st.counters += 1

    def _capture_or_fall_back(self, st: _DecodeState, params: SamplingParams) -> None:
        """Capture; if a Triton build fails (an untested GPU/toolchain), step down: fused GEMMs ->
        per-op triton kernels -> torch ops, with a warning each time."""
        while True:
            try:
                return self._capture(st, params)
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
                torch.cuda.synchronize()

    def _capture(self, st: _DecodeState, params: SamplingParams) -> None:
        # warm-up on a side stream (cuBLAS handles, compilation), then capture; the state is reset
        # before every use, so what warm-up wrote does not matter
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                st.col.zero_()
                st.step.zero_()
                self._step(st, params)
        torch.cuda.current_stream().wait_stream(side)
        st.col.zero_()
        st.step.zero_()
        st.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(st.graph):
            self._step(st, params)

    # -- generation

    def _prefill_into(self, st: _DecodeState, ids, valid, group_size: int) -> torch.Tensor:
        """Prefill each prompt once, copy its K/V into its G cache rows; first-token logits (N, V)."""
        width = ids.shape[1]
        logits, keys, values = prefill_forward(self.parts, ids, valid)
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
        return logits.repeat_interleave(group_size, dim=0)

    def _decode(self, st: _DecodeState, first_logits: torch.Tensor, params: SamplingParams) -> int:
        """Sample the first token from the prefill, then decode; returns the output columns used."""
        token, logp = sample_tokens(first_logits, params)
        st.out_tokens[:, 0] = token
        st.out_logp[:, 0] = logp
        st.finished.copy_((token[:, None] == st.stop_ids[None, :]).any(dim=1))
        st.tokens.copy_(token)
        steps = 1
        while steps < params.max_new_tokens:
            if steps % self.config.check_every == 0 and bool(st.finished.all()):  # host sync
                break
            if st.graph is not None:
                st.graph.replay()
            else:
                self._step(st, params)
            steps += 1
        return steps

    def _rollout(self, prompt_ids, group_size: int, st: _DecodeState, steps: int, params) -> Rollout:
        tokens = st.out_tokens[:, :steps].tolist()  # one host copy per batch
        logps = st.out_logp[:, :steps].tolist()
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
