"""Launched by test_fsdp2_cpu with torchrun (2 CPU processes, gloo). Shards a tiny Qwen2 the way
accelerate's FSDP2 does (decoder layers one by one; norm, embeddings and lm_head in a group that
does not reshard after forward; the root) and checks, against an unsharded copy, the two things
the GRPO trainer relies on: generation inside `_fsdp2_unsharded` (what `full_parameters` does under
FSDP2; each process generates a different number of tokens, which per-module gathers would hang on)
and the fused loss with the lm_head weight read after the forward (what `loss_weight` does).
Writes one JSON line of results per process to argv[1]."""
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from transformers import Qwen2Config, Qwen2ForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from rlvr.algorithms import LossNormalizer  # noqa: E402
from rlvr.kernels import fused_policy_loss  # noqa: E402
from rlvr.trainer.distributed import _fsdp2_unsharded  # noqa: E402


def tiny_model() -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=True, pad_token_id=0, eos_token_id=1)
    return Qwen2ForCausalLM(cfg)


def loss_of(model, x, weight, adv):
    hidden = model(input_ids=x, output_hidden_states=True, logits_to_keep=1).hidden_states[-1][:, :-1]
    w = weight(model)  # read after the forward
    norm = LossNormalizer(num_sequences=x.shape[0], num_tokens=float(x[:, 1:].numel()))
    loss, _ = fused_policy_loss(hidden, w, x[:, 1:], torch.ones(x.shape[0], x.shape[1] - 1), adv, None, None,
                                loss_type="dapo", epsilon_low=0.2, epsilon_high=0.2, beta=0.0,
                                normalizer=norm, backend="torch")
    return loss, type(w).__name__


def main() -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.set_num_threads(1)
    model, ref = tiny_model(), tiny_model()
    for layer in model.model.layers:
        fully_shard(layer, reshard_after_forward=True)
    fully_shard([model.model.norm, model.model.embed_tokens, model.lm_head], reshard_after_forward=False)
    fully_shard(model)

    prompts = torch.randint(2, 90, (3, 5), generator=torch.Generator().manual_seed(rank))
    gen = dict(attention_mask=torch.ones_like(prompts), max_new_tokens=4 + 3 * rank, do_sample=False,
               pad_token_id=0, eos_token_id=None, synced_gpus=False)
    with torch.no_grad():
        with _fsdp2_unsharded(model):
            sharded_out = model.generate(input_ids=prompts, **gen)
        ref_out = ref.generate(input_ids=prompts, **gen)

    x, adv = sharded_out[:, :8], torch.linspace(-1, 1, 3)
    loss, weight_type = loss_of(model, x, lambda m: m.get_output_embeddings().weight, adv)
    loss.backward()
    ref_loss, _ = loss_of(ref, x, lambda m: m.lm_head.weight, adv)
    ref_loss.backward()
    diffs = {}
    for name, p in ref.named_parameters():  # FSDP averages gradients over processes
        g = p.grad.clone()
        dist.all_reduce(g)
        diffs[name] = (dict(model.named_parameters())[name].grad.full_tensor() - g / 2).abs().max().item()
    result = {"rank": rank, "generate_equal": torch.equal(sharded_out, ref_out),
              "new_tokens": sharded_out.shape[1] - prompts.shape[1], "weight_type": weight_type,
              "loss_equal": torch.allclose(loss, ref_loss), "max_grad_diff": max(diffs.values()),
              "ref_grad_norm": float(torch.stack([p.grad.norm() for p in ref.parameters()]).norm())}
    with open(sys.argv[1], "a") as f:
        f.write(json.dumps(result) + "\n")
    dist.barrier()  # neither process tears gloo down while the other still talks to it
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
