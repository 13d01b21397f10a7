"""max_prompt_length in the eval and rejection_sampling stages: the engine gets each prompt's last
N tokens, the stages count the cut prompts, bad caps name the key, and the Qwen recipes set it."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import rlvr.rollout
from rlvr.config import ConfigError
from rlvr.pipeline import sampling
from rlvr.pipeline.recipe import load_recipe, parse_recipe
from rlvr.pipeline.runner import run_recipe
from rlvr.tasks.prompts import PromptFormat, encode_text

CAP = 6
RECIPE = {
    "name": "cap",
    "model": {"name_or_path": "tiny", "tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2,
                                               "intermediate_size": 64}},
    "task": {"name": "arithmetic", "difficulty": 1},
    "template": "plain",
    "stages": [
        {"type": "eval", "name": "ev", "num_problems": 3, "num_generations": 2, "max_new_tokens": 4, "max_prompt_length": CAP},
        {"type": "rejection_sampling", "name": "rs", "num_problems": 3, "num_generations": 2,
         "max_new_tokens": 4, "max_prompt_length": CAP},
    ],
}


@pytest.fixture
def engine_calls(monkeypatch):
    """(full prompt ids, ids the engine received) for every prompt sent (the real engine still generates)."""
    calls, rendered = [], []
    render, make_engine = PromptFormat.render, rlvr.rollout.make_engine

    def recording_render(self, example, tokenizer=None):
        text = render(self, example, tokenizer)
        rendered.append(text)
        return text

    def recording_engine(kind, model, tokenizer):
        engine = make_engine(kind, model, tokenizer)
        generate = engine.generate

        def record(prompt_ids, *a, **kw):
            texts = rendered[-len(prompt_ids):]  # the batch's prompts are the last ones rendered
            full = [encode_text(tokenizer, p) for p in texts]
            rendered.clear()
            calls.extend(zip(full, prompt_ids))
            return generate(prompt_ids, *a, **kw)

        engine.generate = record
        return engine

    monkeypatch.setattr(PromptFormat, "render", recording_render)
    monkeypatch.setattr(rlvr.rollout, "make_engine", recording_engine)
    return calls


def test_stages_send_the_end_of_each_prompt_and_count_the_cut_ones(tmp_path, engine_calls):
    with pytest.warns(UserWarning, match=f"left-truncated to max_prompt_length={CAP}") as caught:
        summary = run_recipe(parse_recipe(RECIPE), tmp_path / "run")
    # eval: greedy + k samples, rejection sampling: one pass; each sends the same 3 prompts
    assert len(engine_calls) == 3 * 3
    for full, sent in engine_calls:
        assert len(full) > CAP and sent == full[-CAP:]  # arithmetic prompts are longer than 6 characters
    metrics = {s["name"]: s["metrics"] for s in summary["stages"]}
    assert metrics["ev"]["prompts_truncated"] == 3 and metrics["rs"]["prompts_truncated"] == 3
    assert sum("left-truncated" in str(w.message) for w in caught) == 2  # once per stage
    rows = (tmp_path / "run").rglob("metrics.jsonl")
    logged = [json.loads(line) for f in rows for line in f.read_text().splitlines()]
    assert any(r.get("eval/prompts_truncated") == 3 for r in logged)


def test_without_a_cap_prompts_go_whole(tmp_path, engine_calls):
    data = json.loads(json.dumps(RECIPE))
    data["stages"] = [{**data["stages"][0], "num_generations": 0}]
    del data["stages"][0]["max_prompt_length"]
    summary = run_recipe(parse_recipe(data), tmp_path / "run")
    assert engine_calls and all(sent == full for full, sent in engine_calls)
    assert summary["stages"][0]["metrics"]["prompts_truncated"] == 0


@pytest.mark.parametrize("stage", [0, 1])
@pytest.mark.parametrize("value,message", [
    (0, "max_prompt_length must be >= 1"),
    (-3, "max_prompt_length must be >= 1"),
    ("long", "max_prompt_length: expected"),
])
def test_a_bad_cap_names_the_key(stage, value, message):
    data = json.loads(json.dumps(RECIPE))
    data["stages"][stage]["max_prompt_length"] = value
    with pytest.raises(ConfigError) as err:
        parse_recipe(data)
    assert f"stages.{stage}" in str(err.value) and message in str(err.value)


def test_a_cap_past_the_context_fails_before_sampling(tmp_path, engine_calls):
    data = json.loads(json.dumps(RECIPE))  # the tiny model's context is 512 tokens
    data["stages"] = [{**data["stages"][1], "max_prompt_length": 510}]
    with pytest.raises(ValueError, match=r"max_prompt_length \(510\) \+ max_new_tokens \(4\) = 514 exceeds"):
        run_recipe(parse_recipe(data), tmp_path / "run")
    assert engine_calls == []


def test_the_qwen_recipes_cap_their_eval_and_rejection_sampling_prompts():
    root = Path(__file__).resolve().parents[2] / "recipes"
    for name in ("qwen2.5-1.5b-gsm8k.yaml", "qwen2.5-math-1.5b-math.yaml"):
        stages = [s for s in load_recipe(root / name).stages if s.type in ("eval", "rejection_sampling")]
        assert {s.type for s in stages} == {"eval", "rejection_sampling"}, name
        assert all(s.options.max_prompt_length == 512 for s in stages), name


def test_eval_prompts_are_encoded_as_the_trainer_encodes_them(engine_calls):
    """A tokenizer that adds BOS (Llama-style): eval/rejection sampling send the trainer's prompt
    ids, BOS included, not the bare text's."""
    from tokenizers.processors import TemplateProcessing

    from rlvr.models.loading import Policy
    from rlvr.rollout.base import SamplingParams
    from rlvr.rollout.sampling import SamplingConfig
    from rlvr.tasks import make_task
    from rlvr.trainer import GRPOConfig
    from rlvr.trainer.prompts import PromptEncoder

    sys.path.insert(0, str(Path(__file__).parents[1] / "trainer"))
    from grpo_fixtures import tiny_policy

    policy = tiny_policy()
    tok = policy.tokenizer
    tok._tokenizer.post_processor = TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", tok.bos_token_id)])
    examples = make_task("arithmetic", difficulty=1).sample(3)
    sampling.sample_and_verify(Policy(policy.model, tok), examples, "plain", 1,
                               SamplingParams(max_new_tokens=2, temperature=0.0), batch_size=3)
    cfg = GRPOConfig(template="plain", sampling=SamplingConfig(max_new_tokens=2))
    trainer_ids = PromptEncoder(tok, cfg, None).encode(examples)
    assert [sent for _, sent in engine_calls] == trainer_ids
    assert all(ids[0] == tok.bos_token_id for ids in trainer_ids)
