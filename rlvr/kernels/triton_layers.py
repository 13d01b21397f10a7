"""Fused Triton RMSNorm, SwiGLU and RoPE for the training forward and backward of HF
Llama/Qwen-style models, patched into a model by `patch_for_training`.

HF's eager RMSNorm is ~7 elementwise kernels forward (upcast, pow, mean, rsqrt, mul, downcast,
mul weight) and more backward over (rows, H) tensors; its MLP runs silu and the product as two.
Here each is one kernel forward and one backward, with HF's numerics:
  rms_norm  y = w * round(x * rsqrt(mean(x^2) + eps)), x in fp32, round() to x's dtype (as HF's
            `.to(input_dtype)` before the weight), y in promote(x, w); one row per program.
            Saves x and rstd (fp32, one per row). Backward, with n = x * rstd, dn = dy * w:
              dx = rstd * (dn - n * mean(dn * n)),  dw = sum_rows dy * round(n)
            dw as fp32 per-program partial sums reduced by torch (no atomics: deterministic).
  swiglu    out = round(silu(g)) * u, fp32 math, silu rounded to the input dtype like torch's
            separate silu op. Backward recomputes silu from the saved g, u:
              du = dout * round(silu(g)),  dg = dout * u * s * (1 + g * (1 - s)),  s = sigmoid(g)
  rotary    HF's apply_rotary_pos_emb (q * cos + rotate_half(q) * sin, and k) for q, k (B, heads, L,
            D) of any strides and cos, sin (B or 1, L, D): one kernel for q and k together, one
            program per token, fp32 math rounded once (HF's bf16 ops round after each of their
            ~10 kernels a layer, forward and as many backward). Backward, with x = [x1, x2] halves:
              dx1 = g1 * cos1 + g2 * sin2,  dx2 = g2 * cos2 - g1 * sin1

Triton is imported when present, so the torch references and the patching import on CPU-only
installs; the patched forwards call the kernels for CUDA tensors and the references otherwise.
Shapes: rows = product of the leading dims, H hidden (any size: the power-of-two tail is masked).
"""
from __future__ import annotations

import sys
import types

import torch
import torch.nn.functional as F

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only install: the kernels are never launched
    triton = tl = None

SWIGLU_BLOCK = 1024
"""Elements one SwiGLU program handles."""

BACKWARD_PROGRAMS_PER_SM = 8
"""RMSNorm backward programs per SM; each loops over a contiguous run of rows and writes one
fp32 dweight partial (so the partials are (programs, H), not (rows, H))."""

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
"""Models whose RMSNorm is exactly Llama's (others, e.g. Olmo2, round the weight product
differently) and whose MLP is down(silu(gate(x)) * up(x))."""


def _jit(fn):
    return fn if triton is None else triton.jit(fn)


# ----------------------------------------------------------------------------- torch references

def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """HF LlamaRMSNorm / Qwen2RMSNorm, op for op."""
    input_dtype = x.dtype
    hidden = x.to(torch.float32)
    variance = hidden.pow(2).mean(-1, keepdim=True)
    hidden = hidden * torch.rsqrt(variance + eps)
    return weight * hidden.to(input_dtype)


