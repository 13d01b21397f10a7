"""One prompt format per recipe: the recipe-level template and instruction reach every stage, and the
same problem becomes the same prompt ids in SFT, GRPO, eval and rejection sampling."""
from __future__ import annotations

import pytest

import rlvr.rollout
import rlvr.trainer.grpo
import rlvr.trainer.sft
from rlvr.config import ConfigError
from rlvr.models import load_policy
from rlvr.pipeline.recipe import parse_recipe
from rlvr.pipeline.runner import run_recipe
from rlvr.tasks import R1_INSTRUCTION, make_task
from rlvr.tasks.prompts import encode_text

INSTRUCTION = "Be brief."
TINY = {"name_or_path": "tiny", "tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2,
                                         "intermediate_size": 64}}
RECIPE = {
    "name": "fmt", "model": TINY, "template": "r1", "instruction": INSTRUCTION,
    "task": {"name": "arithmetic", "difficulty": 1, "options": {"ops": ["+"]}},
    "stages": [
        {"type": "sft", "name": "cold", "dataset_from": "generator", "steps": 1, "num_examples": 4, "batch_size": 2},
        {"type": "grpo", "name": "g", "steps": 1, "prompts_per_step": 2, "num_generations": 2,
         "max_new_tokens": 4, "report_to": "none", "sample_every": 0},
        {"type": "eval", "name": "ev", "num_problems": 2, "num_generations": 2, "max_new_tokens": 4},
        {"type": "rejection_sampling", "name": "rs", "num_problems": 2, "num_generations": 2,
         "max_new_tokens": 4},
    ],
}


def _recording(make_engine, sent):
    def factory(kind, model, tokenizer):
        engine = make_engine(kind, model, tokenizer)
        generate = engine.generate

        def record(prompt_ids, *a, **kw):
            sent.extend(tokenizer.decode(ids) for ids in prompt_ids)
            return generate(prompt_ids, *a, **kw)

        engine.generate = record
        return engine

    return factory


def test_every_stage_renders_the_recipe_instruction(tmp_path, monkeypatch):
    sent, sft_prompts = [], []
    monkeypatch.setattr(rlvr.rollout, "make_engine", _recording(rlvr.rollout.make_engine, sent))
    monkeypatch.setattr(rlvr.trainer.grpo, "make_engine", _recording(rlvr.trainer.grpo.make_engine, sent))
    run_sft = rlvr.trainer.sft.run_sft

    def recording_sft(policy, pairs, *a, **kw):
        sft_prompts.extend(p["prompt"] for p in pairs)
        return run_sft(policy, pairs, *a, **kw)

    monkeypatch.setattr(rlvr.trainer.sft, "run_sft", recording_sft)
    run_recipe(parse_recipe(RECIPE), tmp_path / "run")
    # grpo (2 prompts), eval (2 greedy + 2 sampled), rejection sampling (2): each with the instruction
    assert len(sent) == 8 and len(sft_prompts) == 4
    for prompt in sent + sft_prompts:
        assert prompt.startswith(INSTRUCTION + "\n") and R1_INSTRUCTION not in prompt, prompt


def test_one_problem_is_the_same_ids_in_every_stage():
    from rlvr.pipeline.sampling import sample_and_verify
    from rlvr.rollout import SamplingParams
    from rlvr.trainer.prompts import PromptEncoder
    from rlvr.trainer.sft import worked_solution_pairs

    recipe = parse_recipe(RECIPE)
    policy = load_policy(recipe.model, device="cpu")
    example = make_task("arithmetic", seed=0, difficulty=1, ops=["+"]).held_out(1)[0]
    grpo_ids = PromptEncoder(policy.tokenizer, recipe.stage("g").options, None).encode([example])[0]
    sft_ids = encode_text(policy.tokenizer, worked_solution_pairs([example], policy.tokenizer,
                                                                  recipe.prompt_format)[0]["prompt"])
    sent = []
    engine = policy.engine("hf")  # built once per policy: sample_and_verify gets this one
    generate = engine.generate
    engine.generate = lambda ids, *a, **kw: (sent.extend(ids), generate(ids, *a, **kw))[1]
    sample_and_verify(policy, [example], recipe.prompt_format, 1, SamplingParams(max_new_tokens=2, temperature=0),
                      1, engine="hf")  # what eval and rejection sampling call
    assert grpo_ids == sft_ids == sent[0]
    assert policy.tokenizer.decode(grpo_ids).startswith(INSTRUCTION)


def test_instruction_is_set_once_per_recipe():
    data = {**RECIPE, "stages": [{**RECIPE["stages"][1], "instruction": "Other."}]}
    with pytest.raises(ConfigError, match="stages.0.instruction: set it once at the top of the recipe"):
        parse_recipe(data)
    assert parse_recipe({**RECIPE, "instruction": None}).prompt_format.instruction is None
