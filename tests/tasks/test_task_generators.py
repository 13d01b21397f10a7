"""Seeded generators: reproducible streams, exact resume, held-out split, levels, verifiable solutions."""
from __future__ import annotations

import re

import pytest
import sympy
from sympy.parsing.sympy_parser import implicit_multiplication_application, parse_expr, standard_transformations

import verifiers
from rlvr.tasks import make_task
from rlvr.tasks.arithmetic import add_columns, mul_steps, sub_columns
from rlvr.tasks.generator import GeneratorSource
from rlvr.tasks.registry import available_tasks, register_task

GENERATORS = ["arithmetic", "linear_equation", "countdown", "python_functions"]
R1_FORMAT = re.compile(r"^<think>.+</think><answer>.+</answer>$", re.S)


@pytest.mark.parametrize("name", GENERATORS)
@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
def test_examples_are_complete_and_at_their_level(name, level):
    for ex in make_task(name, seed=0, difficulty=level).sample(20):
        assert ex.prompt and ex.reference is not None and ex.id
        assert ex.difficulty == level
        assert ex.kind == {"countdown": "countdown", "python_functions": "code"}.get(name, "math")
        assert R1_FORMAT.match(ex.solution), ex.solution


@pytest.mark.parametrize("name", GENERATORS)
@pytest.mark.parametrize("level", [1, 3, 5])
def test_worked_solutions_pass_their_verifier(name, level):
    examples = make_task(name, seed=7, difficulty=level).sample(12)
    results = verifiers.verify_batch(examples[0].kind, [e.solution for e in examples], [e.reference for e in examples])
    assert [r.reason for r in results if not r.correct] == []


@pytest.mark.parametrize("name", ["arithmetic", "linear_equation"])
def test_a_wrong_answer_fails_the_verifier(name):
    # The references must discriminate: the worked solution with its answer off by one is wrong.
    for ex in make_task(name, seed=3, difficulty=3).sample(10):
        wrong = ex.solution.replace(f"<answer>{ex.reference}</answer>", f"<answer>{int(ex.reference) + 1}</answer>")
        assert not verifiers.verify(ex.kind, wrong, ex.reference).correct


def test_a_program_that_ignores_the_task_fails_its_hidden_tests():
    examples = make_task("python_functions", seed=2, difficulty=[1, 2, 3, 4, 5]).sample(6)
    # Same function name and parameters, body returning the argument unchanged.
    stubs = [f"```python\ndef {e.meta['function']}(*args):\n    return args[0]\n```" for e in examples]
    results = verifiers.verify_batch("code", stubs, [e.reference for e in examples])
    assert all(r.score < 1.0 for r in results), [(e.prompt, r) for e, r in zip(examples, results)]


def test_countdown_solution_with_a_number_used_twice_fails():
    ex = make_task("countdown", seed=1, difficulty=3).sample(1)[0]
    numbers = ex.reference["numbers"]
    cheat = f"<answer>{'+'.join(str(numbers[0]) for _ in range(numbers.count(numbers[0]) + 1))}</answer>"
    assert not verifiers.verify("countdown", cheat, ex.reference).correct


@pytest.mark.parametrize(
    "a, b, expected",
    [
        (95, 17, "5+7=12,9+1+1=11"),  # carry out of the last column becomes the leading digits
        (123, 45, "3+5=8,2+4=6,1+0=1"),  # the shorter number is padded with zeros
        (0, 0, "0+0=0"),
    ],
)
def test_add_columns(a, b, expected):
    assert add_columns(a, b) == expected


@pytest.mark.parametrize(
    "a, b, expected",
    [
        (52, 38, "12-8=4,5-1-3=1"),  # borrow shown as -1 on the next column
        (503, 498, "13-8=5,10-1-9=0,5-1-4=0"),  # borrow through a zero
        (77, 33, "7-3=4,7-3=4"),
    ],
)
def test_sub_columns(a, b, expected):
    assert sub_columns(a, b) == expected


def test_mul_steps_sums_partial_products():
    assert mul_steps(47, 38) == "47*8=376,47*30=1410,376+1410=1786"
    assert mul_steps(47, 3) == "47*3=141"


def test_arithmetic_reference_is_the_value_of_the_expression():
    for level in range(1, 6):
        for ex in make_task("arithmetic", seed=11, difficulty=level).sample(50):
            expression = ex.meta["expression"]
            assert re.fullmatch(r"[0-9+*-]+", expression)
            assert int(ex.reference) == eval(expression)  # our own digits-and-operators string, not model output


def test_linear_equation_reference_solves_the_equation():
    x = sympy.Symbol("x")
    transformations = standard_transformations + (implicit_multiplication_application,)
    for level in range(1, 6):
        for ex in make_task("linear_equation", seed=5, difficulty=level).sample(30):
            lhs, rhs = ex.meta["equation"].split("=")
            equation = sympy.Eq(parse_expr(lhs, transformations=transformations),
                                parse_expr(rhs, transformations=transformations))
            assert sympy.solve(equation, x) == [int(ex.reference)], ex.prompt


