"""Pinned numbers of a tiny GRPO run (as torchtune pins its recipes' losses).

Three steps of the tiny Qwen2 on the sevens task, two updates per rollout and a k3 KL (beta 0.04),
for four loss/advantage pairs. The values were recorded from this implementation on torch 2.13
(CPU, fp32, one thread); a change to sampling, rewards, advantages, the loss, its normalisers or
the optimizer step moves them. When a change is meant to move them, record the new values in the
same commit and say why. Each row: (reward/mean, loss/total, grad_norm) per step.
"""
import json

import pytest

from rlvr.trainer import run_grpo

from grpo_fixtures import SevensTask, small_config, tiny_policy

PINNED = {
    ("dapo", "grpo"): [(0.03125, -0.020623963326215744, 0.8758133053779602),
                       (0.004807692307692308, 0.01561203959863633, 0.2558981254696846),
                       (0.02003205128205128, -0.03998472401872277, 0.2774355784058571)],
    ("grpo", "grpo"): [(0.03125, -0.02062397077679634, 0.8758133053779602),
                       (0.004807692307692308, 0.015274818579200655, 0.24945621192455292),
                       (0.02003205128205128, -0.020220143953338265, 0.29841748625040054)],
    ("dr_grpo", "dr_grpo"): [(0.03125, -0.001992590570201472, 0.16455654799938202),
                             (0.020833333333333332, 0.003601457690820098, 0.04401024058461189),
                             (0.041666666666666664, -0.0012744367122650146, 0.04078156407922506)],
    ("gspo", "rloo"): [(0.03125, -0.0037797652184963226, 0.22327476739883423),
                       (0.004807692307692308, 0.008423595572821796, 0.06697692163288593),
                       (0.009615384615384616, 0.004090713686309755, 0.03275426849722862)],
}


@pytest.mark.parametrize("loss_type,advantage", sorted(PINNED))
def test_tiny_run_reproduces_pinned_values(loss_type, advantage, tmp_path):
    cfg = small_config(steps=3, loss_type=loss_type, advantage=advantage, num_iterations=2, beta=0.04)
    run_grpo(tiny_policy(), SevensTask(), cfg, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    got = [(r["reward/mean"], r["loss/total"], r["grad_norm"]) for r in rows]
    for step, (g, want) in enumerate(zip(got, PINNED[(loss_type, advantage)], strict=True), start=1):
        assert g == pytest.approx(want, rel=1e-4, abs=1e-7), f"step {step}: got {g}, pinned {want}"
