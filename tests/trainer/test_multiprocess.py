"""Two CPU processes (`accelerate launch --cpu --num_processes 2`, gloo): prompts are split
between processes, groups stay whole, every process ends with the same parameters, and dynamic
sampling's extra rounds do not desynchronise the collectives."""
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from grpo_fixtures import SevensTask

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
G = 3


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("accelerate") is None, reason="accelerate CLI not installed")
def test_two_processes_split_prompts_keep_groups_and_stay_in_sync(tmp_path):
    # `accelerate launch --cpu --num_processes 2` starts ONE process here (its multi-CPU path needs
    # MPI); --multi_gpu uses torchrun, and run_grpo joins a gloo group on a CPU-only machine.
    cmd = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           str(HERE / "two_process_run.py"), str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1",
           "ACCELERATE_USE_CPU": "true"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]

    for run in ("plain", "dynamic"):
        ranks = [json.loads((tmp_path / run / f"rank-{r}.json").read_text()) for r in (0, 1)]
        assert ranks[0]["params_sha256"] == ranks[1]["params_sha256"], f"{run}: parameters diverged"
        assert ranks[0]["result"]["reward/mean"] == ranks[1]["result"]["reward/mean"]  # reduced metrics
        # every scoring call holds whole groups: G adjacent copies of one prompt
        for r in ranks:
            for call in r["seen"]:
                groups = [call[i:i + G] for i in range(0, len(call), G)]
                assert all(len(set(g)) == 1 and len(g) == G for g in groups), call
        # both processes made the same number of sampling rounds (collectives stayed in step)
        assert len(ranks[0]["seen"]) == len(ranks[1]["seen"])

    # plain run: each step the global batch of 4 prompts from the one stream is split 2 + 2
    ranks = [json.loads((tmp_path / "plain" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    stream = SevensTask()
    for step, (mine0, mine1) in enumerate(zip(ranks[0]["seen"], ranks[1]["seen"])):
        expected = [ex.id for ex in stream.sample(4)]
        assert mine0[::G] == expected[:2] and mine1[::G] == expected[2:], f"step {step + 1}"
    assert len(ranks[0]["seen"]) == 3
    # one metrics line per step, written by the main process only
    lines = (tmp_path / "plain" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3]
    assert (tmp_path / "plain" / "checkpoints" / "step-00000002" / "rng" / "rank-1.pt").is_file()
