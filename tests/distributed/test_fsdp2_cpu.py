"""FSDP2 pieces of the GRPO trainer on two CPU processes (torchrun, gloo), checked against an
unsharded model: generation with every module unsharded once (processes generating different
lengths do not hang) and the fused loss/gradients with the lm_head weight read after the forward.
accelerate itself does not run FSDP on CPU, so the worker shards the model the way it does."""
import json
import os
import subprocess
import sys
from pathlib import Path

from test_two_process_cpu import _free_port

HERE = Path(__file__).parent
GLOO_TEARDOWN_ABORT = "terminate called without an active exception"


def _run_workers(results: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(_free_port()), str(HERE / "fsdp2_worker.py"), str(results)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def test_fsdp2_generation_and_loss_match_the_unsharded_model(tmp_path):
    results = tmp_path / "results.jsonl"
    proc = _run_workers(results)
    if proc.returncode != 0 and GLOO_TEARDOWN_ABORT in proc.stderr:
        # gloo's threads now and then abort a process as it exits (seen once in about ten CI runs,
        # then not in three reruns): one fresh run; a failure that repeats still fails the test
        results.unlink(missing_ok=True)
        proc = _run_workers(results)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = sorted((json.loads(x) for x in results.read_text().splitlines()), key=lambda r: r["rank"])
    assert [r["rank"] for r in rows] == [0, 1]
    assert rows[0]["new_tokens"] != rows[1]["new_tokens"]  # the processes ran different numbers of forwards
    for r in rows:
        assert r["generate_equal"], r
        assert r["weight_type"] == "Parameter", r  # whole (not a DTensor shard) after the forward
        assert r["loss_equal"], r
        assert r["ref_grad_norm"] > 0 and r["max_grad_diff"] < 1e-6, r
