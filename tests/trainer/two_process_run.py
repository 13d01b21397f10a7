"""Launched by test_multiprocess with `accelerate launch --cpu --num_processes 2`: a tiny GRPO run
that records, per process, which prompts it scored and a digest of its final parameters."""
import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from accelerate import PartialState  # noqa: E402

from grpo_fixtures import SevensTask, small_config, tiny_policy  # noqa: E402
from rlvr.rewards import compute_rewards  # noqa: E402
from rlvr.trainer import run_grpo  # noqa: E402

out = Path(sys.argv[1])
seen: list[list[str]] = []


def recording_reward(examples, *args, **kwargs):
    seen.append([ex.id for ex in examples])
    return compute_rewards(examples, *args, **kwargs)


def run(name: str, **overrides) -> None:
    seen.clear()
    policy = tiny_policy()
    cfg = small_config(steps=3, prompts_per_step=4, num_generations=3, save_every=2, keep_last=0,
                       micro_batch_size=4, **overrides)
    result = run_grpo(policy, SevensTask(), cfg, out / name, reward_fn=recording_reward)
    digest = hashlib.sha256()
    for pname, p in sorted(policy.model.named_parameters()):
        digest.update(pname.encode())
        digest.update(p.detach().cpu().numpy().tobytes())
    rank = PartialState().process_index  # the state run_grpo's Accelerator set up
    (out / name / f"rank-{rank}.json").write_text(json.dumps(
        {"seen": list(seen), "params_sha256": digest.hexdigest(), "result": result}))


run("plain")
# dynamic sampling: processes find different numbers of informative groups, yet must agree on
# the number of rounds (a disagreement hangs in a collective; the test's timeout catches it)
run("dynamic", dynamic_sampling=True, max_sampling_rounds=3)
