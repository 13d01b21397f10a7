"""Step metrics: reduced across processes, then written to the console (progress bar),
`metrics.jsonl`, accelerate trackers (TensorBoard / W&B) and `samples.jsonl`.

Reductions are sums (and maxima) of fixed-length vectors, so every process takes part in exactly
the same collectives whatever its data (a rank that skips one hangs the run).
"""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import torch
from tqdm.auto import tqdm

from rlvr.trainer.batch import Samples

PROGRESS_KEYS = {"reward/mean": "reward", "accuracy": "acc", "completions/mean_length": "len",
                 "kl/mean": "kl", "grad_norm": "gnorm"}


def reduce_sum(acc, values: list[float]) -> list[float]:
    """Element-wise sum over processes (float64)."""
    if acc.num_processes == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=acc.device)
    return acc.reduce(t, reduction="sum").tolist()  # host sync: metrics are needed on the host


def reduce_max(acc, values: list[float]) -> list[float]:
    if acc.num_processes == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=acc.device)
    return acc.gather(t.unsqueeze(0)).amax(dim=0).tolist()


def sample_metrics(acc, samples: Samples, group_size: int, kinds: list[str]) -> dict[str, float]:
    """Reward, accuracy, group-variance and length statistics over every completion sampled this
    step on every process. `kinds`: the same ordered list on every process."""
    groups = samples.group_rewards(group_size)
    lengths = [len(c) for c in samples.completion_ids]
    local = [float(len(samples)), sum(samples.rewards), sum(r * r for r in samples.rewards),
             float(sum(samples.correct)), float(len(groups)),
             float(sum(1 for g in groups if max(g) == min(g))), float(sum(lengths)),
             float(sum(samples.truncated))]
    for kind in kinds:
        col = [x for x in samples.per_verifier.get(kind, []) if not math.isnan(x)]
        local += [float(len(col)), sum(col)]
    s = reduce_sum(acc, local)
    (max_len,) = reduce_max(acc, [float(max(lengths, default=0))])
    n, total, sq, correct, n_groups, zero_std, tokens, trunc = s[:8]
    mean = total / n
    out = {
        "reward/mean": mean,
        "reward/std": math.sqrt(max(sq / n - mean * mean, 0.0)),
        "accuracy": correct / n,
        "frac_reward_zero_std": zero_std / n_groups,
        "completions/mean_length": tokens / n,
        "completions/max_length": max_len,
        "completions/clipped_ratio": trunc / n,
        "completions/tokens": tokens,
    }
    for j, kind in enumerate(kinds):
        count, value = s[8 + 2 * j], s[9 + 2 * j]
        if count:
            out[f"reward/{kind}/mean"] = value / count
    return out


def resolve_trackers(report_to: str) -> list[str]:
    if report_to == "none":
        return []
    if report_to == "auto":
        installed = importlib.util.find_spec("tensorboard") is not None
        return ["tensorboard"] if installed else []
    names = [x.strip() for x in report_to.split(",") if x.strip()]
    unknown = sorted(set(names) - {"tensorboard", "wandb"})
    if unknown:
        raise ValueError(f"report_to: unknown tracker(s) {unknown}; valid: auto, none, tensorboard, wandb")
    return names


class MetricsLogger:
    """Main-process writer of metrics and samples; other processes only take part in reductions."""

    def __init__(self, output_dir: Path, acc, total_steps: int, start_step: int, log_every: int):
        self.acc = acc
        self.log_every = log_every
        self.metrics_path = Path(output_dir) / "metrics.jsonl"
        self.samples_path = Path(output_dir) / "samples.jsonl"
        self.bar = tqdm(total=total_steps, initial=start_step, desc="grpo", dynamic_ncols=True,
                        disable=not acc.is_main_process)
        if acc.is_main_process:
            _drop_lines_after(self.metrics_path, start_step)
            _drop_lines_after(self.samples_path, start_step)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.bar.update(1)
        if not self.acc.is_main_process or step % self.log_every:
            return
        self.bar.set_postfix({short: f"{metrics[k]:.3g}" for k, short in PROGRESS_KEYS.items() if k in metrics})
        with self.metrics_path.open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        if self.acc.trackers:
            self.acc.log(metrics, step=step)

    def log_samples(self, step: int, samples: Samples, n: int, tokenizer) -> None:
        if not self.acc.is_main_process:
            return
        rows = []
        for i in range(min(n, len(samples))):
            rows.append({
                "step": step,
                "prompt": tokenizer.decode(samples.prompt_ids[i], skip_special_tokens=True),
                "completion": samples.texts[i],
                "reward": samples.rewards[i],
                "per_verifier": {k: v[i] for k, v in samples.per_verifier.items() if not math.isnan(v[i])},
                "correct": samples.correct[i],
                "reason": samples.reasons[i] if samples.reasons else "",
                "truncated": samples.truncated[i],
            })
        with self.samples_path.open("a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        for r in rows:
            self.bar.write(f"[step {step}] reward={r['reward']:.3f} correct={r['correct']} "
                           f"completion={r['completion'][:200]!r}")

    def close(self) -> None:
        self.bar.close()


def _drop_lines_after(path: Path, step: int) -> None:
    """On resume from `step`, forget lines a killed run wrote for later steps (they are redone)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in kept))
