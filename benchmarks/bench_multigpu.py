"""GRPO throughput on several GPUs: `run_grpo` under `accelerate launch` with DDP and DeepSpeed
ZeRO-2, 1 and 2 processes, the same batch per GPU (weak scaling), speed-up = throughput ratio.

Model: Qwen2-0.5B shape, random weights, bf16 (hidden 896, 24 layers, 14 heads, 2 KV heads,
intermediate 4864, vocab 151936; built from its config, no download). Tokenizer, prompts (128
tokens), task and reward (pseudo-random from the completion's crc32, so every group has reward
variance) are those of `bench_grpo_step.py`. A random model samples EOS with probability about
1/V per token, so completions run the full `--new-tokens` (the measured lengths are reported).
Per GPU and step: `--prompts` prompts x G=`--group` completions. Throughput = completion tokens
of all processes / step time, over the steps after `--warmup` (CUDA graphs, allocator, NCCL and
DeepSpeed set-up happen in the first ones). `--rollout`: `hf` (transformers generate) or `fast`
(the CUDA-graph engine; eager on the CPU).

The step's breakdown is the trainer's `time/*` metrics (docs/trainer.md), each the slowest
process's: generate, verify, sync (the first collective after generation: where the other
processes wait for the slowest generation), advantage, train, other; `time/generate_min` is the
fastest process's generation, so a straggler shows as the gap between the two. The table gives
their medians over the timed steps; the json keeps every step's values.

Two modes:
    python benchmarks/bench_multigpu.py drive --out DIR [--gpus 1,2] [--engines ddp,zero2] [--cpu]
        launches every (engine, process count) with its own timeout; failures are recorded as rows,
        not fatal; writes DIR/bench_multigpu_<rollout>.json and .md.
    accelerate launch --config_file recipes/accelerate/ddp.yaml --num_processes N \
        benchmarks/bench_multigpu.py worker --result FILE ...   (what `drive` runs)
`--cpu`: a tiny model on CPU processes (recipes/accelerate/cpu2.yaml) to check the script's logic
without a GPU; its figures mean nothing.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIGS = {"ddp": "ddp.yaml", "zero2": "zero2.yaml", "zero3": "zero3.yaml", "fsdp2": "fsdp2.yaml"}
"""Engine -> accelerate config in recipes/accelerate/."""
ROLLOUTS = ("hf", "fast", "auto")
VOCAB, PROMPT_LEN = 151936, 128
"""Qwen2-0.5B's vocabulary (the CPU model's too: its logits stay as wide) and the prompt tokens."""
PHASES = ("time/generate", "time/verify", "time/sync", "time/advantage", "time/train", "time/other")
"""The trainer's step phases (they add up to `time/step` on one process)."""


# ----------------------------------------------------------------------------- worker (one launch)

def build_model(cpu: bool):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    shape = (dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2) if cpu else
             dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                  num_key_value_heads=2))
    config = Qwen2Config(vocab_size=VOCAB, max_position_embeddings=32768, rope_theta=1e6,
                         tie_word_embeddings=True, pad_token_id=0, eos_token_id=1, **shape)
    torch.manual_seed(0)  # the same initial weights on every process
    device = "cpu" if cpu else f"cuda:{torch.cuda.current_device()}"
    with torch.device(device):
        model = Qwen2ForCausalLM(config)
    if not cpu:
        model = model.to(torch.bfloat16)
    model.generation_config.eos_token_id = 1
    model.generation_config.pad_token_id = 0
    return model


