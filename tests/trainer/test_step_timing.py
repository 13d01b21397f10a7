"""The `time/*` metrics: each slow phase shows under its own key (the multi-GPU benchmark reads
them), no phase exceeds its step, and the steps fit in the wall time of the run."""
import json
import time

import pytest

from rlvr.rewards import compute_rewards
from rlvr.trainer import run_grpo

from grpo_fixtures import SevensTask, small_config

PHASES = ("time/generate", "time/verify", "time/sync", "time/advantage", "time/train", "time/other")
PAUSE = 0.05


class SlowDrawTask(SevensTask):
    """Drawing prompts takes PAUSE seconds: time outside the named phases (`time/other`)."""

    def sample(self, n):
        time.sleep(PAUSE)
        return super().sample(n)


def slow_reward(*args, **kwargs):
    time.sleep(PAUSE)
    return compute_rewards(*args, **kwargs)


@pytest.mark.parametrize("dynamic", [False, True])
def test_phases_add_up_to_the_step_and_slow_phases_show(policy, tmp_path, dynamic):
    cfg = small_config(steps=2, save_every=0, dynamic_sampling=dynamic, max_sampling_rounds=2)
    start = time.perf_counter()
    run_grpo(policy, SlowDrawTask(), cfg, tmp_path, reward_fn=slow_reward)
    wall = time.perf_counter() - start
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for row in rows:
        assert all(row[k] >= 0 for k in PHASES)
        assert all(row[k] <= row["time/step"] for k in PHASES)
        rounds = row.get("dynamic_sampling/rounds", 1)
        assert row["time/verify"] >= PAUSE * rounds
        assert row["time/other"] >= PAUSE * rounds
        assert row["time/generate"] > 0
        assert row["time/generate_min"] == row["time/generate"]  # one process: fastest = slowest
    assert sum(row["time/step"] for row in rows) <= wall


def test_multigpu_benchmark_reads_the_breakdown(policy, task, tmp_path):
    from benchmarks.bench_multigpu import PHASES, Result, markdown_table, summarise

    run_grpo(policy, task, small_config(steps=3, save_every=0), tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    figures = summarise(rows, warmup=1, wall=1.0, peak_gib=None, processes=1)
    assert figures["timed_steps"] == 2
    assert set(PHASES) | {"time/step", "time/generate_min"} <= set(figures["median_times"])
    assert all(len(v) == 3 for v in figures["per_step_times"].values())
    row = markdown_table("t", [Result("ddp", 1, "ok", figures=figures)]).splitlines()[-1]
    header = markdown_table("t", []).splitlines()[2]
    assert row.count("|") == header.count("|")
    t = figures["median_times"]
    assert f"| {t['time/generate_min']:.2f}-{t['time/generate']:.2f} |" in row