def test_arithmetic_ops_option_limits_operators():
    for ex in make_task("arithmetic", seed=0, difficulty=5, ops=["+"]).sample(30):
        assert set(re.sub(r"\d", "", ex.meta["expression"])) == {"+"}
    with pytest.raises(ValueError, match="ops must be a non-empty subset"):
        make_task("arithmetic", ops=["/"])


@pytest.mark.parametrize("name", GENERATORS + ["mixed"])
def test_same_seed_same_stream_other_seed_other_stream(name):
    a = make_task(name, seed=1, difficulty=2).sample(30)
    b = make_task(name, seed=1, difficulty=2).sample(30)
    c = make_task(name, seed=2, difficulty=2).sample(30)
    assert a == b
    assert [e.prompt for e in a] != [e.prompt for e in c]


@pytest.mark.parametrize("name", GENERATORS + ["mixed"])
def test_resume_from_state_dict_continues_exactly(name):
    source = make_task(name, seed=4, difficulty=[1, 2, 3])
    batches = [source.sample(8) for _ in range(5)]
    # Draw two batches, save, restore into a fresh source: the next three must be identical.
    replay = make_task(name, seed=4, difficulty=[1, 2, 3])
    replay.sample(8), replay.sample(8)
    state = replay.state_dict()
    fresh = make_task(name, seed=4, difficulty=1)  # level differs: the state carries it
    fresh.load_state_dict(state)
    assert [fresh.sample(8) for _ in range(3)] == batches[2:]


def test_state_from_another_seed_is_refused():
    state = make_task("arithmetic", seed=1).state_dict()
    with pytest.raises(ValueError, match="seed"):
        make_task("arithmetic", seed=2).load_state_dict(state)


@pytest.mark.parametrize("name, level", [("arithmetic", 2), ("linear_equation", 3), ("countdown", 2),
                                         ("python_functions", 1), ("mixed", 2)])
def test_training_stream_never_yields_a_held_out_problem(name, level):
    source = make_task(name, seed=0, difficulty=level)
    held = {e.prompt for e in source.held_out(20)}
    trained = {e.prompt for e in source.sample(3000)}
    assert len(held) == 20
    assert held.isdisjoint(trained)


def test_held_out_partition_is_the_same_for_every_seed():
    # A problem is held out by its text, so another seed cannot train on seed 0's eval problems.
    held = {e.prompt for e in make_task("arithmetic", seed=0, difficulty=2).held_out(30)}
    trained = {e.prompt for e in make_task("arithmetic", seed=9, difficulty=2).sample(3000)}
    assert held.isdisjoint(trained)


def test_held_out_is_fixed_distinct_and_does_not_move_the_stream():
    source = make_task("linear_equation", seed=0, difficulty=3)
    first = source.held_out(25)
    assert len({e.prompt for e in first}) == 25
    state = source.state_dict()
    assert source.held_out(25) == first
    assert source.state_dict() == state
    assert make_task("linear_equation", seed=0, difficulty=3).held_out(25) == first


def test_held_out_reports_an_exhausted_problem_space():
    # Level 1 arithmetic has 300 problems; a tenth of them are held out.
    with pytest.raises(ValueError, match="distinct held-out problems found at difficulty 1"):
        make_task("arithmetic", seed=0, difficulty=1).held_out(200)


def test_set_difficulty_changes_levels_and_validates():
    source = make_task("countdown", seed=0, difficulty=1)
    source.set_difficulty(4)
    assert source.difficulty == 4
    assert {e.difficulty for e in source.sample(10)} == {4}
    source.set_difficulty([2, 5])
    assert {e.difficulty for e in source.sample(60)} == {2, 5}
    with pytest.raises(ValueError, match=r"valid levels are 1\.\.5"):
        source.set_difficulty(6)
    with pytest.raises(ValueError, match="valid levels"):
        make_task("arithmetic", difficulty=0)


def test_mixed_draws_from_every_task_with_weights_and_passes_difficulty_on():
    source = make_task("mixed", seed=0, difficulty=2, tasks={"arithmetic": {"ops": ["+"]}, "countdown": {}},
                       weights=[3, 1])
    kinds = [e.id.split("/")[0] for e in source.sample(400)]
    assert 250 < kinds.count("arithmetic") < 350 and kinds.count("countdown") == 400 - kinds.count("arithmetic")
    source.set_difficulty(3)
    assert {e.difficulty for e in source.sample(20)} == {3}
    assert len(source.held_out(10)) == 10
    with pytest.raises(ValueError, match="weights"):
        make_task("mixed", tasks=["arithmetic"], weights=[1, 2])


def test_registry_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown task 'algebra'; valid tasks: arithmetic, countdown"):
        make_task("algebra")
    with pytest.raises(ValueError, match="task 'countdown'.*colour"):
        make_task("countdown", colour="red")
    with pytest.raises(ValueError, match="already registered"):
        register_task("arithmetic")(GeneratorSource)
    assert set(GENERATORS + ["mixed", "dataset"]) <= set(available_tasks())