def worker(args) -> int:
    import torch
    from accelerate import PartialState

    from benchmarks.common import CountedTask, StopBenchmark, WordTask, rlvr_reward, word_tokenizer
    from rlvr.models.loading import Policy
    from rlvr.config import from_dict
    from rlvr.trainer.config import GRPOConfig
    from rlvr.trainer.distributed import use_cpu_processes
    from rlvr.trainer.grpo import run_grpo

    state = PartialState(cpu=use_cpu_processes())
    if args.cpu:
        torch.set_num_threads(1)
    measured = args.warmup + args.steps
    cfg = from_dict(GRPOConfig, dict(
        steps=measured + 1, prompts_per_step=args.prompts * state.num_processes, num_generations=args.group,
        max_new_tokens=args.new_tokens, temperature=1.0, template="plain", engine=args.rollout, kernels="auto",
        learning_rate=1e-6, loss_type="dapo", beta=0.0, micro_batch_size=args.micro_batch, save_every=0,
        sample_every=0, report_to="none", seed=0))
    policy = Policy(model=build_model(args.cpu), tokenizer=word_tokenizer(VOCAB))
    run_dir = Path(args.result).parent / "run"
    t0 = time.perf_counter()
    try:
        run_grpo(policy, CountedTask(WordTask(VOCAB, PROMPT_LEN), measured), cfg, run_dir, reward_fn=rlvr_reward)
    except StopBenchmark:
        pass
    wall = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    if state.is_main_process:
        rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
        Path(args.result).write_text(json.dumps(summarise(rows, args.warmup, wall, peak, state.num_processes)))
    state.wait_for_everyone()
    return 0


def summarise(rows: list[dict], warmup: int, wall: float, peak_gib, processes: int) -> dict:
    """Steady-state figures from metrics.jsonl rows (one per step, already reduced over processes)."""
    timed = [r for r in rows if r["step"] > warmup]
    if not timed:
        raise RuntimeError(f"no step after the {warmup} warm-up steps was logged ({len(rows)} rows)")
    seconds = [r["time/step"] for r in timed]
    tokens = [r["completions/tokens"] for r in timed]
    time_keys = sorted(k for k in rows[-1] if k.startswith("time/"))
    return {
        "processes": processes,
        "timed_steps": len(timed),
        "s_per_step": statistics.median(seconds),
        "s_per_step_max": max(seconds),
        "tokens_per_s": sum(tokens) / sum(seconds),
        "generate_s": statistics.median(r["time/generate"] for r in timed),
        "train_s": statistics.median(r["time/train"] for r in timed),
        "median_times": {k: statistics.median(r[k] for r in timed) for k in time_keys},
        "mean_completion_tokens": statistics.mean(r["completions/mean_length"] for r in timed),
        "step_times": [r["time/step"] for r in rows],
        "per_step_times": {k: [r[k] for r in rows] for k in time_keys},
        "peak_gib_rank0": peak_gib,
        "wall_s": wall,
    }


# ----------------------------------------------------------------------------- driver

@dataclass
class Result:
    engine: str
    processes: int
    status: str
    """ok, failed, timeout or skipped."""
    figures: dict | None = None
    note: str = ""


def drive(args) -> int:
    # SIGTERM (e.g. from `timeout`) unwinds through _launch, which kills the running launch
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    deadline = time.monotonic() + args.budget
    for n in [int(x) for x in args.gpus.split(",")]:
        for engine in args.engines.split(","):
            results.append(run_one(engine, n, args, deadline))
            print(f"[bench_multigpu] {engine} x{n}: {results[-1].status} {results[-1].note}", flush=True)
            table = write_results(out, args, results)  # after every configuration: a stopped drive keeps them
    print(table, flush=True)
    return 0


def write_results(out: Path, args, results: list[Result]) -> str:
    """DIR/bench_multigpu_<rollout>.json (the record) and .md (the table); returns the table."""
    title = (f"GRPO throughput, Qwen2-0.5B shape bf16, per GPU {args.prompts} prompts x G={args.group}, "
             f"prompt 128 + {args.new_tokens} new tokens, rollout {args.rollout}, {args.steps} timed steps "
             f"after {args.warmup}" + (" (CPU logic check: tiny model, figures meaningless)" if args.cpu else ""))
    record = {"title": title, "env": _environment(), "args": vars(args), "results": [asdict(r) for r in results]}
    (out / f"bench_multigpu_{args.rollout}.json").write_text(json.dumps(record, indent=1))
    table = markdown_table(title, results)
    (out / f"bench_multigpu_{args.rollout}.md").write_text(table)
    return table


