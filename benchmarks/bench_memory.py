"""GPU memory of one rlvr GRPO step at the Qwen2.5-7B shape: does the policy's training state plus
the fast engine's KV cache and stacked projection copies fit one GPU (no ZeRO, no offload)?

Configurations (`--configs`), each run with the fast engine's `stack_projections` on and off
(`--stacked`):
- `lora`: peft LoRA with rlvr's defaults (r=16 on q,k,v,o,gate,up,down, no dropout) around frozen
  bfloat16 base weights, precision bf16 (float32 adapters, as peft makes them, without autocast);
- `lora_bf16_mixed`: the same under bf16-mixed, the CUDA default (the frozen base stays bfloat16,
  float32 adapters, bfloat16 autocast); both generate from a merged copy (the engine's default
  `merge_lora`: the adapted weights in bfloat16, the rest shared);
- `lora_bf16_mixed_peft`: the same generating through peft's adapters (`merge_lora: false`; the
  copy holds the adapters alone);
- `full_bf16`: every weight trains, precision bf16 (bfloat16 weights, gradients, AdamW state);
- `full_bf16_mixed`: precision bf16-mixed (float32 master weights, gradients and AdamW state,
  bfloat16 autocast, generation from a bfloat16 copy; what `bench_grpo_step.py --precision
  bf16-mixed` runs);
- `full_bf16_kahan`: precision bf16-kahan (bfloat16 weights and gradients, `KahanAdamW`: float32
  moments and a bfloat16 compensation; generation reads the weights).

Each configuration builds its own model (random weights, built on the GPU; `--shape`, default 7b)
and prepares it as rlvr's `load_policy` does (`common.rlvr_policy`); building a 7B model on the
GPU takes seconds. Shared between configurations: only the process (Triton's compiled kernels, the
tokenizer); the accelerate state is reset and every tensor freed before the next one. Phases, each
with its CUDA peak (`torch.cuda.max_memory_allocated`, reset at the start of each phase):
1. load: build, cast to the precision's weight dtype, wrap in LoRA. Its peak includes building in
   float32 before the cast (a random-init artefact: a checkpoint loads in its own dtype), so the
   figure reported is what stays resident after it;
2. generate: rlvr's `run_grpo` set-up (optimizer, generation copy, fast engine) and the step's
   rollout of N = `--prompts` x `--group` sequences, `--prompt-len` + `--new-tokens` tokens;
3. update: the same step's loss, backward (micro-batches of `--micro-batch` sequences) and AdamW
   step. The KV cache and stacked copies stay allocated meanwhile (the engine keeps them).
peak step = the larger of the two; step s = the trainer's `time/step` of that single step
(it includes CUDA-graph capture, and Triton compilation in the first configuration).

`--micro-batch` defaults to 8 sequences, not rlvr's 0 (the whole batch in one pass): at the 7B
shape the activations of 64 x 640 tokens alone (about 200 GB by estimate) would exceed one GPU
without `--checkpointing` (activation checkpointing, `model.gradient_checkpointing`).

Analytic sizes (bytes; from a meta-device replica of the configuration, nothing allocated):
weights; gradients (of the trainable weights); AdamW state (exp_avg + exp_avg_sq, in each weight's
dtype; float32 under bf16-kahan, plus its compensation in the weight's dtype); the generation copy
(`GenerationWeights` built on the meta replica: a bfloat16 copy whenever a weight is wider, i.e.
bf16-mixed's masters and LoRA's float32 adapters, or LoRA's merged copy; frozen bfloat16 weights are
shared, not counted); the KV cache (K and V, per
layer N x kv_heads x S x head_dim, S = prompt + new - 1 rounded up to the engine's length bucket);
the stacked copies (per layer q/k/v weights and biases, gate/up weights; none for LoRA projections,
which the engine does not stack). Activations and allocator overhead are what the measured peaks
add.

An out-of-memory error is caught and recorded (phase, peak reached, the failed allocation), the
configuration's tensors are freed and the next one runs; the JSON is rewritten after every one,
and no configuration starts after `--budget` seconds (the device part's timeout is 330 s).

    python benchmarks/bench_memory.py [--shape 7b]
        [--configs lora,lora_bf16_mixed,lora_bf16_mixed_peft,full_bf16,full_bf16_mixed,full_bf16_kahan]
        [--stacked on,off] [--prompts 8] [--group 8] [--prompt-len 128] [--new-tokens 512] [--micro-batch 8]
        [--checkpointing] [--budget 270] [--analytic-only] [--out FILE]

`--analytic-only` prints the analytic sizes alone (no device needed). `--device cpu --shape tiny`: a
smoke run of every phase; the CPU has no CUDA peak, so only the analytic sizes are figures.
"""
from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (SHAPES, Row, WordTask, build_model, grpo_config, memory_gib, out_path,  # noqa: E402
                               rlvr_policy, rlvr_reward, run_grpo_steps, save, shape_label, word_tokenizer)


