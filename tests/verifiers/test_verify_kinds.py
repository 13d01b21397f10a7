"""numeric, countdown and format kinds, the registry, and the no-torch import rule."""
import subprocess
import sys

import pytest

from verifiers import available_kinds, register_verifier, verify
from verifiers.result import full

NUMERIC = [
    # (completion, reference, options, correct?)
    ("The answer is 3.1416", "3.14159265", {"rel_tol": 1e-4}, True),  # within relative tolerance
    ("The answer is 3.1416", "3.14159265", {"rel_tol": 1e-6}, False),  # outside a tighter one
    ("The answer is 3.2", "3.14159265", {"abs_tol": 0.1}, True),  # absolute tolerance
    ("The answer is 1e-7", "2e-7", {}, False),  # tiny numbers compared exactly, not rounded
    (r"\boxed{-\frac{1}{4}}", "-0.25", {}, True),  # LaTeX fraction is a plain number
    ("about seven", "7", {}, False),  # no number at all
    (r"\boxed{\sqrt{2}}", "1.41421356", {}, False),  # not a plain number: no sympy in this kind
    ("<answer>12</answer>", 12, {}, True),  # a numeric reference need not be a string
]


@pytest.mark.parametrize("completion, reference, options, correct", NUMERIC)
def test_numeric(completion, reference, options, correct):
    assert verify("numeric", completion, reference, **options).correct is correct


def test_numeric_reasons():
    assert verify("numeric", "about seven", "7").reason == "no answer found"
    assert verify("numeric", r"\boxed{\sqrt{2}}", "1.4").reason == "not a number"
    with pytest.raises(ValueError, match="not a plain number"):
        verify("numeric", "1", "seven")


TARGET = {"numbers": [2, 3, 5, 7], "target": 16}
COUNTDOWN = [
    # (completion, reference, options, score, reason starts with)
    ("<answer>(3 + 5) * 2</answer>", TARGET, {}, 1.0, "correct"),  # uses a subset once each
    ("<answer>(3 + 5) * 2 = 16</answer>", TARGET, {}, 1.0, "correct"),  # "= target" allowed
    ("Thinking...\n7 + 2 + 5 + 2", TARGET, {}, 0.0, "number not available"),  # last line; 2 twice
    ("<answer>(7 - 5) * 8</answer>", TARGET, {}, 0.0, "number not available: 8 not given"),  # 8 not given
    ("<answer>(3 + 5) * 2</answer>", TARGET, {"use_all_numbers": True}, 0.0, "not all numbers used"),
    ("<answer>7 * 2 + 5 - 3</answer>", TARGET, {"use_all_numbers": True}, 1.0, "correct"),  # all four
    ("<answer>3 * 5 + 2 / 7</answer>", TARGET, {}, 0.0, "wrong answer: equals 107/7"),  # exact fractions
    ("<answer>(2 + 3) / (5 - 5)</answer>", {"numbers": [2, 3, 5, 5], "target": 1}, {}, 0.0, "division by zero"),
    ("<answer>2 ** 3 + 7 + 1</answer>", TARGET, {}, 0.0, "not allowed: Pow"),  # only + - * /
    ("<answer>-2 + 18</answer>", TARGET, {}, 0.0, "not allowed: USub"),  # no unary minus
    ("<answer>__import__('os').system('x')</answer>", TARGET, {}, 0.0, "not allowed: Call"),  # never run
    ("<answer>3.5 * 2 + 9</answer>", TARGET, {}, 0.0, "not allowed: constant 3.5"),  # integers only
    ("<answer>" + "(" * 300 + "2" + ")" * 300 + "</answer>", TARGET, {}, 0.0, "not an expression"),  # too nested
    ("<answer>" + "2+" * 600 + "2</answer>", TARGET, {}, 0.0, "expression too long"),  # length cap
    ("", TARGET, {}, 0.0, "no answer found"),  # empty completion
]


@pytest.mark.parametrize("completion, reference, options, score, reason", COUNTDOWN)
def test_countdown(completion, reference, options, score, reason):
    result = verify("countdown", completion, reference, **options)
    assert result.score == score and result.reason.startswith(reason), result


@pytest.mark.parametrize(
    "reference, field",
    [({"numbers": [1, 2]}, "target"), ({"numbers": "12", "target": 3}, "numbers"), ([1, 2], "dict")],
)
def test_countdown_bad_reference_names_the_field(reference, field):
    with pytest.raises(ValueError, match=field):
        verify("countdown", "<answer>1+2</answer>", reference)


FORMAT = [
    # (completion, options, correct?, reason starts with)
    ("<think>2+2=4</think>\n<answer>4</answer>", {}, True, "correct"),  # the R1 layout
    ("  <think>a</think><answer>4</answer>\n", {}, True, "correct"),  # whitespace around is fine
    ("<answer>4</answer>", {}, False, "bad format: expected exactly one <think>"),  # no think block
    ("<think>a</think>hello<answer>4</answer>", {}, False, "bad format: text outside"),  # text between
    ("<answer>4</answer><think>a</think>", {}, False, "bad format: tags out of order"),  # order
    ("<think>a</think><answer>1</answer><answer>2</answer>", {}, False, "bad format: expected exactly one <answer>"),
    ("<think>a</think><answer> </answer>", {}, False, "bad format: empty answer"),
    ("a</think><answer>4</answer>", {"prompt_opens_think": True}, True, "correct"),  # prompt ends with <think>
    ("<r>a</r><a>4</a>", {"think_tag": "r", "answer_tag": "a"}, True, "correct"),  # custom tag names
    ("</think>" * 50000 + "<answer>4</answer>", {}, False, "bad format"),  # hostile size, linear time
]


@pytest.mark.parametrize("completion, options, correct, reason", FORMAT)
def test_format(completion, options, correct, reason):
    result = verify("format", completion, None, **options)
    assert result.correct is correct and result.reason.startswith(reason), result


def test_registry_lists_kinds_and_rejects_duplicates_and_unknown_names():
    assert {"math", "numeric", "countdown", "format", "code"} <= set(available_kinds())
    with pytest.raises(ValueError, match="already registered"):
        register_verifier("math")(lambda completion, reference: full())
    with pytest.raises(ValueError, match="unknown verifier kind 'maths'.*'math'"):
        verify("maths", "1", "1")


def test_importing_verifiers_imports_no_torch_and_no_sympy():
    code = "import sys, verifiers; print('torch' in sys.modules, 'sympy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_docstring_examples():
    import doctest

    import verifiers
    from verifiers import api, countdown, extract, format_tags, math_answer, numeric, plain_numbers, registry, trl_adapter
    from verifiers.code import sandbox
    from verifiers.code import verifier as code_verifier

    modules = [
        verifiers, api, countdown, extract, format_tags, math_answer, numeric, plain_numbers, registry, trl_adapter,
        sandbox, code_verifier,
    ]
    for module in modules:
        failures, tried = doctest.testmod(module)
        assert failures == 0, module.__name__
