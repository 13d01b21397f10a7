"""The GRPO update (policy forward, fused loss, backward, AdamW step) on padded rows against packed
rows (`grpo.packing`), on completions of variable length: what padding-free training saves.

Batch: N sequences of a `--prompt-len`-token prompt and a completion whose length is drawn from a
lognormal (median a quarter of `--new-tokens`, sigma `--sigma`, capped; bench_rollout.py's
variable-length workload), random token ids; and, for reference, every completion full length.
Padded: the trainer's rows, [prompt | completion | right padding] as wide as the longest sequence.
Packed: each sequence's real tokens end to end (rlvr.trainer.packing). Model: `--shape`, random
weights, bf16, with the trainer's fused RMSNorm/SwiGLU/RoPE patched in; loss dapo, AdamW lr 1e-6.
Time: one update with CUDA events, median of `--reps` after a warm-up update; peak memory above
the model and optimizer state; the two paths' losses on the same batch, which must agree.

    python benchmarks/bench_update_packing.py [--shape 1.5b] [--n 64] [--prompt-len 128]
        [--new-tokens 512] [--reps 5] [--micro-batch-size 16] [--out FILE]
    python benchmarks/bench_update_packing.py --device cpu --shape tiny --n 8 --prompt-len 8 --new-tokens 32
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_rollout import end_lengths  # noqa: E402
from rlvr.trainer import micro_batches as micro  # noqa: E402
from benchmarks.common import (SHAPES, Row, build_model, host_time_s, median, out_path, print_table,  # noqa: E402
                               save, shape_label)


def variable_batch(lengths: list[int], prompt_len: int, vocab: int, device: str):
    """A TrainBatch: equal prompts, completions of `lengths` right-padded to the longest."""
    from rlvr.trainer.batch import TrainBatch

    n, t = len(lengths), max(lengths)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (n, prompt_len + t), generator=g)
    comp = torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]  # (n, t) real completion tokens
    ids[:, prompt_len:][~comp] = 0  # pad id
    attention = torch.cat([torch.ones(n, prompt_len, dtype=torch.long), comp.long()], dim=1)
    positions = torch.arange(prompt_len + t).expand(n, -1).contiguous()
    return TrainBatch(ids.to(device), attention.to(device), positions.to(device), ids[:, prompt_len:].to(device),
                      comp.float().to(device), prompt_len)


def update(model, optimizer, batch, advantages, packed: bool, new_tokens: int,
           split: tuple[int, int] = (0, 0)) -> float:
    """One update of the trainer's shape: hidden states (padded or packed), fused loss, backward
    (accumulated over the micro-batches `split` = (micro_batch_size, micro_batch_tokens) makes, as
    the trainer splits them; (0, 0): the whole batch at once), clipping, AdamW. Returns the loss."""
    from rlvr.algorithms.losses import LossNormalizer
    from rlvr.kernels import fused_policy_loss
    from rlvr.trainer.batch import completion_hidden, output_weight
    from rlvr.trainer.packing import packed_completion_hidden

    tokens = float(batch.mask.sum().item())
    normalizer = LossNormalizer(num_sequences=batch.targets.shape[0], num_tokens=tokens, num_local_tokens=tokens)
    total = 0.0
    for mb in micro.micro_batches(batch, *split, packing=packed):
        part = micro.part(batch, mb)
        hidden = packed_completion_hidden(model, part) if packed else completion_hidden(model, part)
        loss, _ = fused_policy_loss(hidden, output_weight(model), part.targets, part.mask, advantages[mb.rows],
                                    None, None, loss_type="dapo", epsilon_low=0.2, epsilon_high=0.2, beta=0.0,
                                    kl_type="k3", normalizer=normalizer, max_completion_length=new_tokens,
                                    backend="auto")
        loss.backward()
        total += loss.item()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total


def measure(name: str, model, batch, advantages, packed: bool, args, split=(0, 0)) -> tuple[Row, float]:
    """Row of update ms (peak GiB above the resting state) and the first update's loss. The
    optimizer has lr 0: every timed update sees the same weights, so both paths' losses compare."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0, fused=args.device == "cuda" or None)
    losses = []
    try:
        losses.append(update(model, optimizer, batch, advantages, packed, args.new_tokens, split))  # warm-up
        if args.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() if args.device == "cuda" else 0
        times = host_time_s(lambda: losses.append(update(model, optimizer, batch, advantages, packed,
                                                         args.new_tokens, split)), args.reps)
    except Exception as e:  # a path that fails is a row with a reason
        return Row(name, None, "ms", note=f"failed: {type(e).__name__}: {str(e).splitlines()[0][:100]}"), float("nan")
    peak = (torch.cuda.max_memory_allocated() - base) / 2**30 if args.device == "cuda" else None
    ms = [t * 1e3 for t in times]
    row = Row(name, median(ms), "ms", peak_gib=peak, samples=ms)
    print(f"{name}: {row.value:.1f} ms ({[round(x) for x in ms]}), loss {losses[0]:.6f}", flush=True)
    return row, losses[0]


