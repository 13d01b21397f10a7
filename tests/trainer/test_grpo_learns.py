"""End-to-end: GRPO on the tiny model raises the reward of a task it can learn, and writes the
files a user relies on (metrics.jsonl with the documented keys, the final model)."""
import json

from transformers import AutoModelForCausalLM

from rlvr.trainer import run_grpo

from grpo_fixtures import small_config


def test_mean_reward_rises_on_sevens(policy, task, tmp_path):
    cfg = small_config(steps=16, prompts_per_step=4, num_generations=8, max_new_tokens=6,
                       learning_rate=2e-2, save_every=0, keep_last=1, sample_every=8, num_samples=3)
    final = run_grpo(policy, task, cfg, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 17))
    first = sum(r["reward/mean"] for r in rows[:5]) / 5
    last = sum(r["reward/mean"] for r in rows[-5:]) / 5
    assert last > first + 0.3, f"reward did not rise: first 5 steps {first:.3f}, last 5 {last:.3f}"
    for key in ("reward/std", "accuracy", "frac_reward_zero_std", "completions/mean_length",
                "completions/max_length", "completions/clipped_ratio", "clip_ratio/low",
                "clip_ratio/high", "entropy/mean", "grad_norm", "lr", "tokens_per_s",
                "time/generate", "time/verify", "time/train", "reward/sevens/mean", "advantage/std"):
        assert key in rows[-1], key
    assert final["step"] == 16
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [x["step"] for x in samples] == [8, 8, 8, 16, 16, 16]
    last = samples[-1]
    assert last["per_verifier"]["sevens"] == last["reward"]  # weight 1, no shaping terms
    assert last["reward"] == last["completion"].count("7") / max(len(last["completion"]), 1)
    # the final model loads with plain transformers
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    assert reloaded.config.hidden_size == 32
