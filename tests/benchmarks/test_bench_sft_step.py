"""benchmarks/bench_sft_step.py at the tiny shape on the CPU: one row per checkpointing setting, each a
real `run_sft`, and the profile of the last one."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_rows_time_sft_with_and_without_checkpointing(tmp_path):
    out = tmp_path / "sft.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_sft_step.py"), "--model", "tiny",
                           "--shape", "tiny", "--lora", "--steps", "4", "--warmup", "1", "--batch-size", "2",
                           "--max-length", "64", "--profile", "1", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    record = json.loads(out.read_text())
    rows = record["rows"]
    assert [r["name"] for r in rows] == ["rlvr sft, gradient_checkpointing=True (TRL's default)",
                                         "rlvr sft, gradient_checkpointing=False"]
    assert len(rows[0]["samples"]) == 3 and all(r["value"] > 0 for r in rows)
    assert "aten::mm" in record["profile"] and "LoRA" in record["title"]