@dataclass(frozen=True)
class Setup:
    precision: str
    lora: bool
    merge_lora: bool = True
    """The engine's merge_lora (LoRA configurations): generate from a merged copy, or through peft."""


CONFIGS = {"lora": Setup("bf16", lora=True), "lora_bf16_mixed": Setup("bf16-mixed", lora=True),
           "lora_bf16_mixed_peft": Setup("bf16-mixed", lora=True, merge_lora=False),
           "full_bf16": Setup("bf16", lora=False),
           "full_bf16_mixed": Setup("bf16-mixed", lora=False), "full_bf16_kahan": Setup("bf16-kahan", lora=False)}
PHASES = ("load", "generate", "update")
GIB = 2**30


@dataclass
class Workload:
    shape: str
    device: str
    prompts: int
    group: int
    prompt_len: int
    new_tokens: int
    micro_batch: int
    checkpointing: bool

    @property
    def sequences(self) -> int:
        return self.prompts * self.group

    @property
    def vocab(self) -> int:
        return SHAPES[self.shape]["vocab_size"]


# ----------------------------------------------------------------------------- analytic sizes

def head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def cache_length(prompt_len: int, new_tokens: int, bucket: int) -> int:
    """The engine's cache length S: the last sampled token is never written, so prompt + new - 1
    columns, rounded up to the length bucket (as `FastEngine._state`)."""
    return -(-(prompt_len + new_tokens - 1) // bucket) * bucket


def kv_cache_bytes(config, sequences: int, length: int, itemsize: int) -> int:
    """K and V of every layer, each (N, kv_heads, S, head_dim) (`DecodeState`)."""
    per_layer = sequences * config.num_key_value_heads * length * head_dim(config) * itemsize
    return 2 * config.num_hidden_layers * per_layer


def stacked_bytes(config, qkv_bias: bool, itemsize: int, weights: bool = True) -> int:
    """`StackedProjections`: per layer q/k/v's weights (and biases) in one matrix, gate/up's in another.
    `weights` False: the weight stacks are views (a generation copy), only the biases are copied."""
    qkv_rows = (config.num_attention_heads + 2 * config.num_key_value_heads) * head_dim(config)
    per_layer = (qkv_rows if qkv_bias else 0) \
        + (qkv_rows * config.hidden_size + 2 * config.intermediate_size * config.hidden_size if weights else 0)
    return config.num_hidden_layers * per_layer * itemsize


def generation_model(model, setup: Setup):
    """What `run_grpo`'s engine reads for `model` (`GenerationWeights`; on a meta-device model
    nothing is allocated): the model itself, a copy in the generation dtype, or a LoRA policy's
    merged copy."""
    from rlvr.models.generation_weights import GenerationWeights
    from rlvr.models.precision import compute_dtype

    return GenerationWeights(model, compute_dtype(setup.precision), merge_lora=setup.merge_lora).model


def generation_copy_bytes(generation, model) -> int:
    """What the generation copy allocates: its parameters that are not `model`'s own (frozen
    weights already in the generation dtype, e.g. a LoRA base or its embeddings, are shared)."""
    own = {id(p) for p in model.parameters()}
    return sum(p.nbytes for p in generation.parameters() if id(p) not in own)


def engine_stacks(model) -> bool:
    """Whether the fast engine's Triton path stacks this model's projections (plain nn.Linear;
    not LoRA layers)."""
    from rlvr.rollout.fast_forward import ModelParts
    from rlvr.rollout.fast_stacked import StackedProjections

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return StackedProjections.fits(ModelParts.of(base))


def analytic_sizes(model, generation, precision: str, stacked: bool, work: Workload, bucket: int) -> dict[str, int]:
    """Bytes of each part of a configuration's memory, from its (meta-device) policy model and what
    the engine reads for it (`generation_model`)."""
    from rlvr.models.precision import compute_dtype

    dtype = compute_dtype(precision)  # what generation reads: the KV cache and stacked copies too
    trainable = sum(p.nbytes for p in model.parameters() if p.requires_grad)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    qkv_bias = base.model.layers[0].self_attn.q_proj.bias is not None
    length = cache_length(work.prompt_len, work.new_tokens, bucket)
    return {
        "weights": sum(p.nbytes for p in model.parameters()),
        "grads": trainable,
        "adam_state": optimizer_state_bytes(model, precision),
        "generation_copy": generation_copy_bytes(generation, model),
        "kv_cache": kv_cache_bytes(base.config, work.sequences, length, dtype.itemsize),
        # a generation copy lays its projections out for stacking (copies.pack_sibling_linears): stacks are views
        "stacked": stacked_bytes(base.config, qkv_bias, dtype.itemsize, weights=generation is model)
        if stacked and engine_stacks(generation) else 0,
    }


def optimizer_state_bytes(model, precision: str) -> int:
    """AdamW's moments in each trainable weight's dtype; KahanAdamW's in float32, plus a
    compensation in the weight's dtype for bfloat16 weights."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if precision != "bf16-kahan":
        return sum(2 * p.nbytes for p in trainable)
    return sum(8 * p.numel() + (p.nbytes if p.dtype == torch.bfloat16 else 0) for p in trainable)


# ----------------------------------------------------------------------------- measurement

def policy_for(setup: Setup, work: Workload, tokenizer, device: str):
    """The configuration's rlvr Policy on `device` ("meta": shapes and dtypes only)."""
    from rlvr.models.config import LoraSettings

    model = build_model(work.shape, device, eos_token_id=1, train=True)
    return rlvr_policy(model, tokenizer, setup.precision, lora=LoraSettings() if setup.lora else None,
                       checkpointing=work.checkpointing)


def cuda_gib(record: dict, peak: bool = False) -> float | None:
    """CUDA memory now (or its peak), GiB; None for a CPU run."""
    return memory_gib(peak) if record["device"] == "cuda" else None


def start_phase(record: dict, phase: str) -> None:
    record["phase"] = phase
    if record["device"] == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def end_phase(record: dict) -> None:
    record["peak_gib"][record["phase"]] = cuda_gib(record, peak=True)


def run_phases(setup: Setup, stacked: bool, work: Workload, tokenizer, record: dict, workdir: Path) -> None:
    """Load, then one GRPO step (generate, update), filling `record` as each phase ends."""
    start_phase(record, "load")
    policy = policy_for(setup, work, tokenizer, work.device)
    end_phase(record)
    record["after_load_gib"] = cuda_gib(record)

    def reward_after_rollout(*args):  # run_grpo scores right after the rollout: generate ends here
        if record["phase"] == "generate":
            end_phase(record)
            start_phase(record, "update")
        return rlvr_reward(*args)

    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)  # one mixed-precision mode per state: the next config may differ
    cfg = grpo_config(work.prompts, work.group, work.new_tokens, steps=1, micro_batch_size=work.micro_batch,
                      engine={"name": "fast", "stack_projections": stacked, "merge_lora": setup.merge_lora})
    start_phase(record, "generate")
    metrics = run_grpo_steps(policy, WordTask(work.vocab, work.prompt_len), cfg, workdir,
                             reward_fn=reward_after_rollout)
    end_phase(record)
    record["phase"] = None
    step = metrics[0]
    record.update(step_s=step["time/step"], generate_s=step["time/generate"], train_s=step["time/train"])


