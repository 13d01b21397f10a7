"""PNG plots of a run: reward per step across grpo stages, the GRPO signal per step (reward,
accuracy, format rate, completion length, entropy, groups without signal), accuracy per stage and
per round."""
from __future__ import annotations

from pathlib import Path

REWARD_KEY = "reward/mean"
"""The key run_grpo logs the mean reward of a step's rollouts under."""


def write_plots(summary: dict, rows: list[dict], plot_dir: Path) -> list[Path]:
    """Write the plots there is data for; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window
    plot_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in (("reward_per_step.png", _reward_per_step),
                       ("grpo_curves.png", _grpo_curves),
                       ("accuracy_per_stage.png", _accuracy_per_stage),
                       ("accuracy_per_round.png", _accuracy_per_round)):
        if draw(summary, rows, plot_dir / name):
            written.append(plot_dir / name)
    return written


def _reward_per_step(summary: dict, rows: list[dict], path: Path) -> bool:
    import matplotlib.pyplot as plt

    series = _grpo_series(rows, REWARD_KEY)
    if not series:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for stage, (xs, ys) in series.items():
        ax.plot(xs, ys, label=stage)
    ax.set(xlabel="GRPO step (all grpo stages)", ylabel="mean reward", title=summary["recipe"])
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


CURVES = {"reward/mean": "mean reward", "accuracy": "sampled accuracy", "reward/format/mean": "format rate",
          "completions/mean_length": "completion tokens", "entropy/mean": "entropy (nats/token)",
          "frac_reward_zero_std": "groups with equal rewards"}
"""The per-step GRPO metrics `grpo_curves.png` draws, one panel each."""


def _grpo_series(rows: list[dict], key: str) -> dict[str, tuple[list, list]]:
    """{stage: (x, y)} of `key` over GRPO steps, the stages one after another on one x axis."""
    series: dict[str, tuple[list, list]] = {}
    offset, last_stage, last_step = 0, None, 0
    for r in rows:
        if r["stage_type"] != "grpo" or "step" not in r:
            continue
        if r["stage"] != last_stage:
            offset += last_step
            last_stage = r["stage"]
        last_step = r["step"]
        if key in r:
            xs, ys = series.setdefault(r["stage"], ([], []))
            xs.append(offset + r["step"])
            ys.append(r[key])
    return series


def _grpo_curves(summary: dict, rows: list[dict], path: Path) -> bool:
    import matplotlib.pyplot as plt

    panels = {key: _grpo_series(rows, key) for key in CURVES}
    if not any(panels.values()):
        return False
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    for ax, (key, series) in zip(axes.flat, panels.items()):
        for stage, (xs, ys) in series.items():
            ax.plot(xs, ys, label=stage, linewidth=1)
        ax.set(xlabel="GRPO step", title=CURVES[key])
    axes.flat[0].legend()
    fig.suptitle(summary["recipe"])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _accuracy_per_stage(summary: dict, rows: list[dict], path: Path) -> bool:
    import matplotlib.pyplot as plt

    acc = summary["accuracy_per_stage"]
    if not acc:
        return False
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(acc)), 4))
    ax.bar(range(len(acc)), list(acc.values()))
    ax.set_xticks(range(len(acc)), list(acc.keys()), rotation=20, ha="right")
    for i, v in enumerate(acc.values()):
        ax.text(i, v, f"{v:.2f}", ha="center", va="bottom")
    ax.set(ylabel="held-out accuracy (greedy)", ylim=(0, 1.05), title=summary["recipe"])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _accuracy_per_round(summary: dict, rows: list[dict], path: Path) -> bool:
    import matplotlib.pyplot as plt

    series: dict[str, tuple[list, list]] = {}
    for r in rows:
        if r["stage_type"] == "self_improve" and "round" in r and "accuracy" in r:
            xs, ys = series.setdefault(r["stage"], ([], []))
            xs.append(r["round"])
            ys.append(r["accuracy"])
    if not series:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for stage, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", label=stage)
    ax.set(xlabel="round", ylabel="held-out accuracy (greedy)", ylim=(0, 1.05), title=summary["recipe"])
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
