"""Run by test_checkpoint_resume in a subprocess: train, and SIGKILL this process while it is
writing the checkpoint of step KILL_AT (after some of its files are on disk)."""
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import rlvr.trainer.checkpoint as checkpoint  # noqa: E402
from grpo_fixtures import SevensTask, resume_config, tiny_policy  # noqa: E402
from rlvr.trainer import run_grpo  # noqa: E402

out_dir, kill_at = Path(sys.argv[1]), int(sys.argv[2])
real_save_file = checkpoint.save_file


def save_file_then_die(tensors, filename, *args, **kwargs):
    real_save_file(tensors, filename, *args, **kwargs)
    if f"step-{kill_at:08d}" in str(filename):
        os.kill(os.getpid(), signal.SIGKILL)  # mid-checkpoint: optimizer, task, state not written yet


checkpoint.save_file = save_file_then_die
run_grpo(tiny_policy(), SevensTask(), resume_config(), out_dir)
