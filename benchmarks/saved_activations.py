"""What a GRPO training forward keeps for its backward, per policy configuration, counted exactly on
the CPU: the activation bytes a decoder layer saves per token, and the bfloat16 weight casts
autocast saves per layer (frozen float32 weights cast for each forward).

One decoder layer of `--shape` (default the Qwen2.5-7B shape; random weights) is prepared as
rlvr's `load_policy` prepares a policy (`common.rlvr_policy`: the precision's weight dtype, LoRA
adapters with `--dropout`), put in train mode, and run forward over `--tokens` tokens under the
autocast `run_grpo` uses (accelerate's bf16 under bf16-mixed, none otherwise), inside
`torch.autograd.graph.saved_tensors_hooks` that records every tensor saved for backward. A
storage is counted once; the policy's own parameters are not counted (they are resident anyway).
The projection multiplies by the shape's layer count and `--micro-batch-tokens` (bench_memory's
default micro-batch: 8 sequences of 128 + 512 tokens).

The CPU runs torch's RMSNorm, SiLU and SDPA, which save more than the fused Triton kernels the GPU
trainer patches in, so the absolute figures are an upper bound for the GPU; the differences between
configurations come from the projections and adapters, which are the same ops on both.

    python benchmarks/saved_activations.py [--shape 7b] [--configs full_bf16,lora,...]
        [--dropout 0,0.05] [--tokens 256] [--micro-batch-tokens 5120] [--out FILE]
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_memory import CONFIGS  # noqa: E402
from benchmarks.common import SHAPES, Row, out_path, rlvr_policy, save, shape_label  # noqa: E402


def one_layer_model(shape: str):
    """The shape's first decoder layer alone (a 512-entry vocabulary: the embedding and head are
    outside what is counted), float32 on the CPU as `common.build_model` builds it."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    dims = {**SHAPES[shape], "num_hidden_layers": 1, "vocab_size": 512}
    config = Qwen2Config(**dims, max_position_embeddings=32768, rope_theta=1e6, bos_token_id=None, pad_token_id=0)
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config)


def saved_bytes(config: str, shape: str, dropout: float, tokens: int) -> dict[str, float]:
    """Bytes one layer's training forward saves for backward: activations per token, and the
    weight-sized tensors (autocast's casts of the layer's weights) per layer."""
    from rlvr.models.config import LoraSettings
    from rlvr.models.precision import accelerate_mixed_precision

    setup = CONFIGS[config]
    lora = LoraSettings(dropout=dropout) if setup.lora else None
    model = rlvr_policy(one_layer_model(shape), None, setup.precision, lora=lora).model.train()
    own = {p.untyped_storage().data_ptr() for p in model.parameters()}
    weight_shapes = {s for p in model.parameters() if p.dim() == 2 for s in (tuple(p.shape), tuple(p.shape)[::-1])}
    saved: dict[int, tuple[int, bool]] = {}

    def record(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in own:
            saved[storage.data_ptr()] = (storage.nbytes(), tuple(t.shape) in weight_shapes)
        return t

    autocast = accelerate_mixed_precision(setup.precision) == "bf16"
    decoder = (model.get_base_model() if setup.lora else model).model
    ids = torch.randint(0, 512, (1, tokens))
    with torch.autograd.graph.saved_tensors_hooks(record, lambda t: t), \
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        decoder(input_ids=ids)
    activations = sum(n for n, is_weight in saved.values() if not is_weight)
    casts = sum(n for n, is_weight in saved.values() if is_weight)
    return {"activation_bytes_per_token": activations / tokens, "weight_cast_bytes": casts}


def row(config: str, dropout: float | None, measured: dict, layers: int, micro_tokens: int) -> dict:
    act, casts = measured["activation_bytes_per_token"], measured["weight_cast_bytes"]
    return {"config": config, "precision": CONFIGS[config].precision, "dropout": dropout, **measured,
            "activations_kib_per_token_layer": round(act / 1024, 1),
            "weight_casts_mib_per_layer": round(casts / 2**20, 1),
            "micro_batch_gib": round((act * micro_tokens + casts) * layers / 2**30, 2)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="7b", choices=sorted(SHAPES))
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma list of {', '.join(CONFIGS)}")
    p.add_argument("--dropout", default="0,0.05", help="LoRA dropout values to count (comma list)")
    p.add_argument("--tokens", type=int, default=256, help="tokens in the counted forward")
    p.add_argument("--micro-batch-tokens", type=int, default=8 * 640, help="tokens of the projected micro-batch")
    p.add_argument("--out", default=out_path("saved_activations.json"))
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*")
    layers = SHAPES[args.shape]["num_hidden_layers"]
    rows = []
    for config in args.configs.split(","):
        dropouts = [float(d) for d in args.dropout.split(",")] if CONFIGS[config].lora else [None]
        for dropout in dropouts:
            measured = saved_bytes(config, args.shape, dropout or 0.0, args.tokens)
            rows.append(row(config, dropout, measured, layers, args.micro_batch_tokens))
    print(f"\n## Saved for backward, {shape_label(args.shape)} ({layers} layers), CPU count; projected to a "
          f"micro-batch of {args.micro_batch_tokens} tokens")
    print("| config | precision | LoRA dropout | activations KiB/token/layer | weight casts MiB/layer "
          "| micro-batch GiB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        dropout = "-" if r["dropout"] is None else f"{r['dropout']:g}"
        print(f"| {r['config']} | {r['precision']} | {dropout} | {r['activations_kib_per_token_layer']} | "
              f"{r['weight_casts_mib_per_layer']} | {r['micro_batch_gib']} |")
    title = f"saved for backward per micro-batch of {args.micro_batch_tokens} tokens, {shape_label(args.shape)}"
    save(args.out, title, [Row(name=f"{r['config']} dropout {r['dropout']}", value=r["micro_batch_gib"], unit="GiB")
                           for r in rows], {"shape": args.shape, "tokens": args.tokens, "configs": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
