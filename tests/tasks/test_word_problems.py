"""Word problems: reproducible stories whose worked steps compute the answer the verifier accepts."""
from __future__ import annotations

import re

import pytest

import verifiers
from rlvr.tasks import make_task
from rlvr.tasks.word_problems import LEVELS

R1_FORMAT = re.compile(r"^<think>(.+)</think><answer>(-?\d+)</answer>$", re.S)
STEP = re.compile(r"^[a-z0-9% ]+: ([0-9+*/-]+)=(\d+)$")


def _wrong(example) -> str:
    return example.solution.replace(f"<answer>{example.reference}</answer>",
                                    f"<answer>{int(example.reference) + 1}</answer>")


@pytest.mark.parametrize("level", list(LEVELS))
def test_worked_solutions_verify_and_an_off_by_one_answer_does_not(level):
    examples = make_task("word_problems", seed=level, difficulty=level).sample(300)
    assert {e.kind for e in examples} == {"math"} and {e.difficulty for e in examples} == {level}
    right = verifiers.verify_batch("math", [e.solution for e in examples], [e.reference for e in examples])
    assert [(e.prompt, r.reason) for e, r in zip(examples, right) if not r.correct] == []
    wrong = verifiers.verify_batch("math", [_wrong(e) for e in examples], [e.reference for e in examples])
    assert [e.prompt for e, r in zip(examples, wrong) if r.correct] == []


@pytest.mark.parametrize("level", list(LEVELS))
def test_every_worked_step_is_true_and_the_last_one_is_the_answer(level):
    for ex in make_task("word_problems", seed=3, difficulty=level).sample(200):
        thinking, answer = R1_FORMAT.match(ex.solution).groups()
        assert answer == ex.reference and int(answer) >= 0
        stated = set(re.findall(r"\d+", ex.prompt)) | {"100"}  # 100: percentages are out of 100
        values: list[str] = []
        for line in thinking.split("\n"):
            if line.startswith("start: "):
                values.append(line.removeprefix("start: "))
                assert values[-1] in stated, ex.prompt
                continue
            expression, value = STEP.match(line).groups()
            # Our own digits-and-operators string; exact division is part of what is checked.
            assert eval(expression) == int(value), (ex.prompt, line)
            # Each step uses only numbers from the story and results of earlier steps.
            assert set(re.findall(r"\d+", expression)) <= stated | set(values), (ex.prompt, line)
            values.append(value)
        assert values[-1] == ex.reference, ex.prompt


def test_same_seed_same_stream_and_resume_from_state():
    a = make_task("word_problems", seed=1, difficulty=[1, 3, 5])
    first = a.sample(40)
    assert first == make_task("word_problems", seed=1, difficulty=[1, 3, 5]).sample(40)
    assert [e.prompt for e in first] != [e.prompt for e in make_task("word_problems", seed=2, difficulty=[1, 3, 5]).sample(40)]
    state = a.state_dict()
    following = a.sample(20)
    fresh = make_task("word_problems", seed=1, difficulty=2)  # other level: the state carries it
    fresh.load_state_dict(state)
    assert fresh.sample(20) == following
    with pytest.raises(ValueError, match="seed"):
        make_task("word_problems", seed=9).load_state_dict(state)


@pytest.mark.parametrize("level", [1, 5])
def test_held_out_never_appears_in_training_and_levels_have_thousands_of_prompts(level):
    source = make_task("word_problems", seed=0, difficulty=level)
    held = {e.prompt for e in source.held_out(100)}
    trained = [e.prompt for e in source.sample(3000)]
    assert len(held) == 100 and held.isdisjoint(trained)
    assert len(set(trained)) > 2900  # thousands of distinct stories even at level 1
    other_seed = {e.prompt for e in make_task("word_problems", seed=5, difficulty=level).sample(2000)}
    assert held.isdisjoint(other_seed)


def test_higher_levels_have_more_steps_and_bigger_numbers():
    def mean_steps_and_largest(level: int) -> tuple[float, int]:
        examples = make_task("word_problems", seed=0, difficulty=level).sample(200)
        steps = sum(len(e.meta["steps"]) for e in examples) / len(examples)
        return steps, max(int(e.reference) for e in examples)

    stats = [mean_steps_and_largest(level) for level in LEVELS]
    assert [s for s, _ in stats] == sorted(s for s, _ in stats) and stats[-1][0] > 2 * stats[0][0]
    assert stats[-1][1] > 3 * stats[0][1]
    source = make_task("word_problems", seed=0, difficulty=1)
    source.set_difficulty([2, 4])
    assert {e.difficulty for e in source.sample(40)} == {2, 4}
    with pytest.raises(ValueError, match=r"valid levels are 1\.\.5"):
        source.set_difficulty(6)


def test_percent_events_appear_only_from_level_3():
    def with_percent(level: int) -> int:
        return sum("%" in e.prompt for e in make_task("word_problems", seed=0, difficulty=level).sample(300))

    assert with_percent(1) == with_percent(2) == 0
    assert with_percent(3) > 0


def test_mixed_with_arithmetic_draws_both_and_resumes():
    source = make_task("mixed", seed=0, difficulty=[1, 2], tasks=["arithmetic", "word_problems"])
    drawn = source.sample(60)
    assert {e.id.split("/")[0] for e in drawn} == {"arithmetic", "word_problems"}
    held = {e.prompt for e in source.held_out(40)}
    assert held.isdisjoint(e.prompt for e in source.sample(1000))
    state = source.state_dict()
    following = source.sample(10)
    fresh = make_task("mixed", seed=0, difficulty=1, tasks=["arithmetic", "word_problems"])
    fresh.load_state_dict(state)
    assert fresh.sample(10) == following


@pytest.mark.parametrize("recipe", ["smollm2-135m-arithmetic.yaml", "smollm2-135m-arithmetic-lora.yaml"])
def test_smollm2_recipes_train_and_evaluate_on_arithmetic_and_word_problems(recipe):
    from pathlib import Path

    from rlvr.pipeline.recipe import load_recipe

    spec = load_recipe(Path(__file__).resolve().parents[2] / "recipes" / recipe).task
    source = make_task(spec.name, seed=0, difficulty=spec.difficulty, **spec.options)
    assert {e.id.split("/")[0] for e in source.sample(40)} == {"arithmetic", "word_problems"}
    assert {e.id.split("/")[0] for e in source.held_out(200)} == {"arithmetic", "word_problems"}
