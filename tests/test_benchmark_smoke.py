"""The GPU benchmarks' entry points on the CPU at a tiny shape: every option the device parts pass
parses and runs, and each writes the JSON record it promises (no timing is checked)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_bench(script: str, *args: str, out: Path) -> dict:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args, "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(out.read_text())


def test_rollout_benchmark_fixed_and_variable_lengths_with_and_without_compaction_and_split_kv(tmp_path):
    record = run_bench("bench_rollout.py", "--device", "cpu", "--shape", "tiny", "--engines",
                       "fast,fast_nocompact,fast_nosplit", "--workload", "both", "--sizes", "8", "--prompt-len", "8",
                       "--new-tokens", "16", "--reps", "1", out=tmp_path / "rollout.json")
    names = [row["name"] for row in record["rows"]]
    assert len(names) == 6 and sum("variable lengths" in n for n in names) == 3
    assert sum("no split-KV" in n for n in names) == 2
    assert all(row["value"] > 0 for row in record["rows"])


def test_rollout_benchmark_lora_rows_through_peft_and_merged(tmp_path):
    record = run_bench("bench_rollout.py", "--device", "cpu", "--shape", "tiny", "--engines",
                       "fast_lora,fast_lora_merged", "--sizes", "8", "--prompt-len", "8", "--new-tokens", "8",
                       "--reps", "1", out=tmp_path / "lora.json")
    names = [row["name"] for row in record["rows"]]
    assert names[0].endswith("LoRA r=16 through peft") and names[1].endswith("LoRA r=16 merged")
    assert all(row["value"] > 0 and not row["note"] for row in record["rows"])


@pytest.mark.parametrize("extra", [[], ["--precision", "bf16-mixed", "--packing"]])
def test_grpo_step_benchmark_runs_rlvr_with_its_options(tmp_path, extra):
    record = run_bench("bench_grpo_step.py", "--device", "cpu", "--shape", "tiny", "--prompts", "2", "--group", "2",
                       "--prompt-len", "8", "--new-tokens", "8", "--steps", "2", "--skip", "trl", *extra,
                       out=tmp_path / "grpo.json")
    assert [row["name"] for row in record["rows"]] == ["rlvr run_grpo (fast engine + triton loss)"]
    assert len(record["rows"][0]["samples"]) == 2


def test_rollout_benchmark_refill_row_reads_against_the_fixed_figure(tmp_path):
    """fast_refill: N rows decoding --refill-factor x N variable-length sequences, its useful tok/s
    set against the fast engine's fixed-length figure at N in the same run."""
    record = run_bench("bench_rollout.py", "--device", "cpu", "--shape", "tiny", "--engines", "fast,fast_refill",
                       "--workload", "both", "--sizes", "8", "--prompt-len", "8", "--new-tokens", "16", "--reps", "1",
                       "--group", "4", "--refill-factor", "3", out=tmp_path / "rollout.json")
    refill = record["rows"][-1]
    assert len(record["rows"]) == 3 and "refill into 8 rows" in refill["name"] and "24 sequences" in refill["name"]
    assert "x fixed" in refill["note"] and "'refills'" in refill["note"] and refill["value"] > 0


def test_optimizer_benchmark_times_each_precision_against_torch_adamw(tmp_path):
    record = run_bench("bench_optimizer.py", "--device", "cpu", "--shape", "tiny", "--reps", "2",
                       out=tmp_path / "optimizer.json")
    names = [row["name"] for row in record["rows"]]
    assert names[0] == "torch AdamW, float32 masters (bf16-mixed)" and len(names) == 4
    assert sum(name.startswith("KahanAdamW") for name in names) == 2
    assert all(row["value"] > 0 and len(row["samples"]) == 2 for row in record["rows"])


def test_precision_drift_shows_what_each_precision_keeps_of_small_steps(tmp_path):
    record = run_bench("precision_drift.py", "--model", "tiny", "--steps", "3", "--batch", "2",
                       out=tmp_path / "drift.json")
    copies = record["copies"]
    assert copies["bf16 (torch AdamW)"]["kept"] < 0.1  # lr 1e-6 steps round away
    assert copies["bf16-kahan, weights + compensation"]["kept"] > 0.99
    # the weights themselves are the float32 trajectory rounded, as bf16-mixed's forward reads it
    assert record["kahan_equals_rounded_masters"] > 0.99
    assert len(record["losses"]) == 3


def test_saved_activations_counts_what_each_policy_keeps_for_backward(tmp_path):
    record = run_bench("saved_activations.py", "--shape", "tiny", "--tokens", "100", "--micro-batch-tokens", "200",
                       out=tmp_path / "saved.json")
    rows = {(r["config"], r["dropout"]): r for r in record["configs"]}
    act = {k: r["activation_bytes_per_token"] for k, r in rows.items()}
    casts = {k: r["weight_cast_bytes"] for k, r in rows.items()}
    assert all(v > 0 for v in act.values())
    # bf16-mixed saves a bfloat16 cast of every float32 weight; a LoRA base is bfloat16 already
    assert casts["full_bf16_mixed", None] > 0 and casts["full_bf16", None] == 0
    assert casts["lora_bf16_mixed", 0.0] < casts["full_bf16_mixed", None] / 2
    # adapter dropout saves its mask and output; float32 adapters without autocast their float32 input
    assert act["lora", 0.05] > act["lora", 0.0] > act["lora_bf16_mixed", 0.0]
    assert len(record["rows"]) == len(rows)
