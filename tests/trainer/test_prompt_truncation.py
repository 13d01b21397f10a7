"""max_prompt_length: long prompts are left-truncated before the rollout (their end kept) and
counted; bad values and prompts that cannot fit the model's context fail with a clear error."""
import json

import pytest

from rlvr.config import ConfigError
from rlvr.pipeline.recipe import parse_recipe
from rlvr.tasks.base import Example
from rlvr.trainer import GRPOConfig, grpo, run_grpo
from rlvr.tasks.prompts import left_truncate

from grpo_fixtures import small_config, tiny_policy

SHORT = "7"              # "Q: 7\nA: " = 8 character tokens
LONG = "0123456789" * 3  # "Q: 0123...789\nA: " = 37 tokens


class AlternatingTask:
    """Prompts alternate long, short, long, short...: half of them exceed a 12-token cap."""

    def __init__(self, long: str = LONG):
        self.long, self.drawn = long, 0

    def sample(self, n: int) -> list[Example]:
        out = [Example(prompt=self.long if (self.drawn + i) % 2 == 0 else SHORT, reference=None,
                       kind="sevens", id=str(self.drawn + i)) for i in range(n)]
        self.drawn += n
        return out

    def state_dict(self) -> dict:
        return {"drawn": self.drawn}

    def load_state_dict(self, state: dict) -> None:
        self.drawn = state["drawn"]


@pytest.fixture
def seen_prompts(monkeypatch):
    """The prompt token ids every rollout received (the real engine still generates)."""
    seen = []
    make_engine = grpo.make_engine

    def recording(*args, **kwargs):
        engine = make_engine(*args, **kwargs)
        generate = engine.generate

        def record(prompt_ids, *a, **kw):
            seen.extend(prompt_ids)
            return generate(prompt_ids, *a, **kw)

        engine.generate = record
        return engine

    monkeypatch.setattr(grpo, "make_engine", recording)
    return seen


def test_left_truncate_keeps_the_end():
    assert left_truncate([1, 2, 3, 4, 5], 2) == [4, 5]
    assert left_truncate([1, 2, 3], 3) == [1, 2, 3]
    assert left_truncate([1, 2, 3], None) == [1, 2, 3]


@pytest.mark.parametrize("bad", [0, -4])
def test_config_rejects_a_non_positive_cap(bad):
    with pytest.raises(ValueError, match=f"max_prompt_length must be >= 1.*got {bad}"):
        GRPOConfig(max_prompt_length=bad)
    assert GRPOConfig().max_prompt_length is None


def test_long_prompts_are_left_truncated_and_counted(tmp_path, seen_prompts):
    policy = tiny_policy()
    cfg = small_config(steps=2, max_prompt_length=12, sample_every=1, num_samples=4)
    with pytest.warns(UserWarning, match="left-truncated to max_prompt_length=12") as caught:
        run_grpo(policy, AlternatingTask(), cfg, tmp_path)
    assert sum("left-truncated" in str(w.message) for w in caught) == 1  # warned once per run
    tok = policy.tokenizer
    long_ids = tok(f"Q: {LONG}\nA: ")["input_ids"]
    short_ids = tok(f"Q: {SHORT}\nA: ")["input_ids"]
    assert len(seen_prompts) == 2 * 4  # 2 steps x 4 prompts (the engine repeats each G times)
    assert max(len(p) for p in seen_prompts) == 12
    assert seen_prompts[0::2] == [long_ids[-12:]] * 4  # the end of the prompt is what was kept
    assert tok.decode(seen_prompts[0]).endswith("789\nA: ")
    assert seen_prompts[1::2] == [short_ids] * 4  # short prompts untouched
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["prompts/truncated"] for r in rows] == [0.5, 0.5]
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert samples[0]["prompt"] == tok.decode(long_ids[-12:])  # trained on the prompt it sampled from


def test_without_a_cap_nothing_is_truncated(tmp_path, seen_prompts):
    run_grpo(tiny_policy(), AlternatingTask(), small_config(steps=1), tmp_path)
    assert max(len(p) for p in seen_prompts) == 37
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["prompts/truncated"] == 0.0


def test_without_a_cap_a_prompt_past_the_context_keeps_what_the_model_can_read(tmp_path, seen_prompts):
    # tiny_policy: max_position_embeddings=128; a 136-token prompt + 6 new tokens cannot fit, so
    # the default cap (128 - 6 = 122 tokens) keeps its end
    with pytest.warns(UserWarning, match=r"a prompt of 136 tokens was left-truncated to max_prompt_length=122"):
        run_grpo(tiny_policy(), AlternatingTask(long="9" * 129), small_config(steps=1), tmp_path)
    assert max(len(p) for p in seen_prompts) == 122


def test_eval_sampling_caps_a_huge_prompt_by_default():
    from rlvr.models import ModelConfig, load_policy
    from rlvr.pipeline.sampling import sample_and_verify
    from rlvr.rollout.base import SamplingParams

    policy = load_policy(ModelConfig(name_or_path="tiny"), train=False)
    limit = policy.model.config.max_position_embeddings
    huge = Example(prompt="1+" * 200_000 + "1=?", reference="200001", kind="math", id="huge")
    [[sample]] = sample_and_verify(policy, [huge], "plain", 1, SamplingParams(max_new_tokens=4, temperature=0.0),
                                   batch_size=1)
    assert sample.prompt_truncated and limit < 400_000


def test_a_cap_past_the_context_fails_at_the_start(tmp_path, seen_prompts):
    with pytest.raises(ValueError, match=r"max_prompt_length \(125\) \+ max_new_tokens \(6\) = 131 "
                                         r"exceeds the model's max_position_embeddings \(128\)"):
        run_grpo(tiny_policy(), AlternatingTask(), small_config(steps=1, max_prompt_length=125), tmp_path)
    assert seen_prompts == []  # before any rollout


RECIPE = {
    "name": "t",
    "model": {"name_or_path": "tiny", "tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2,
                                               "intermediate_size": 64}},
    "task": {"name": "arithmetic", "difficulty": 1},
    "stages": [{"type": "eval", "name": "ev"}, {"type": "grpo", "name": "g", "steps": 2}],
}


@pytest.mark.parametrize("value,message", [
    (0, "stages.1: max_prompt_length must be >= 1"),
    (-1, "stages.1: max_prompt_length must be >= 1"),
    ("long", "stages.1.max_prompt_length: expected"),
])
def test_recipe_with_a_bad_cap_names_the_key(value, message):
    data = json.loads(json.dumps(RECIPE))
    data["stages"][1]["max_prompt_length"] = value
    with pytest.raises(ConfigError) as err:
        parse_recipe(data)
    assert message in str(err.value)


def test_recipe_passes_the_cap_to_the_grpo_stage():
    data = json.loads(json.dumps(RECIPE))
    data["stages"][1]["max_prompt_length"] = 64
    assert parse_recipe(data).stage("g").options.max_prompt_length == 64


def test_dataset_recipes_cap_their_grpo_prompts():
    from pathlib import Path

    from rlvr.pipeline.recipe import load_recipe

    root = Path(__file__).resolve().parents[2] / "recipes"
    for name in ("qwen2.5-1.5b-gsm8k.yaml", "qwen2.5-math-1.5b-math.yaml"):
        grpo_stages = [s for s in load_recipe(root / name).stages if s.type == "grpo"]
        assert grpo_stages and all(s.options.max_prompt_length == 512 for s in grpo_stages), name