def out_of_memory(error: BaseException) -> bool:
    """torch's OOM, or one reported by a Triton launch as a plain RuntimeError."""
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()


def new_record(name: str, stacked: bool, work: Workload, tokenizer) -> dict:
    """A configuration's record: its analytic sizes (from a meta-device replica), nothing measured yet."""
    from rlvr.rollout.engine_config import FastEngineConfig

    setup = CONFIGS[name]
    meta = policy_for(setup, work, tokenizer, "meta").model
    generation = generation_model(meta, setup)
    bucket = FastEngineConfig().length_bucket
    return {"config": name, "stacked": stacked, "precision": setup.precision, "device": work.device,
            "analytic_bytes": analytic_sizes(meta, generation, setup.precision, stacked, work, bucket),
            "engine_stacks": stacked and engine_stacks(generation), "phase": None,
            "peak_gib": {}, "after_load_gib": None,
            "step_s": None, "oom": None, "error": None, "skipped": False, "warnings": [], "left_after_gib": None}


def measure(record: dict, work: Workload, tokenizer, workdir: Path) -> None:
    """Fill `record` with each phase's peak and the step time, or where it ran out of memory.
    Everything the configuration allocated is freed before it returns."""
    setup = CONFIGS[record["config"]]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            run_phases(setup, record["stacked"], work, tokenizer, record, workdir)
        except Exception as e:  # noqa: BLE001 -- recorded; the next configuration still runs
            message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if out_of_memory(e):
                record["oom"] = {"phase": record["phase"], "reached_gib": cuda_gib(record, peak=True),
                                 "error": message.split(". GPU")[0][:200]}
            else:
                import traceback

                traceback.print_exc()
                record["error"] = f"{record['phase']}: {type(e).__name__}: {message[:200]}"
    record["warnings"] = sorted({str(w.message).splitlines()[0][:200] for w in caught})
    free_memory()
    record["left_after_gib"] = cuda_gib(record)  # what a configuration leaks into the next (should be ~0)


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- report