def run_one(engine: str, n: int, args, deadline: float) -> Result:
    import torch

    if engine not in CONFIGS:
        return Result(engine, n, "skipped", note=f"unknown engine; valid: {', '.join(CONFIGS)}")
    if args.cpu and engine != "ddp":
        return Result(engine, n, "skipped", note="CPU check runs ddp only (DeepSpeed/FSDP need CUDA here)")
    if not args.cpu and torch.cuda.device_count() < n:
        return Result(engine, n, "skipped", note=f"{torch.cuda.device_count()} GPU(s) visible")
    left = deadline - time.monotonic()
    if left < 30:
        return Result(engine, n, "skipped", note="benchmark time budget spent")
    config = ROOT / "recipes" / "accelerate" / ("cpu2.yaml" if args.cpu else CONFIGS[engine])
    # a port of its own per launch: a previous launch's socket may still be closing
    port = 29500 + 100 * ROLLOUTS.index(args.rollout) + 10 * n + list(CONFIGS).index(engine)
    with tempfile.TemporaryDirectory(prefix=f"bench-{engine}-{n}-") as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
               "--num_processes", str(n), "--main_process_port", str(port),
               str(Path(__file__).resolve()), "worker", "--result", str(result),
               *_shared_flags(args)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               "OMP_NUM_THREADS": "1"}
        log = Path(args.out) / f"bench_multigpu_{args.rollout}_{engine}_x{n}.log"
        timeout = min(args.timeout, left)
        returncode = _launch(cmd, env, log, timeout)
        if returncode is None:
            return Result(engine, n, "timeout", note=f"over {timeout:.0f}s (log: {log.name})")
        if returncode != 0 or not result.is_file():
            return Result(engine, n, "failed", note=f"exit {returncode}: {_last_error(log)}")
        return Result(engine, n, "ok", figures=json.loads(result.read_text()))


def _launch(cmd: list[str], env: dict, log: Path, timeout: float) -> int | None:
    """The launch's exit status, or None after a timeout. On a timeout, or when the driver is
    stopped, the launch is killed with all its workers: workers left behind would hold GPUs and
    slow (or hang) the configurations after it."""
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        finally:
            if proc.poll() is None:
                _kill_tree(proc.pid)
                proc.wait()


def _kill_tree(pid: int) -> None:
    """SIGKILL `pid` and its descendants: torchrun starts each worker in a session of its own, so
    killing the launcher's process group misses them."""
    import psutil  # an accelerate dependency

    root = psutil.Process(pid)
    for p in root.children(recursive=True) + [root]:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()


def _shared_flags(args) -> list[str]:
    flags = ["--prompts", str(args.prompts), "--group", str(args.group), "--new-tokens", str(args.new_tokens),
             "--steps", str(args.steps), "--warmup", str(args.warmup), "--rollout", args.rollout,
             "--micro-batch", str(args.micro_batch)]
    return flags + (["--cpu"] if args.cpu else [])


def _last_error(log: Path) -> str:
    lines = [x for x in log.read_text(errors="replace").splitlines() if "Error" in x or "error" in x]
    return (lines[-1].strip()[:200] if lines else "no error line") + f" (log: {log.name})"


