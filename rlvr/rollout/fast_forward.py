"""The model math of the fast engine: which modules of a Llama/Qwen2/Qwen3-layout causal LM it
calls (`ModelParts`), the prefill of left-padded prompts, and the one-token decode step in three
implementations (torch ops; per-op Triton kernels with cuBLAS GEMMs; norm-fused Triton GEMMs).

The engine runs the model's own modules (embed_tokens, per layer input_layernorm, q/k/v/o
projections, RoPE from the model's rotary_emb, post_attention_layernorm, mlp; norm, lm_head) on a
preallocated cache of shape (N, kv_heads, S, D) per layer, so the weights are used in place and
LoRA layers (peft) work as is. Prompts are left-padded to P, so every sequence writes column P + s
at decode step s. No sliding-window attention.
Shapes: N sequences, P prompt width, S cache length, H hidden, D head dim, V vocab.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rlvr.kernels.triton_layers import rotate_half
from rlvr.rollout.fast_stacked import StackedProjections

@dataclass
class ModelParts:
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
    def of(cls, model) -> "ModelParts":
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
        ModelParts.of(model)
    except ValueError:
        return False
    return True



def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + rotate_half(x) * sin


def _qkv(parts: ModelParts, layer, h: torch.Tensor, lead: tuple[int, ...]):
    """q (*lead, heads, D), k and v (*lead, kv_heads, D), q/k-normed where the model has it (Qwen3)."""
    attn = layer.self_attn
    q = attn.q_proj(h).view(*lead, parts.heads, parts.head_dim)
    k = attn.k_proj(h).view(*lead, parts.kv_heads, parts.head_dim)
    v = attn.v_proj(h).view(*lead, parts.kv_heads, parts.head_dim)
    if hasattr(attn, "q_norm"):
        q, k = attn.q_norm(q), attn.k_norm(k)
    return q, k, v


def decode_forward(parts: ModelParts, tokens, pos, col, bias, k_cache: list, v_cache: list) -> torch.Tensor:
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


def decode_forward_fused(parts: ModelParts, tokens, pos, col, start, k_cache: list, v_cache: list,
                         stacked: StackedProjections | None = None, attn_splits: int | None = None) -> torch.Tensor:
    """`decode_forward` on the Triton kernels of rlvr.rollout.fast_kernels: 8 launches per layer
    with `stacked` projections (11 without; one more with split-KV) instead of about 36. Returns logits (N, V) in
    the model dtype. `attn_splits`: the attention's column splits (`fast_kernels.decode_attention`;
    None: chosen there from the shapes)."""
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
        out = K.rope_cache_attention_(q, k, v, cos, sin, k_cache[i], v_cache[i], start, col, parts.scaling,
                                      attn_splits)
        norm = layer.post_attention_layernorm
        h = K.add_rmsnorm_(x, attn.o_proj(out), norm.weight, norm.variance_epsilon)
        gate, up = stacked.gate_up(i, h) if stacked else (mlp.gate_proj(h), mlp.up_proj(h))
        delta = mlp.down_proj(K.silu_mul(gate, up))
    return parts.lm_head(K.add_rmsnorm_(x, delta, parts.norm.weight, parts.norm.variance_epsilon))


def decode_forward_fused_gemm(parts: ModelParts, tokens, pos, col, start, k_cache: list, v_cache: list,
                              attn_splits: int | None = None) -> torch.Tensor:
    """`decode_forward_fused` with the norm-fused GEMM kernels: per layer one launch for add +
    norm + q/k/v + RoPE + cache write, attention, o_proj, one for add + norm + gate/up + SiLU*up,
    down_proj. The residual stream alternates between two buffers (a kernel's programs read the
    old stream while one of them writes the new one). `attn_splits`: as in `decode_forward_fused`."""
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
        out = K.decode_attention(q, k_cache[i], v_cache[i], start, col, parts.scaling, attn_splits)
        norm = layer.post_attention_layernorm
        act = K.norm_gate_up_silu(x, attn.o_proj(out), spare, norm.weight, norm.variance_epsilon,
                                  mlp.gate_proj, mlp.up_proj)
        x, spare = spare, x
        delta = mlp.down_proj(act)
    return parts.lm_head(K.add_rmsnorm_(x, delta, parts.norm.weight, parts.norm.variance_epsilon))


def fits_gemm_kernels(parts: ModelParts) -> bool:
    """Whether `decode_forward_fused_gemm` reads this model's weights right: plain nn.Linear
    projections (a LoRA layer's adapter would be skipped), q/k/v bias all or none, no MLP bias,
    head dim >= 32 (each half of a head is a GEMM tile of at least 16 columns)."""
    plain_rest = all(type(m) is torch.nn.Linear for layer in parts.layers
                     for m in (layer.self_attn.o_proj, layer.mlp.down_proj))
    return StackedProjections.fits(parts) and plain_rest and parts.head_dim >= 32


def fits_fused_kernels(model, parts: ModelParts) -> bool:
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


def _prefill_geometry(parts: ModelParts, x: torch.Tensor, valid: torch.Tensor):
    """cos, sin (B, 1, P, D) at each token's position (left padding does not count) and the
    attention mask (B, 1, P, P) of left-padded prompts."""
    p = valid.shape[1]
    pos = (valid.long().cumsum(1) - 1).clamp(min=0)
    cos, sin = parts.rotary(x, pos)  # (B, P, D)
    causal = torch.ones(p, p, dtype=torch.bool, device=valid.device).tril()
    # padding queries see only themselves (their outputs are never used; this avoids all -inf rows)
    allowed = causal & (valid[:, None, :] | torch.eye(p, dtype=torch.bool, device=valid.device))
    return cos[:, None], sin[:, None], allowed[:, None]


def _prefill_attention(parts: ModelParts, q, k, v, allowed) -> torch.Tensor:
    """q (B, heads, P, D), k and v (B, kv, P, D), RoPE applied -> attention output (B, P, heads*D)."""
    b, _, p, _ = q.shape
    group = parts.heads // parts.kv_heads
    out = F.scaled_dot_product_attention(q, k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1),
                                         attn_mask=allowed, scale=parts.scaling)
    return out.transpose(1, 2).reshape(b, p, -1)


def prefill_forward(parts: ModelParts, ids: torch.Tensor, valid: torch.Tensor):
    """Left-padded prompts (B, P) -> last-position logits (B, V) fp32, and per layer K, V (B, kv, P, D)."""
    b, p = ids.shape
    x = parts.embed(ids)  # (B, P, H)
    cos, sin, allowed = _prefill_geometry(parts, x, valid)
    keys, values = [], []
    for layer in parts.layers:
        q, k, v = _qkv(parts, layer, layer.input_layernorm(x), (b, p))
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, heads, P, D)
        q, k = _rope(q, cos, sin), _rope(k, cos, sin)
        out = _prefill_attention(parts, q, k, v, allowed)
        keys.append(k)
        values.append(v)
        x = x + layer.self_attn.o_proj(out)
        x = x + layer.mlp(layer.post_attention_layernorm(x))
    logits = parts.lm_head(parts.norm(x[:, -1])).float()  # left padding: the last column is real
    return logits, keys, values


def prefill_forward_fused(parts: ModelParts, ids: torch.Tensor, valid: torch.Tensor,
                          stacked: StackedProjections | None = None):
    """`prefill_forward` with the decode step's Triton kernels where they apply token by token
    (residual add + RMSNorm, RoPE with the K/V write, SiLU * up) and the stacked projections:
    about a third of the launches. A refill's prefill is a few prompts, so its cost is the launches
    (models `fits_fused_kernels` accepts)."""
    from rlvr.rollout import fast_kernels as K

    b, p = ids.shape
    x = parts.embed(ids)  # (B, P, H)
    cos, sin, allowed = _prefill_geometry(parts, x, valid)
    x = x.reshape(b * p, -1)  # the residual stream, updated in place by add_rmsnorm_
    cos, sin = cos.reshape(b * p, -1), sin.reshape(b * p, -1)  # per token
    first = torch.zeros(1, dtype=torch.long, device=ids.device)  # rope_and_cache_'s column: each token's own
    kv_shape = (b * p, parts.kv_heads, 1, parts.head_dim)  # token-major, as (B, P, kv, D)
    delta = None  # what the previous block adds to the residual stream
    keys, values = [], []
    for i, layer in enumerate(parts.layers):
        attn, mlp, norm = layer.self_attn, layer.mlp, layer.input_layernorm
        h = K.add_rmsnorm_(x, delta, norm.weight, norm.variance_epsilon)
        q, k, v = stacked.qkv(i, h) if stacked else (attn.q_proj(h), attn.k_proj(h), attn.v_proj(h))
        k_new, v_new = (torch.empty(kv_shape, dtype=t.dtype, device=t.device) for t in (k, v))
        q = K.rope_and_cache_(q, k, v, cos, sin, k_new, v_new, first)  # one launch for RoPE and K/V
        q, k, v = (t.view(b, p, -1, parts.head_dim).transpose(1, 2) for t in (q, k_new, v_new))  # (B, heads, P, D)
        out = _prefill_attention(parts, q, k, v, allowed)
        keys.append(k)
        values.append(v)
        norm = layer.post_attention_layernorm
        h = K.add_rmsnorm_(x, attn.o_proj(out.reshape(b * p, -1)), norm.weight, norm.variance_epsilon)
        gate, up = stacked.gate_up(i, h) if stacked else (mlp.gate_proj(h), mlp.up_proj(h))
        delta = mlp.down_proj(K.silu_mul(gate, up))
    last = x.view(b, p, -1)[:, -1].contiguous()  # left padding: the last column is real
    normed = K.add_rmsnorm_(last, delta.view(b, p, -1)[:, -1].contiguous(), parts.norm.weight,
                            parts.norm.variance_epsilon)
    return parts.lm_head(normed).float(), keys, values
