"""Markdown tables and PNG plots of accuracy against compute."""
from __future__ import annotations

from pathlib import Path

from rlvr.eval.curves import Point


def _level_name(level) -> str:
    return "all" if level is None else str(level)


def accuracy_table(points: list[Point], difficulty=None, show_tokens: bool = True) -> str:
    """Rows = methods, columns = N; a cell is accuracy (and mean tokens per problem)."""
    chosen = [p for p in points if p.difficulty == difficulty]
    ns = sorted({p.n for p in chosen})
    methods = list(dict.fromkeys(p.method for p in chosen))
    cell = {(p.method, p.n): p for p in chosen}
    lines = ["| method | " + " | ".join(f"N={n}" for n in ns) + " |", "|---" * (len(ns) + 1) + "|"]
    for m in methods:
        cells = []
        for n in ns:
            p = cell.get((m, n))
            if p is None:
                cells.append("")
            else:
                cells.append(f"{p.accuracy:.3f} ({p.tokens:.0f} tok)" if show_tokens else f"{p.accuracy:.3f}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compute_optimal_table(rows: list[dict]) -> str:
    lines = ["| difficulty | token budget | best method | N | accuracy | tokens |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {_level_name(r['difficulty'])} | {r['budget']:.0f} | {r['method']} | {r['n']} | "
                     f"{r['accuracy']:.3f} | {r['tokens']:.0f} |")
    return "\n".join(lines)


def full_report(points: list[Point], optimal: list[dict], title: str = "Accuracy against test-time compute",
                excluded: str = "pass@N, an oracle bound") -> str:
    parts = [f"# {title}", "", "Accuracy (mean generated tokens per problem) per method and budget N.", ""]
    for level in sorted({p.difficulty for p in points}, key=lambda d: (d is not None, d or 0)):
        n_problems = max(p.problems for p in points if p.difficulty == level)
        parts += [f"## Difficulty {_level_name(level)} ({n_problems} problems)", "", accuracy_table(points, level), ""]
    if optimal:
        parts += ["## Compute-optimal choice", "", "Best accuracy among methods whose mean tokens fit the budget "
                  f"({excluded}, excluded).", "", compute_optimal_table(optimal), ""]
    return "\n".join(parts)


def plot_curves(points: list[Point], path: str | Path, x: str = "n", title: str = "") -> Path:
    """Accuracy against N (x='n', log2 axis) or against mean tokens (x='tokens'), one panel per level."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    if x not in ("n", "tokens"):
        raise ValueError(f"x must be 'n' or 'tokens', got {x!r}")
    levels = sorted({p.difficulty for p in points}, key=lambda d: (d is not None, d or 0))
    fig, axes = plt.subplots(1, len(levels), figsize=(5 * len(levels), 4), squeeze=False)
    for ax, level in zip(axes[0], levels):
        chosen = [p for p in points if p.difficulty == level]
        for method in dict.fromkeys(p.method for p in chosen):
            pts = sorted((p for p in chosen if p.method == method), key=lambda p: getattr(p, x))
            ax.plot([getattr(p, x) for p in pts], [p.accuracy for p in pts], marker="o", label=method)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("N (samples / beams / simulations)" if x == "n" else "generated tokens per problem")
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"difficulty {_level_name(level)}")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
