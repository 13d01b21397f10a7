import sys, torch, warnings
sys.path.insert(0, "tests/trainer")
warnings.filterwarnings("ignore")
from grpo_fixtures import SevensTask, small_config, tiny_policy
from rlvr.trainer.grpo import run_grpo
import rlvr.trainer.optimizer as o
out = {}
for mode in ("eager", "compiled", "eager2"):
    o.COMPILE_FROM = 0 if mode == "compiled" else 1 << 40
    torch.manual_seed(0)
    policy = tiny_policy(hidden=64)
    policy.precision = "bf16-kahan"
    policy.model.to(torch.bfloat16)
    start = {n: p.detach().float().clone() for n, p in policy.model.named_parameters()}
    m = run_grpo(policy, SevensTask(), small_config(steps=int(sys.argv[1]), learning_rate=1e-4, max_grad_norm=1.0), f"/tmp/kx/gp_{mode}")
    out[mode] = {n: p.detach().float() for n, p in policy.model.named_parameters()}, start
for mode in ("compiled", "eager2"):
    d = max((out[mode][0][n] - out["eager"][0][n]).abs().max().item() for n in out["eager"][0])
    mv = sum((out["eager"][0][n] - out["eager"][1][n]).abs().mean().item() for n in out["eager"][0])
    mvc = sum((out[mode][0][n] - out[mode][1][n]).abs().mean().item() for n in out[mode][0])
    print(mode, "max diff vs eager", d, "moved eager", mv, "moved", mvc)