def swiglu_reference(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """The HF MLP's act_fn(gate_proj(x)) * up_proj(x) with act_fn = SiLU."""
    return F.silu(gate) * up


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """HF's rotate_half: (x1, x2) halves of the last dim -> (-x2, x1)."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rotary_reference(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                     unsqueeze_dim: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """HF Llama/Qwen2 apply_rotary_pos_emb, op for op."""
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


# ----------------------------------------------------------------------------- Triton kernels

@_jit
def _rms_norm_fwd_kernel(x_ptr, w_ptr, y_ptr, rstd_ptr, H, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    valid = cols < H
    x = tl.load(x_ptr + row * H + cols, mask=valid, other=0.0).to(tl.float32)
    # .to(fp32): a Python float eps can arrive as an fp64 constant (torch.compile)
    rstd = tl.math.rsqrt((tl.sum(x * x, axis=0) / H + eps).to(tl.float32))
    normed = (x * rstd).to(x_ptr.dtype.element_ty)  # HF rounds before the weight multiply
    w = tl.load(w_ptr + cols, mask=valid, other=0.0).to(tl.float32)
    tl.store(y_ptr + row * H + cols, (w * normed.to(tl.float32)).to(y_ptr.dtype.element_ty), mask=valid)
    tl.store(rstd_ptr + row, rstd)


@_jit
def _rms_norm_bwd_kernel(dy_ptr, x_ptr, w_ptr, rstd_ptr, dx_ptr, dw_ptr, rows, H, rows_per_program,
                         HAS_DW: tl.constexpr, BLOCK: tl.constexpr):
    """Rows [pid * rows_per_program, ...) -> their dx, and this program's dweight partial."""
    program = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    valid = cols < H
    w = tl.load(w_ptr + cols, mask=valid, other=0.0).to(tl.float32)
    dw = tl.zeros((BLOCK,), dtype=tl.float32)
    first = program.to(tl.int64) * rows_per_program
    for i in range(rows_per_program):
        row = first + i
        in_row = valid & (row < rows)
        x = tl.load(x_ptr + row * H + cols, mask=in_row, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + row * H + cols, mask=in_row, other=0.0).to(tl.float32)
        rstd = tl.load(rstd_ptr + row, mask=row < rows, other=0.0)
        normed = x * rstd
        dn = dy * w
        dx = rstd * (dn - normed * (tl.sum(dn * normed, axis=0) / H))
        tl.store(dx_ptr + row * H + cols, dx.to(dx_ptr.dtype.element_ty), mask=in_row)
        if HAS_DW:
            dw += dy * normed.to(x_ptr.dtype.element_ty).to(tl.float32)
    if HAS_DW:
        tl.store(dw_ptr + program * H + cols, dw, mask=valid)


@_jit
def _sigmoid_silu(g, DTYPE: tl.constexpr):
    """sigmoid(g) and silu(g) rounded to DTYPE (as torch's silu output), both back in fp32."""
    s = 1.0 / (1.0 + tl.exp(-g))
    return s, (g * s).to(DTYPE).to(tl.float32)


@_jit
def _swiglu_fwd_kernel(gate_ptr, up_ptr, out_ptr, numel, BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = offsets < numel
    g = tl.load(gate_ptr + offsets, mask=valid, other=0.0).to(tl.float32)
    u = tl.load(up_ptr + offsets, mask=valid, other=0.0).to(tl.float32)
    _, act = _sigmoid_silu(g, out_ptr.dtype.element_ty)
    tl.store(out_ptr + offsets, (act * u).to(out_ptr.dtype.element_ty), mask=valid)


@_jit
def _swiglu_bwd_kernel(dout_ptr, gate_ptr, up_ptr, dgate_ptr, dup_ptr, numel, BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = offsets < numel
    dout = tl.load(dout_ptr + offsets, mask=valid, other=0.0).to(tl.float32)
    g = tl.load(gate_ptr + offsets, mask=valid, other=0.0).to(tl.float32)
    u = tl.load(up_ptr + offsets, mask=valid, other=0.0).to(tl.float32)
    s, act = _sigmoid_silu(g, gate_ptr.dtype.element_ty)
    tl.store(dup_ptr + offsets, (dout * act).to(dup_ptr.dtype.element_ty), mask=valid)
    dgate = dout * u * s * (1.0 + g * (1.0 - s))
    tl.store(dgate_ptr + offsets, dgate.to(dgate_ptr.dtype.element_ty), mask=valid)


@_jit
def _rotate_heads(x_ptr, out_ptr, b, l, xs0, xs1, xs2, os0, os1, os2, heads, c1, c2, s1, s2,
                  HALF: tl.constexpr, BLOCK_H: tl.constexpr, BACKWARD: tl.constexpr):
    """Every head of token (b, l) of one tensor: out = x * cos + rotate_half(x) * sin, or its
    transpose (the backward) when BACKWARD."""
    h = tl.arange(0, BLOCK_H)
    d = tl.arange(0, HALF)
    mask = (h < heads)[:, None]
    src = x_ptr + b * xs0 + l * xs2 + h[:, None] * xs1 + d[None, :]
    x1 = tl.load(src, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(src + HALF, mask=mask, other=0.0).to(tl.float32)
    if BACKWARD:
        o1, o2 = x1 * c1 + x2 * s2, x2 * c2 - x1 * s1
    else:
        o1, o2 = x1 * c1 - x2 * s1, x2 * c2 + x1 * s2
    dst = out_ptr + b * os0 + l * os2 + h[:, None] * os1 + d[None, :]
    tl.store(dst, o1.to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(dst + HALF, o2.to(out_ptr.dtype.element_ty), mask=mask)


@_jit
def _rotary_kernel(q_ptr, k_ptr, cos_ptr, sin_ptr, q_out_ptr, k_out_ptr, L, q_heads, k_heads,
                   qs0, qs1, qs2, ks0, ks1, ks2, qos0, qos1, qos2, kos0, kos1, kos2, cs0, cs1,
                   HALF: tl.constexpr, BLOCK_QH: tl.constexpr, BLOCK_KH: tl.constexpr, BACKWARD: tl.constexpr):
    """Program t: token (t // L, t % L) of q and k; cos and sin read once for both."""
    t = tl.program_id(0).to(tl.int64)
    b, l = t // L, t % L
    d = tl.arange(0, HALF)
    row = b * cs0 + l * cs1
    c1 = tl.load(cos_ptr + row + d).to(tl.float32)[None, :]
    c2 = tl.load(cos_ptr + row + HALF + d).to(tl.float32)[None, :]
    s1 = tl.load(sin_ptr + row + d).to(tl.float32)[None, :]
    s2 = tl.load(sin_ptr + row + HALF + d).to(tl.float32)[None, :]
    _rotate_heads(q_ptr, q_out_ptr, b, l, qs0, qs1, qs2, qos0, qos1, qos2, q_heads, c1, c2, s1, s2,
                  HALF, BLOCK_QH, BACKWARD)
    _rotate_heads(k_ptr, k_out_ptr, b, l, ks0, ks1, ks2, kos0, kos1, kos2, k_heads, c1, c2, s1, s2,
                  HALF, BLOCK_KH, BACKWARD)


def _row_launch(hidden: int) -> dict:
    block = triton.next_power_of_2(hidden)
    return {"BLOCK": block, "num_warps": 4 if block <= 2048 else 8}


def _backward_programs(rows: int, device: torch.device) -> int:
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
    return max(1, min(rows, BACKWARD_PROGRAMS_PER_SM * sms))


# ----------------------------------------------------------------------------- autograd Functions

class RMSNormFunction(torch.autograd.Function):
    """rms_norm(x (..., H), weight (H,), eps) -> (..., H) in promote(x.dtype, weight.dtype)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        hidden = x.shape[-1]
        assert weight.shape == (hidden,), f"weight {tuple(weight.shape)} for hidden size {hidden}"
        x2d = x.reshape(-1, hidden).contiguous()  # (rows, H)
        rows = x2d.shape[0]
        y = torch.empty(x2d.shape, dtype=torch.promote_types(x.dtype, weight.dtype), device=x.device)
        rstd = torch.empty(rows, dtype=torch.float32, device=x.device)
        if rows:
            _rms_norm_fwd_kernel[(rows,)](x2d, weight.contiguous(), y, rstd, hidden, eps, **_row_launch(hidden))
        ctx.save_for_backward(x2d, weight, rstd)
        ctx.x_shape = x.shape
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x2d, weight, rstd = ctx.saved_tensors
        rows, hidden = x2d.shape
        has_dw = ctx.needs_input_grad[1]
        dy2d = dy.reshape(rows, hidden).contiguous()
        dx = torch.empty_like(x2d)
        per_program = max(1, triton.cdiv(rows, _backward_programs(rows, x2d.device)))
        programs = triton.cdiv(rows, per_program)  # every one of them writes its partial
        dw_partial = torch.empty((programs, hidden) if has_dw else (1,), dtype=torch.float32, device=x2d.device)
        if rows:
            _rms_norm_bwd_kernel[(programs,)](dy2d, x2d, weight.contiguous(), rstd, dx, dw_partial, rows, hidden,
                                              per_program, HAS_DW=has_dw, **_row_launch(hidden))
        dw = dw_partial.sum(0).to(weight.dtype) if has_dw else None
        return dx.view(ctx.x_shape), dw, None


class SwiGLUFunction(torch.autograd.Function):
    """swiglu(gate, up) -> silu(gate) * up, same shape and dtype (gate and up must match)."""

    @staticmethod
    def forward(ctx, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        assert gate.shape == up.shape and gate.dtype == up.dtype, (gate.shape, gate.dtype, up.shape, up.dtype)
        gate, up = gate.contiguous(), up.contiguous()
        out = torch.empty_like(gate)
        numel = gate.numel()
        if numel:
            _swiglu_fwd_kernel[(triton.cdiv(numel, SWIGLU_BLOCK),)](gate, up, out, numel, BLOCK=SWIGLU_BLOCK,
                                                                     num_warps=4)
        ctx.save_for_backward(gate, up)
        return out

    @staticmethod
    def backward(ctx, dout: torch.Tensor):
        gate, up = ctx.saved_tensors
        dout = dout.contiguous()
        dgate, dup = torch.empty_like(gate), torch.empty_like(up)
        numel = gate.numel()
        if numel:
            _swiglu_bwd_kernel[(triton.cdiv(numel, SWIGLU_BLOCK),)](dout, gate, up, dgate, dup, numel,
                                                                     BLOCK=SWIGLU_BLOCK, num_warps=4)
        return dgate, dup


class RotaryFunction(torch.autograd.Function):
    """rotary(q (B, Hq, L, D), k (B, Hk, L, D), cos, sin (B or 1, L, D)) -> rotated q, k with q's
    and k's strides (HF's attention passes transposed views of the projections' outputs) and dtypes
    (under autocast HF's ops promote bf16 q to fp32 cos's dtype; SDPA's autocast rounds it back)."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        q_out, k_out = torch.empty_like(q), torch.empty_like(k)
        _launch_rotary(q, k, cos, sin, q_out, k_out, backward=False)
        ctx.save_for_backward(cos, sin)
        return q_out, k_out

    @staticmethod
    def backward(ctx, dq: torch.Tensor, dk: torch.Tensor):  # an unused output's grad arrives as zeros
        cos, sin = ctx.saved_tensors
        dq, dk = (g if g.stride(-1) == 1 else g.contiguous() for g in (dq, dk))
        dq_in, dk_in = torch.empty_like(dq), torch.empty_like(dk)
        _launch_rotary(dq, dk, cos, sin, dq_in, dk_in, backward=True)
        return dq_in, dk_in, None, None


def _launch_rotary(q, k, cos, sin, q_out, k_out, backward: bool) -> None:
    b, q_heads, length, d = q.shape
    if b * length == 0:
        return
    cos_strides = (cos.stride(0) if cos.shape[0] > 1 else 0, cos.stride(1))  # a batch of 1 broadcasts
    warps = 4 if max(q_heads, k.shape[1]) * d <= 4096 else 8
    _rotary_kernel[(b * length,)](q, k, cos, sin, q_out, k_out, length, q_heads, k.shape[1],
                                  *q.stride()[:3], *k.stride()[:3], *q_out.stride()[:3], *k_out.stride()[:3],
                                  *cos_strides, HALF=d // 2, BLOCK_QH=triton.next_power_of_2(q_heads),
                                  BLOCK_KH=triton.next_power_of_2(k.shape[1]), BACKWARD=backward, num_warps=warps)


# ----------------------------------------------------------------------------- dispatch

def _use_triton(t: torch.Tensor) -> bool:
    return t.is_cuda and triton is not None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The Triton RMSNorm for CUDA tensors, the torch reference otherwise."""
    if _use_triton(x):
        return RMSNormFunction.apply(x, weight, eps)
    return rms_norm_reference(x, weight, eps)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """The Triton SwiGLU for CUDA tensors of one dtype, the torch reference otherwise."""
    if _use_triton(gate) and gate.dtype == up.dtype and gate.shape == up.shape:
        return SwiGLUFunction.apply(gate, up)
    return swiglu_reference(gate, up)


def rotary(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, unsqueeze_dim: int = 1):
    """HF's apply_rotary_pos_emb: the Triton kernel for CUDA tensors in its layout (q, k (B, heads,
    L, D) of one dtype, cos and sin (B or 1, L, D), D / 2 a power of two, unit last strides), the
    torch reference otherwise."""
    d = q.shape[-1]
    fits = (_use_triton(q) and unsqueeze_dim == 1 and q.dim() == k.dim() == 4 and cos.dim() == sin.dim() == 3
            and q.dtype == k.dtype and cos.shape == sin.shape and cos.shape[1:] == (q.shape[2], d)
            and k.shape[0] == q.shape[0] and k.shape[2:] == q.shape[2:] and cos.shape[0] in (1, q.shape[0])
            and d >= 2 and (d // 2) & (d // 2 - 1) == 0
            and all(t.stride(-1) == 1 for t in (q, k, cos, sin)) and cos.stride() == sin.stride())
    if fits:
        return RotaryFunction.apply(q, k, cos, sin)
    return rotary_reference(q, k, cos, sin, unsqueeze_dim)


# ----------------------------------------------------------------------------- patching

def _fused_rms_norm_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    return rms_norm(hidden_states, self.weight, self.variance_epsilon)


def _fused_mlp_forward(self, x: torch.Tensor) -> torch.Tensor:
    # the projections stay module calls, so LoRA layers and DDP/FSDP hooks still run
    return self.down_proj(swiglu(self.gate_proj(x), self.up_proj(x)))


_FUSED_FORWARDS = (_fused_rms_norm_forward, _fused_mlp_forward)


def _is_rms_norm(module: torch.nn.Module) -> bool:
    return (type(module).__name__.endswith("RMSNorm") and hasattr(module, "variance_epsilon")
            and isinstance(getattr(module, "weight", None), torch.Tensor) and module.weight.dim() == 1)


def _is_silu_mlp(module: torch.nn.Module, model_act: str | None) -> bool:
    act = getattr(getattr(module, "config", None), "hidden_act", model_act)
    return (all(isinstance(getattr(module, name, None), torch.nn.Module)
                for name in ("gate_proj", "up_proj", "down_proj"))
            and act in ("silu", "swish"))


def _is_patched(module: torch.nn.Module) -> bool:
    return getattr(module.__dict__.get("forward"), "__func__", None) in _FUSED_FORWARDS


_ROTARY_ORIGINALS: dict[str, object] = {}
"""Modeling modules (by name) whose apply_rotary_pos_emb `patch_modules` replaced by `rotary`,
with the function it replaced."""


def _modeling_modules(model: torch.nn.Module) -> set:
    """The transformers modeling modules defining the model's attention layers (the attention
    forward looks apply_rotary_pos_emb up there at each call)."""
    found = set()
    for module in model.modules():
        source = sys.modules.get(type(module).__module__)
        if type(module).__name__.endswith("Attention") and hasattr(source, "apply_rotary_pos_emb"):
            found.add(source)
    return found


def _patch_rotary(model: torch.nn.Module) -> None:
    """Point the model's modeling modules at `rotary`. The function is module-wide, so every model
    of that type in the process runs it (the same values: fp32 math rounded once), off CUDA as
    the reference."""
    for source in _modeling_modules(model):
        if source.apply_rotary_pos_emb is not rotary:
            _ROTARY_ORIGINALS[source.__name__] = source.apply_rotary_pos_emb
            source.apply_rotary_pos_emb = rotary


def _unpatch_rotary(model: torch.nn.Module) -> None:
    for source in _modeling_modules(model):
        if source.__name__ in _ROTARY_ORIGINALS:
            source.apply_rotary_pos_emb = _ROTARY_ORIGINALS.pop(source.__name__)


def patch_modules(model: torch.nn.Module) -> int:
    """Give each recognised RMSNorm and SiLU MLP of a supported model (SUPPORTED_MODEL_TYPES) an
    instance forward using `rms_norm` / `swiglu`, and its modeling module's apply_rotary_pos_emb
    `rotary`, whatever the device (off CUDA they run the references, so outputs are unchanged).
    Returns how many modules it newly patched (the RoPE function not counted). Parameters and
    state_dict keys are untouched; `unpatch` restores the class forwards and the RoPE function."""
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) not in SUPPORTED_MODEL_TYPES:
        return 0
    _patch_rotary(model)
    model_act = getattr(config, "hidden_act", None)
    patched = 0
    for module in model.modules():
        if _is_patched(module):
            continue
        if _is_rms_norm(module):
            module.forward = types.MethodType(_fused_rms_norm_forward, module)
        elif _is_silu_mlp(module, model_act):
            module.forward = types.MethodType(_fused_mlp_forward, module)
        else:
            continue
        patched += 1
    return patched


def patch_for_training(model: torch.nn.Module, device: torch.device | str | None = None) -> int:
    """`patch_modules` when the model will train on CUDA (`device`, default: where its parameters
    are now -- a trainer passes its device, since accelerate moves the model there only later) and
    triton is installed; otherwise nothing is patched. Idempotent; returns how many modules it
    newly patched."""
    param = next(model.parameters(), None)
    if param is None:
        return 0
    device = torch.device(device) if device is not None else param.device
    if device.type != "cuda" or triton is None:
        return 0
    return patch_modules(model)


def unpatch(model: torch.nn.Module) -> int:
    """Drop the fused instance forwards (the class forwards apply again) and restore the RoPE
    function of the model's modeling modules (for every model of that type); returns how many
    forwards it dropped."""
    _unpatch_rotary(model)
    restored = 0
    for module in model.modules():
        if _is_patched(module):
            del module.forward
            restored += 1
    return restored


__all__ = ["RMSNormFunction", "RotaryFunction", "SwiGLUFunction", "patch_for_training", "patch_modules", "rms_norm",
           "rms_norm_reference", "rotary", "rotary_reference", "swiglu", "swiglu_reference", "unpatch"]