def forward_tokens(batch, split: tuple[int, int], packed: bool) -> int:
    """Tokens the update's forwards hold: each micro-batch's rows x its width, or its real tokens packed."""
    if packed:
        return int(batch.attention_mask.sum())
    return sum(mb.tokens for mb in micro.micro_batches(batch, *split, packing=False))


def micro_batched(model, batch, advantages, args, loss_whole: float) -> tuple[list[Row], dict[str, float]]:
    """The update in micro-batches of --micro-batch-size rows, against a token budget that holds as
    many rows at full length: the same memory bound for the worst case. Rows and their losses."""
    size = args.micro_batch_size
    if not size:
        return [], {}
    budget = size * (args.prompt_len + args.new_tokens)
    rows, losses = [], {}
    for name, packed, split in ((f"padded, micro_batch_size {size}", False, (size, 0)),
                                (f"padded, micro_batch_tokens {budget}", False, (0, budget)),
                                (f"packed, micro_batch_tokens {budget}", True, (0, budget))):
        row, losses[name] = measure(name, model, batch, advantages, packed, args, split)
        row.note = (f"{len(micro.micro_batches(batch, *split, packing=packed))} micro-batches, "
                    f"{forward_tokens(batch, split, packed):,} tokens in the forwards; "
                    f"loss - whole batch's {losses[name] - loss_whole:+.1e}")
        rows.append(row)
    return rows, losses


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="1.5b", choices=sorted(set(SHAPES) - {"7b"}))
    p.add_argument("--n", type=int, default=64, help="sequences per update")
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=512, help="completion cap")
    p.add_argument("--sigma", type=float, default=1.0, help="lognormal sigma of the completion lengths")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--micro-batch-size", type=int, default=0,
                   help="also time the variable workload in micro-batches of this many rows, against micro-batches "
                        "of as many tokens as these rows take at full length (micro_batch_tokens), padded and packed")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cpu: a smoke run (--shape tiny)")
    p.add_argument("--out", default=out_path("bench_update_packing.json"))
    args = p.parse_args(argv)
    from rlvr.kernels.triton_layers import patch_for_training

    model = build_model(args.shape, args.device, eos_token_id=1, train=True)
    if args.device == "cuda":
        patch_for_training(model)  # as the trainer does
    vocab = SHAPES[args.shape]["vocab_size"]
    advantages = torch.randn(args.n, generator=torch.Generator().manual_seed(1)).to(args.device)
    lengths = end_lengths(args.n, args.new_tokens, args.sigma, seed=args.n)
    rows, extra = [], {}
    for workload, lens in (("variable", lengths), ("fixed", [args.new_tokens] * args.n)):
        batch = variable_batch(lens, args.prompt_len, vocab, args.device)
        real = sum(lens) + args.n * args.prompt_len
        padded_tokens = args.n * (args.prompt_len + max(lens))
        padded, loss_padded = measure(f"{workload}: padded rows", model, batch, advantages, False, args)
        packed, loss_packed = measure(f"{workload}: packed rows", model, batch, advantages, True, args)
        padded.note = f"{padded_tokens:,} tokens in the forward ({real / padded_tokens:.0%} real)"
        packed.note = f"{real:,} tokens in the forward; loss - padded's {loss_packed - loss_padded:+.1e}"
        rows += [padded, packed]
        split_rows, split_losses = (micro_batched(model, batch, advantages, args, loss_padded)
                                    if workload == "variable" else ([], {}))
        rows += split_rows
        s = sorted(lens)
        extra[workload] = {"lengths_median": s[len(s) // 2], "lengths_mean": sum(s) / len(s), "lengths_max": s[-1],
                           "real_tokens": real, "padded_tokens": padded_tokens,
                           "loss_padded": loss_padded, "loss_packed": loss_packed, "loss_micro_batched": split_losses}
        title = (f"GRPO update, {shape_label(args.shape)}, {args.n} x ({args.prompt_len} + {workload} completions, "
                 f"cap {args.new_tokens}; median {s[len(s) // 2]}, mean {sum(s) / len(s):.0f})")
        print_table(title, [padded, packed, *split_rows], baseline=padded.name)
    save(args.out, "GRPO update: padded against packed rows", rows,
         {"shape": args.shape, "n": args.n, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
          "sigma": args.sigma, **extra})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
