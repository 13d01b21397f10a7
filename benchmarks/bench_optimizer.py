"""One optimizer step of each training precision on a model shape, against torch's AdamW in the same
run: what `bf16-kahan`'s KahanAdamW costs with each of its updates (eager elementwise ops, those ops
compiled into one kernel per 16M-element chunk, one Triton launch per parameter: the CUDA default,
not run on the CPU), beside the AdamW that bf16-mixed (float32 masters) and pure bf16 step with
(torch's foreach implementation, its default on CUDA).

    python benchmarks/bench_optimizer.py [--shape 0.5b] [--reps 10] [--device cuda] [--out FILE]

Every parameter trains and holds a random gradient; the step is timed after two warm-up steps (which
create the state), CUDA events on the GPU, host time on the CPU; peak = memory allocated by one step
above what the weights, gradients and optimizer state already hold (the step's temporaries).
`--device cpu --shape tiny` is a smoke run.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (SHAPES, Row, build_model, cuda_time_ms, host_time_s, median, out_path,  # noqa: E402
                               peak_above, print_table, save, shape_label)

# name: (precision whose weights it steps, optimizer)
CASES = {"torch AdamW, float32 masters (bf16-mixed)": ("bf16-mixed", "adamw"),
         "torch AdamW, bfloat16 weights (bf16)": ("bf16", "adamw"),
         "KahanAdamW eager, bfloat16 weights (bf16-kahan)": ("bf16-kahan", "eager"),
         "KahanAdamW compiled, bfloat16 weights (bf16-kahan)": ("bf16-kahan", "compiled"),
         "KahanAdamW triton, bfloat16 weights (bf16-kahan)": ("bf16-kahan", "triton")}
BASELINE = "torch AdamW, float32 masters (bf16-mixed)"


def step_of(shape: str, device: str, precision: str, optimizer: str):
    """A model in `precision`'s weight dtype with random gradients, and its optimizer's step."""
    from rlvr.models.precision import weight_dtype
    from rlvr.trainer.optimizer import make_optimizer

    model = build_model(shape, device, eos_token_id=1, train=True).to(weight_dtype(precision, train=True))
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    opt = make_optimizer(params, precision, lr=1e-6, weight_decay=0.0, betas=(0.9, 0.999))
    if optimizer != "adamw":
        opt.update = optimizer
    for _ in range(2):  # the first step creates the state (and compiles)
        opt.step()
    return model, opt


def measure(name: str, shape: str, device: str, reps: int) -> Row:
    precision, optimizer = CASES[name]
    model, opt = step_of(shape, device, precision, optimizer)
    params = sum(p.numel() for p in model.parameters())
    if device == "cuda":
        times, peak = cuda_time_ms(opt.step, warmup=1, reps=reps), peak_above(opt.step)
    else:
        times, peak = [t * 1e3 for t in host_time_s(opt.step, reps)], None
    state = sum(t.nbytes for s in opt.state.values() for t in s.values() if torch.is_tensor(t) and t.dim())
    note = f"{params / 1e6:.1f}M parameters; optimizer state {state / 2**30:.3f} GiB"
    del model, opt
    if device == "cuda":
        torch.cuda.empty_cache()
    return Row(name=name, value=median(times), unit="ms", peak_gib=peak, note=note, samples=times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="0.5b", choices=sorted(SHAPES))
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--out", default=out_path("bench_optimizer.json"))
    args = p.parse_args(argv)
    rows = [measure(name, args.shape, args.device, args.reps) for name, (_, optimizer) in CASES.items()
            if args.device == "cuda" or optimizer != "triton"]
    title = f"one optimizer step, {shape_label(args.shape)}, {args.device}"
    print_table(title, rows, BASELINE)
    save(args.out, title, rows, {"shape": args.shape, "device": args.device, "reps": args.reps})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
