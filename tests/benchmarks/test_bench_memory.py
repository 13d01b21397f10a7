"""benchmarks/bench_memory.py on the CPU at the tiny shape: every configuration runs every phase and
lands in the JSON record, and its analytic sizes are what rlvr really allocates (the engine's KV
cache, the stacked projection copies, the generation copy, gradients and AdamW state)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import bench_memory  # noqa: E402
from benchmarks.bench_memory import CONFIGS, Workload, new_record, policy_for  # noqa: E402
from benchmarks.common import word_tokenizer  # noqa: E402

SIZES = dict(prompts=2, group=2, prompt_len=8, new_tokens=8)
"""Small, and prompt + new - 1 = 15 columns: the engine rounds the cache up to its 64 bucket."""
WORK = Workload(shape="tiny", device="cpu", micro_batch=2, checkpointing=False, **SIZES)
PARTS = {"weights", "grads", "adam_state", "generation_copy", "kv_cache", "stacked"}


@pytest.fixture(scope="module")
def tokenizer():
    return word_tokenizer(WORK.vocab)


def test_every_config_runs_every_phase_into_the_record(tmp_path):
    out = tmp_path / "memory.json"
    args = [f"--{k.replace('_', '-')}={v}" for k, v in SIZES.items()]
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_memory.py"), "--shape", "tiny",
                           "--device", "cpu", "--micro-batch", "2", *args, "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "| config | stacked | after load GiB | peak generate GiB | peak step GiB | step s | note |" in done.stdout
    record = json.loads(out.read_text())
    configs = record["configs"]
    assert [(c["config"], c["stacked"]) for c in configs] == [(n, s) for n in CONFIGS for s in (True, False)]
    assert len(record["rows"]) == len(configs)
    for c in configs:
        assert c["oom"] is None and c["error"] is None, c
        assert set(c["peak_gib"]) == set(bench_memory.PHASES)  # every phase ended (no CUDA peak on the CPU)
        assert 0 < c["generate_s"] <= c["step_s"] and 0 < c["train_s"] <= c["step_s"]
        assert set(c["analytic_bytes"]) == PARTS and c["analytic_bytes"]["weights"] > 0
        assert all(peak is None for peak in c["peak_gib"].values())
        # moments in the weight's dtype; bf16-kahan: float32 moments (4x bf16 grads) and a bf16 compensation
        per_grad_byte = 5 if c["precision"] == "bf16-kahan" else 2
        assert c["analytic_bytes"]["adam_state"] == per_grad_byte * c["analytic_bytes"]["grads"]
        # peft's projections cannot be stacked; a merged copy's weight stacks are views (its q/k/v biases are copied)
        assert (c["analytic_bytes"]["stacked"] > 0) == (c["stacked"] and not c["config"].endswith("_peft"))
    assert all("cpu: no CUDA peak" in row["note"] for row in record["rows"])
    sizes = {(c["config"], c["stacked"]): c["analytic_bytes"] for c in configs}
    assert sizes["full_bf16_mixed", True]["weights"] == 2 * sizes["full_bf16", True]["weights"]  # float32 masters
    assert sizes["full_bf16_kahan", True]["weights"] == sizes["full_bf16", True]["weights"]
    assert sizes["full_bf16_kahan", True]["generation_copy"] == 0  # generation reads the bf16 weights
    assert sizes["lora", True]["grads"] < sizes["full_bf16", True]["grads"] / 2
    assert not next(c for c in configs if c["config"] == "lora_bf16_mixed_peft" and c["stacked"])["engine_stacks"]
    assert next(c for c in configs if c["config"] == "lora_bf16_mixed" and c["stacked"])["engine_stacks"]
    # the LoRA base is shared: generating through peft copies the adapters alone, merging the projections
    peft_copy, merged_copy = (sizes[n, True]["generation_copy"] for n in ("lora_bf16_mixed_peft", "lora_bf16_mixed"))
    assert 0 < peft_copy < merged_copy
    assert sizes["lora_bf16_mixed", True]["generation_copy"] < sizes["full_bf16", True]["weights"]
    assert sizes["lora_bf16_mixed", True]["weights"] < 1.5 * sizes["full_bf16", True]["weights"]  # no float32 base
    assert sizes["lora_bf16_mixed", True]["stacked"] < sizes["full_bf16", True]["stacked"] / 10  # views, not copies


def nbytes(tensors) -> int:
    return sum(t.nbytes for t in tensors if t is not None)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_analytic_sizes_are_what_rlvr_allocates(name, tokenizer):
    from rlvr.models.generation_weights import GenerationWeights
    from rlvr.models.precision import compute_dtype
    from rlvr.rollout import SamplingParams
    from rlvr.rollout.fast import FastEngine
    from rlvr.rollout.fast_forward import ModelParts
    from rlvr.rollout.fast_stacked import StackedProjections
    from rlvr.trainer.optimizer import make_optimizer

    sizes = new_record(name, True, WORK, tokenizer)["analytic_bytes"]  # from the meta-device replica
    setup = CONFIGS[name]
    model = policy_for(setup, WORK, tokenizer, "cpu").model
    assert nbytes(model.parameters()) == sizes["weights"]

    # what run_grpo's engine reads
    generation = GenerationWeights(model, compute_dtype(setup.precision), merge_lora=setup.merge_lora)
    assert generation.is_copy == (sizes["generation_copy"] > 0)
    own = {id(p) for p in model.parameters()}
    copied = [p for p in generation.model.parameters() if id(p) not in own]  # a LoRA base is shared
    assert nbytes(copied) == sizes["generation_copy"]
    if not generation.is_copy:
        assert nbytes(generation.model.parameters()) == sizes["weights"]

    engine = FastEngine(generation.model, tokenizer)
    engine.generate([[5] * WORK.prompt_len] * WORK.prompts, WORK.group, SamplingParams(max_new_tokens=WORK.new_tokens))
    (state,) = engine._states.values()
    assert nbytes(state.k + state.v) == sizes["kv_cache"]

    base = engine.model
    if StackedProjections.fits(ModelParts.of(base)):  # the Triton path's copies (the CPU engine runs torch ops)
        stacks = StackedProjections(ModelParts.of(base)).stacks
        views = {p.untyped_storage().data_ptr() for p in base.parameters()}  # a generation copy's stacks
        copies = [t for layer in stacks for t in layer if t is not None and t.untyped_storage().data_ptr() not in views]
        assert nbytes(copies) == sizes["stacked"] > 0
        if generation.is_copy:  # its weight stacks are views: only the q/k/v biases are stacked copies
            assert nbytes(copies) == sum(2 * t.numel() for layer in stacks for t in layer[1:2])
    else:
        assert name.endswith("_peft") and sizes["stacked"] == 0

    loss = sum(p.float().sum() for p in model.parameters() if p.requires_grad)
    loss.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(trainable, setup.precision, lr=1e-6, weight_decay=0.0, betas=(0.9, 0.999))
    optimizer.step()
    assert nbytes(p.grad for p in trainable) == sizes["grads"]
    state_tensors = [v for s in optimizer.state.values() for k, v in s.items() if k != "step"]
    assert nbytes(state_tensors) == sizes["adam_state"]


def test_cache_length_rounds_like_the_engine():
    assert bench_memory.cache_length(128, 512, 64) == 640  # the 7b default: 639 columns -> 640
    assert bench_memory.cache_length(8, 8, 64) == 64
    assert bench_memory.cache_length(64, 1, 64) == 64


def test_an_out_of_memory_update_is_recorded_and_its_model_freed(monkeypatch, tokenizer, tmp_path):
    import weakref

    import rlvr.trainer.grpo

    models = []

    def tracked_policy(*args):
        policy = policy_for(*args)
        models.append(weakref.ref(policy.model))
        return policy

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity")

    record = new_record("full_bf16_mixed", True, WORK, tokenizer)
    monkeypatch.setattr(bench_memory, "policy_for", tracked_policy)
    monkeypatch.setattr(rlvr.trainer.grpo, "train_on_batch", out_of_memory)  # after the rollout, in run_grpo
    bench_memory.measure(record, WORK, tokenizer, tmp_path)
    assert record["oom"] == {"phase": "update", "reached_gib": None,
                             "error": "CUDA out of memory. Tried to allocate 2.00 GiB"}
    assert record["error"] is None and record["step_s"] is None and set(record["peak_gib"]) == {"load", "generate"}
    assert len(models) == 1 and models[0]() is None  # nothing (run_grpo's frames, accelerate) keeps the model alive
    assert bench_memory.note(record).startswith("OOM at phase update: CUDA out of memory")
