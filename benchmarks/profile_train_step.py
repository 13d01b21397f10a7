"""Where the GRPO update spends its time, outside generation: the policy forward to the final
hidden states, the fused loss (forward + backward through the lm_head), the backward through the
model, gradient clipping and the AdamW step, each timed with CUDA events; then the kernels of one
whole update under torch.profiler, grouped by name; with the HF modules as they are, then with
rlvr's fused RMSNorm/SwiGLU/RoPE kernels patched in (what the trainer does). Same model and batch as bench_grpo_step.py
(default: Qwen2-0.5B shape, random, bf16; 64 sequences of 128 prompt + 256 completion tokens, loss dapo).

    python benchmarks/profile_train_step.py [--shape 0.5b] [--prompts 8] [--group 8] [--prompt-len 128]
        [--new-tokens 256] [--reps 5] [--top 15]
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import benchmarks.bench_grpo_step as B  # noqa: E402  (the workload: B.configure sets its globals)
from benchmarks.common import SHAPES  # noqa: E402


def random_batch(n: int, device):
    from rlvr.trainer.batch import TrainBatch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, B.VOCAB, (n, B.PROMPT_LEN + B.NEW_TOKENS), generator=g).to(device)
    attention = torch.ones_like(ids)
    positions = torch.arange(ids.shape[1], device=device).expand_as(ids).contiguous()
    mask = torch.ones(n, B.NEW_TOKENS, device=device)
    return TrainBatch(ids, attention, positions, ids[:, B.PROMPT_LEN:], mask, B.PROMPT_LEN)


def phases(model, optimizer, batch, advantages, weight):
    """One update, phase by phase: {phase: ms}."""
    from rlvr.kernels import fused_policy_loss
    from rlvr.trainer.batch import completion_hidden

    events = [torch.cuda.Event(enable_timing=True) for _ in range(6)]
    events[0].record()
    hidden = completion_hidden(model, batch)
    events[1].record()
    leaf = hidden.detach().requires_grad_()  # split the loss's backward from the model's
    loss, _ = fused_policy_loss(leaf, weight, batch.targets, batch.mask, advantages, None, None, loss_type="dapo",
                                epsilon_low=0.2, epsilon_high=0.2, beta=0.0, kl_type="k3", normalizer=None,
                                max_completion_length=B.NEW_TOKENS, backend="auto")
    loss.backward()
    events[2].record()
    hidden.backward(leaf.grad)
    events[3].record()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    events[4].record()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    events[5].record()
    torch.cuda.synchronize()
    names = ("forward", "loss fwd+bwd", "model backward", "clip", "optimizer")
    return {name: events[i].elapsed_time(events[i + 1]) for i, name in enumerate(names)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default=B.SHAPE, choices=sorted(set(SHAPES) - {"7b"}))
    p.add_argument("--prompts", type=int, default=B.PROMPTS)
    p.add_argument("--group", type=int, default=B.GROUP)
    p.add_argument("--prompt-len", type=int, default=B.PROMPT_LEN)
    p.add_argument("--new-tokens", type=int, default=B.NEW_TOKENS)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args(argv)
    args.device = "cuda"
    B.configure(args)
    from rlvr.kernels.triton_layers import patch_for_training
    from rlvr.trainer.batch import output_weight

    model = B.build_model()
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    batch = random_batch(B.PROMPTS * B.GROUP, "cuda")
    advantages = torch.randn(B.PROMPTS * B.GROUP, device="cuda")
    weight = output_weight(model)
    for label in ("HF modules", "fused RMSNorm/SwiGLU/RoPE"):
        if label != "HF modules":
            print(f"\npatched {patch_for_training(model)} modules")
        report(label, model, optimizer, batch, advantages, weight, args)


def report(label, model, optimizer, batch, advantages, weight, args) -> None:
    from torch.profiler import ProfilerActivity, profile

    runs = [phases(model, optimizer, batch, advantages, weight) for _ in range(args.reps + 1)][1:]
    print(f"## {label}: update phases, {B.SHAPE}, {B.PROMPTS * B.GROUP} x ({B.PROMPT_LEN}+{B.NEW_TOKENS}) tokens, "
          f"median of {args.reps}")
    print("| phase | ms |\n|---|---|")
    total = 0.0
    for name in runs[0]:
        ms = sorted(r[name] for r in runs)[len(runs) // 2]
        total += ms
        print(f"| {name} | {ms:.1f} |")
    print(f"| total | {total:.1f} |")
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        phases(model, optimizer, batch, advantages, weight)
    per_name: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for evt in prof.events():
        if evt.device_type == torch.autograd.DeviceType.CUDA:
            per_name[evt.name][0] += evt.device_time / 1000
            per_name[evt.name][1] += 1
    kernel_ms = sum(v[0] for v in per_name.values())
    launches = sum(v[1] for v in per_name.values())
    print(f"\n## {label}: kernels of one update: {kernel_ms:.1f} ms in {launches} launches")
    print("| kernel | ms | launches |\n|---|---|---|")
    for name, (ms, count) in sorted(per_name.items(), key=lambda kv: -kv[1][0])[: args.top]:
        print(f"| {name[:90]} | {ms:.1f} | {count} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
