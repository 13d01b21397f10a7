"""How much of an AdamW trajectory each precision keeps on a real model's weights. One float32 copy
of the policy (what bf16-mixed's masters are) takes `--steps` AdamW steps on its own gradients;
the same gradients, rounded to bfloat16, step a pure bfloat16 copy (torch AdamW) and a bf16-kahan
copy (KahanAdamW). All three start from the same bfloat16-representable weights, so what differs
at the end is only what the optimizer kept of each step.

    python benchmarks/precision_drift.py [--model smollm2-135m] [--lr 1e-6] [--steps 20] [--batch 8] [--out FILE]

Reported per copy: `kept` = projection of its total update on the float32 one over that one's
squared norm (1: all of it; 0: none), the cosine between the two, and the fraction of weights that
moved at all. For bf16-kahan the weights alone (what the forward reads) and weights + compensation
(what the next steps build on); for the float32 copy also its weights rounded to bfloat16, which is
what bf16-mixed's forward (autocast) and its generation copy read. The loss is next-token
cross-entropy on worked arithmetic solutions in the model's chat template; the learning rate is
GRPO's on SmolLM2 (the recipes' 1e-6). About two minutes on a 2-core CPU for SmolLM2-135M;
`--model tiny` is a smoke run.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import Row, out_path, save  # noqa: E402


def batches(tokenizer, n: int, size: int, seed: int = 0) -> list[dict]:
    """`n` batches of `size` prompt + worked-solution texts from the arithmetic generator."""
    from rlvr.tasks import make_task
    from rlvr.trainer.sft import worked_solution_pairs

    examples = make_task("arithmetic", seed=seed, difficulty=2, ops=["+"]).sample(n * size)
    pairs = worked_solution_pairs(examples, tokenizer, "r1_chat" if tokenizer.chat_template else "plain")
    texts = [p["prompt"] + p["completion"] for p in pairs]
    out = []
    for i in range(n):
        enc = tokenizer(texts[i * size:(i + 1) * size], return_tensors="pt", padding=True)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        out.append({**enc, "labels": labels})
    return out


def drift(model, tokenizer, steps: int, batch: int, lr: float) -> dict:
    """The three copies' updates after `steps` steps, measured against the float32 one."""
    from rlvr.trainer.optimizer import KahanAdamW

    master = [p for p in model.parameters() if p.requires_grad]
    with torch.no_grad():  # start where a bfloat16 checkpoint would: every copy holds the same values
        for p in master:
            p.copy_(p.bfloat16().float())
    start = [p.detach().clone() for p in master]
    pure = [p.detach().bfloat16().requires_grad_() for p in master]
    kahan = [p.detach().bfloat16().requires_grad_() for p in master]
    settings = dict(lr=lr, weight_decay=0.0, betas=(0.9, 0.999))
    optimizers = [torch.optim.AdamW(master, **settings), torch.optim.AdamW(pure, **settings),
                  KahanAdamW(kahan, **settings)]
    losses = []
    for b in batches(tokenizer, steps, batch):
        model.zero_grad(set_to_none=True)
        loss = model(**b).loss
        loss.backward()
        losses.append(loss.item())
        for copy in (pure, kahan):
            for p, m in zip(copy, master):
                p.grad = m.grad.bfloat16()
        for opt in optimizers:
            opt.step()
    # float64 for the sums over every weight: float32 dot products of 135M terms drift past cosine 1
    reference = torch.cat([(p.detach() - s).flatten() for p, s in zip(master, start)]).double()
    comp = optimizers[2].state
    copies = {"bf16 (torch AdamW)": [p.detach().float() for p in pure],
              "bf16-kahan, weights": [p.detach().float() for p in kahan],
              "bf16-kahan, weights + compensation": [p.detach().float() + comp[p]["compensation"].float()
                                                     for p in kahan],
              # what bf16-mixed's autocast forward and generation copy read of its masters
              "float32 masters rounded to bf16": [p.detach().bfloat16().float() for p in master]}
    out = {"losses": losses, "reference_norm": reference.norm().item(), "copies": {}}
    for name, weights in copies.items():
        delta = torch.cat([(w - s).flatten() for w, s in zip(weights, start)]).double()
        out["copies"][name] = {"kept": (delta @ reference / (reference @ reference)).item(),
                               "cosine": torch.nn.functional.cosine_similarity(delta, reference, dim=0).item(),
                               "moved": (delta != 0).float().mean().item()}
    rounded = torch.cat([p.detach().bfloat16().flatten() for p in master])
    kahan_weights = torch.cat([p.detach().flatten() for p in kahan])
    out["kahan_equals_rounded_masters"] = (kahan_weights == rounded).float().mean().item()
    out["copies"]["float32 masters (bf16-mixed)"] = {"kept": 1.0, "cosine": 1.0,
                                                     "moved": (reference != 0).float().mean().item()}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m", help="a ModelConfig name_or_path (tiny: smoke run)")
    p.add_argument("--lr", type=float, default=1e-6)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--out", default=out_path("precision_drift.json"))
    args = p.parse_args(argv)
    from rlvr.models import ModelConfig, load_policy

    torch.manual_seed(0)
    policy = load_policy(ModelConfig(name_or_path=args.model, precision="fp32"), device="cpu")
    result = drift(policy.model, policy.tokenizer, args.steps, args.batch, args.lr)
    title = f"update kept after {args.steps} AdamW steps at lr {args.lr:g}, {args.model}"
    print(f"\n## {title} (loss {result['losses'][0]:.3f} -> {result['losses'][-1]:.3f}, "
          f"float32 update norm {result['reference_norm']:.3e})")
    print("| copy | kept | cosine | weights moved |")
    print("|---|---|---|---|")
    for name, c in result["copies"].items():
        print(f"| {name} | {c['kept']:.4f} | {c['cosine']:.4f} | {c['moved']:.3f} |")
    equal = result["kahan_equals_rounded_masters"]
    print(f"bf16-kahan weights equal to the float32 masters rounded to bf16: {equal:.6f}")
    rows = [Row(name=name, value=c["kept"], unit="fraction kept") for name, c in result["copies"].items()]
    save(args.out, title, rows, {"model": args.model, "lr": args.lr, "steps": args.steps, "batch": args.batch,
                                 **result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
