"""Policy loss forward + backward from hidden states and the lm_head weight.

Shape of the issue: B=64 sequences, T=512 tokens, H=896, V=151936 (Qwen2-0.5B), bf16, every token
valid. Loss: grpo, epsilon 0.2/0.2, beta 0.04 (k3 KL to given reference log-probs), off-policy
(old log-probs given), the same inputs for every row. Rows:
  eager        full (B, T, V) logits in fp32, log_softmax, rlvr's grpo loss, autograd
  liger c=K    Liger's LigerFusedLinearGRPOLoss (chunk_size K sequences), when liger-kernel imports
  reference    rlvr.kernels.reference (torch, chunked, fp32 logits)
  triton c=R   rlvr.kernels.triton_loss with chunks of at most R token rows
Time: median of CUDA-event timings after warm-up. Memory: peak above the inputs during one call.

    python benchmarks/bench_loss.py [--quick] [--out FILE]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import Row, cuda_time_ms, median, out_path, peak_above, print_table, save  # noqa: E402
from rlvr.algorithms.losses import PolicyLossConfig, PolicyLossInput, compute_policy_loss  # noqa: E402

BETA, EPS = 0.04, 0.2


def make_inputs(b: int, t: int, h: int, v: int, seed: int = 0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    hidden = torch.randn(b, t, h, device="cuda", generator=g, dtype=torch.bfloat16).requires_grad_(True)
    weight = (torch.randn(v, h, device="cuda", generator=g) * h ** -0.5).to(torch.bfloat16).requires_grad_(True)
    targets = torch.randint(0, v, (b, t), device="cuda", generator=g)
    mask = torch.ones(b, t, dtype=torch.bool, device="cuda")
    adv = torch.randn(b, device="cuda", generator=g)
    # realistic log-probs around log(1/V); old/ref slightly off the current policy
    base = -torch.log(torch.tensor(float(v))) + 0.5 * torch.randn(b, t, device="cuda", generator=g)
    old = base + 0.1 * torch.randn(b, t, device="cuda", generator=g)
    ref = base + 0.1 * torch.randn(b, t, device="cuda", generator=g)
    return hidden, weight, targets, mask, adv, old, ref


def eager_step(hidden, weight, targets, mask, adv, old, ref):
    logits = (hidden @ weight.T).float()  # (B, T, V): the memory the fused path avoids
    logp = logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    cfg = PolicyLossConfig(epsilon_low=EPS, epsilon_high=EPS, beta=BETA)
    loss, _ = compute_policy_loss("grpo", PolicyLossInput(logp, adv, mask, old, ref), cfg)
    loss.backward()


def fused_step(module, chunk_size):
    def step(hidden, weight, targets, mask, adv, old, ref):
        loss, _ = module.fused_policy_loss(hidden, weight, targets, mask, adv, old, ref, loss_type="grpo",
                                           epsilon_low=EPS, epsilon_high=EPS, beta=BETA, chunk_size=chunk_size)
        loss.backward()
    return step


def liger_step(chunk_size):
    from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss

    loss_fn = LigerFusedLinearGRPOLoss(beta=BETA, use_ref_model=True, chunk_size=chunk_size, epsilon_low=EPS,
                                       epsilon_high=EPS, loss_type="grpo")

    def step(hidden, weight, targets, mask, adv, old, ref):
        out = loss_fn(hidden, weight, targets, mask.long(), adv, ref_per_token_logps=ref, old_per_token_logps=old)
        (out[0] if isinstance(out, tuple) else out).backward()
    return step


def measure(name, step, inputs, warmup, reps, note="") -> Row:
    hidden, weight = inputs[0], inputs[1]

    def call():
        hidden.grad = weight.grad = None
        step(*inputs)

    try:
        times = cuda_time_ms(call, warmup, reps)
        peak = peak_above(call)
    except torch.OutOfMemoryError as e:
        torch.cuda.empty_cache()
        return Row(name, None, "ms", note=f"out of memory: {str(e).splitlines()[0][:80]}")
    finally:
        hidden.grad = weight.grad = None
    torch.cuda.empty_cache()
    row = Row(name, median(times), "ms", peak, note, times)
    print(f"{name}: {row.value:.1f} ms, peak +{peak:.2f} GiB  {[round(x, 1) for x in times]}", flush=True)
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--tokens", type=int, default=512)
    p.add_argument("--hidden", type=int, default=896)
    p.add_argument("--vocab", type=int, default=151936)
    p.add_argument("--chunks", default="1024,2048,4096,8192", help="triton chunk rows to try")
    p.add_argument("--liger-chunks", default="1,8", help="Liger chunk sizes (sequences) to try; empty: skip")
    p.add_argument("--skip", default="", help="comma list of rows to skip: eager,liger,reference")
    p.add_argument("--quick", action="store_true", help="fewer repetitions")
    p.add_argument("--out", default=out_path("bench_loss.json"))
    args = p.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    reps = 3 if args.quick else 10
    inputs = make_inputs(args.batch, args.tokens, args.hidden, args.vocab)
    from rlvr.kernels import reference, triton_loss

    rows = []
    if "eager" not in skip:
        rows.append(measure("eager torch (fp32 logits)", eager_step, inputs, 1, reps))
    for c in filter(None, args.liger_chunks.split(",")):
        if "liger" in skip:
            break
        try:
            step = liger_step(int(c))
        except ImportError as e:
            rows.append(Row(f"liger chunk={c}", None, "ms", note=f"liger-kernel not importable: {e}"))
            break
        rows.append(measure(f"liger chunk={c}", step, inputs, 1, 2 if int(c) < 4 else 3))
    if "reference" not in skip:
        rows.append(measure("rlvr torch reference", fused_step(reference, None), inputs, 1, 2))
    for c in filter(None, args.chunks.split(",")):
        rows.append(measure(f"rlvr triton chunk={c}", fused_step(triton_loss, int(c)), inputs, 2, reps))
    rows.append(measure("rlvr triton default", fused_step(triton_loss, None), inputs, 2, reps,
                        note=f"chunk={triton_loss.default_chunk_rows(args.vocab)} rows"))
    title = f"loss fwd+bwd, B={args.batch} T={args.tokens} H={args.hidden} V={args.vocab} bf16"
    print_table(title, rows, baseline="eager torch (fp32 logits)")
    save(args.out, title, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