def markdown_table(title: str, results: list[Result]) -> str:
    """One row per run; speed-up = tokens/s over the same engine's 1-process tokens/s. Phase
    columns: medians over the timed steps of the slowest process's seconds; generate gives the
    fastest-slowest process range."""
    base = {r.engine: r.figures["tokens_per_s"] for r in results if r.status == "ok" and r.processes == 1}
    header = ["engine", "GPUs", "completion tok/s", "s/step", "generate s (min-max)", "verify s", "sync s",
              "advantage s", "train s", "other s", "tokens/completion", "peak GiB (rank 0)",
              "speed-up vs 1 GPU", "note"]
    lines = [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        if r.status != "ok":
            cells = [r.engine, str(r.processes)] + ["-"] * (len(header) - 3) + [f"{r.status}: {r.note}"]
        else:
            cells = _figure_cells(r, base)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _figure_cells(r: Result, base: dict) -> list[str]:
    f, t = r.figures, r.figures["median_times"]
    speedup = f"{f['tokens_per_s'] / base[r.engine]:.2f}x" if r.engine in base else "-"
    peak = "-" if f["peak_gib_rank0"] is None else f"{f['peak_gib_rank0']:.1f}"
    generate = f"{t['time/generate_min']:.2f}-{t['time/generate']:.2f}"
    phases = [f"{t[k]:.2f}" for k in PHASES[1:]]
    note = f"{f['timed_steps']} timed steps (slowest {f['s_per_step_max']:.2f}s), wall {f['wall_s']:.0f}s"
    return [r.engine, str(r.processes), f"{f['tokens_per_s']:,.0f}", f"{f['s_per_step']:.2f}", generate,
            *phases, f"{f['mean_completion_tokens']:.0f}", peak, speedup, note]


def _environment() -> dict:
    import torch
    import transformers

    try:
        import deepspeed
        ds = deepspeed.__version__
    except Exception:  # not installed (CPU check) or broken: the rows say what ran
        ds = None
    # the device copy's .git is absent or stale: the caller passes the tree's commit as RLVR_COMMIT
    commit = os.environ.get("RLVR_COMMIT") or _git_head()
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "torch": torch.__version__,
            "transformers": transformers.__version__, "deepspeed": ds, "commit": commit,
            "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
            "command": " ".join([Path(sys.executable).name, *sys.argv])}


def _git_head() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=ROOT, check=False).stdout.strip()
    except OSError:  # no git on the machine
        return ""


def _add_shared(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompts", type=int, help="prompts per GPU per step (default 8; --cpu: 2)")
    p.add_argument("--group", type=int, help="G: completions per prompt (default 8; --cpu: 4)")
    p.add_argument("--new-tokens", type=int, help="max completion tokens (default 128; --cpu: 16)")
    p.add_argument("--steps", type=int, default=8, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed first steps")
    p.add_argument("--rollout", default="hf", choices=ROLLOUTS, help="rollout engine")
    p.add_argument("--micro-batch", type=int, default=0, help="sequences per forward/backward (0 = all)")
    p.add_argument("--cpu", action="store_true", help="tiny model on CPU processes (logic check)")


def _default_sizes(args) -> None:
    """The GPU batch, or a small one for --cpu (a 152k vocabulary makes the full batch's logits
    gigabytes: minutes per step on a CPU)."""
    sizes = {"prompts": 2, "group": 4, "new_tokens": 16} if args.cpu else \
        {"prompts": 8, "group": 8, "new_tokens": 128}
    for name, value in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="mode", required=True)
    d = sub.add_parser("drive", help="run every configuration and write the table")
    d.add_argument("--out", default=os.environ.get("OUT", "bench-out"))
    d.add_argument("--gpus", default="1,2", help="process counts")
    d.add_argument("--engines", default="ddp,zero2", help=f"comma list of {', '.join(CONFIGS)}")
    d.add_argument("--timeout", type=float, default=150, help="seconds per configuration")
    d.add_argument("--budget", type=float, default=420, help="seconds for all configurations")
    _add_shared(d)
    w = sub.add_parser("worker", help="one launched run (used by drive)")
    w.add_argument("--result", required=True)
    _add_shared(w)
    args = p.parse_args(argv)
    _default_sizes(args)
    return drive(args) if args.mode == "drive" else worker(args)


if __name__ == "__main__":
    raise SystemExit(main())