def note(record: dict) -> str:
    parts = []
    if record["oom"]:
        oom = record["oom"]
        reached = "" if oom["reached_gib"] is None else f" (reached {oom['reached_gib']:.1f} GiB)"
        parts.append(f"OOM at phase {oom['phase']}{reached}: {oom['error']}")
    if record["error"]:
        parts.append(f"failed at {record['error']}")
    if record["skipped"]:
        parts.append("skipped: --budget spent")
    if record["stacked"] and not record["engine_stacks"]:
        parts.append("no stacked copies (LoRA projections are not stacked)")
    parts += [w for w in record["warnings"] if w.startswith("fast engine")]  # a kernel fallback
    if record["device"] != "cuda":
        parts.append("cpu: no CUDA peak")
    return "; ".join(parts)


def peak_step(record: dict) -> float | None:
    peaks = [record["peak_gib"].get(p) for p in ("generate", "update")]
    return max(peaks) if None not in peaks else None


def gib(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def print_measured(title: str, records: list[dict]) -> None:
    print(f"\n## {title}")
    print("| config | stacked | after load GiB | peak generate GiB | peak step GiB | step s | note |")
    print("|---|---|---|---|---|---|---|")
    for r in records:
        step_s = "-" if r["step_s"] is None else f"{r['step_s']:.1f}"
        print(f"| {r['config']} | {'on' if r['stacked'] else 'off'} | {gib(r['after_load_gib'])} | "
              f"{gib(r['peak_gib'].get('generate'))} | {gib(peak_step(r))} | {step_s} | {note(r)} |")
    sys.stdout.flush()


def print_analytic(title: str, records: list[dict]) -> None:
    parts = ("weights", "grads", "adam_state", "generation_copy", "kv_cache", "stacked")
    largest = max((sum(r["analytic_bytes"].values()) for r in records), default=0)
    unit, scale = ("GiB", GIB) if largest >= GIB else ("MiB", 2**20)  # MiB for the tiny smoke shape
    print(f"\n## {title}: analytic sizes, {unit} (activations not included)")
    print("| config | stacked | " + " | ".join(parts) + " | sum |")
    print("|---|---|" + "---|" * (len(parts) + 1))
    for r in records:
        sizes = r["analytic_bytes"]
        cells = [f"{sizes[p] / scale:.2f}" for p in parts] + [f"{sum(sizes.values()) / scale:.2f}"]
        print(f"| {r['config']} | {'on' if r['stacked'] else 'off'} | " + " | ".join(cells) + " |")
    sys.stdout.flush()


def rows_of(records: list[dict]) -> list[Row]:
    """The common record's rows: each configuration's peak step memory."""
    return [Row(f"{r['config']} stacked {'on' if r['stacked'] else 'off'}", peak_step(r), "GiB",
                peak_gib=peak_step(r), note=note(r)) for r in records]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="7b", choices=sorted(SHAPES))
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma list of {', '.join(CONFIGS)}")
    p.add_argument("--stacked", default="on,off", help="stack_projections settings to run: on, off or on,off")
    p.add_argument("--prompts", type=int, default=8, help="prompts per step")
    p.add_argument("--group", type=int, default=8, help="samples per prompt")
    p.add_argument("--prompt-len", type=int, default=128, help="prompt tokens (>= 3)")
    p.add_argument("--new-tokens", type=int, default=512)
    p.add_argument("--micro-batch", type=int, default=8, help="sequences per forward/backward (0 = all)")
    p.add_argument("--checkpointing", action="store_true", help="activation checkpointing")
    p.add_argument("--analytic-only", action="store_true", help="print the analytic sizes, measure nothing")
    p.add_argument("--budget", type=float, default=270, help="seconds after which no configuration starts")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cpu: a smoke run (--shape tiny)")
    p.add_argument("--out", default=out_path("bench_memory.json"))
    args = p.parse_args(argv)
    names = [c for c in args.configs.split(",") if c]
    if set(names) - set(CONFIGS):
        raise SystemExit(f"unknown configs {sorted(set(names) - set(CONFIGS))}; valid: {', '.join(CONFIGS)}")
    switches = [s for s in args.stacked.split(",") if s]
    if set(switches) - {"on", "off"}:
        raise SystemExit(f"--stacked takes on, off or on,off; got {args.stacked!r}")
    stacks = [s == "on" for s in switches]
    if args.prompt_len < 3:
        raise SystemExit("--prompt-len must be >= 3 (the template takes two tokens)")
    work = Workload(args.shape, args.device, args.prompts, args.group, args.prompt_len, args.new_tokens,
                    args.micro_batch, args.checkpointing)
    tokenizer = word_tokenizer(work.vocab)
    title = (f"GRPO step memory, {shape_label(args.shape)}, {args.prompts} prompts x G={args.group}, prompt "
             f"{args.prompt_len} + {args.new_tokens} new, micro-batch {args.micro_batch or 'all'}"
             f"{', checkpointing' if args.checkpointing else ''}")
    extra = {"shape": args.shape, "prompts": args.prompts, "group": args.group, "prompt_len": args.prompt_len,
             "new_tokens": args.new_tokens, "micro_batch": args.micro_batch, "checkpointing": args.checkpointing}
    records, deadline = [], time.monotonic() + args.budget
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            for stacked in stacks:
                records.append(new_record(name, stacked, work, tokenizer))
                if args.analytic_only:
                    continue
                if time.monotonic() > deadline:
                    records[-1]["skipped"] = True
                    continue
                measure(records[-1], work, tokenizer, Path(tmp) / f"{name}-stacked-{stacked}")
                print(f"[bench_memory] {name} stacked {'on' if stacked else 'off'}: peak step "
                      f"{gib(peak_step(records[-1]))} GiB; {note(records[-1])}", flush=True)
                save(args.out, title, rows_of(records), {**extra, "configs": records})  # a stopped run keeps them
    print_analytic(title, records)
    if not args.analytic_only:
        print_measured(title, records)
    save(args.out, title, rows_of(records), {**extra, "configs": records})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
