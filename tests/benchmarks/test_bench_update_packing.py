"""benchmarks/bench_update_packing.py on the CPU at the tiny shape: padded and packed updates of the
same variable-length batch give the same loss, packing forwards only the real tokens, and the
record holds both workloads."""
import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_update_packing import variable_batch  # noqa: E402


def test_variable_batch_masks_each_completion_at_its_own_length():
    batch = variable_batch([3, 1, 5], prompt_len=4, vocab=50, device="cpu")
    assert batch.input_ids.shape == (3, 9) and batch.targets.shape == (3, 5)
    assert batch.mask.sum(dim=1).tolist() == [3.0, 1.0, 5.0]
    assert batch.attention_mask.sum(dim=1).tolist() == [7, 5, 9]
    assert (batch.targets[batch.mask == 0] == 0).all()  # padding is the pad id
    assert torch.equal(batch.targets, batch.input_ids[:, 4:])


def test_padded_and_packed_updates_agree_and_packing_forwards_only_real_tokens(tmp_path):
    out = tmp_path / "packing.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_update_packing.py"), "--device", "cpu",
                           "--shape", "tiny", "--n", "8", "--prompt-len", "8", "--new-tokens", "32", "--reps", "1",
                           "--micro-batch-size", "2", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    record = json.loads(out.read_text())
    split = ["padded, micro_batch_size 2", "padded, micro_batch_tokens 80", "packed, micro_batch_tokens 80"]
    assert [r["name"] for r in record["rows"]] == ["variable: padded rows", "variable: packed rows", *split,
                                                  "fixed: padded rows", "fixed: packed rows"]
    for name in split:  # accumulated over micro-batches: the whole batch's loss
        assert abs(record["variable"]["loss_micro_batched"][name] - record["variable"]["loss_padded"]) < 1e-5
    assert all(r["value"] > 0 for r in record["rows"])
    for workload in ("variable", "fixed"):
        facts = record[workload]
        assert abs(facts["loss_packed"] - facts["loss_padded"]) < 1e-5
    variable = record["variable"]
    assert variable["real_tokens"] < variable["padded_tokens"]  # long-tailed lengths: padding to save
    assert record["fixed"]["real_tokens"] == record["fixed"]["padded_tokens"] == 8 * (8 + 32)
