"""The math kind: extraction, equivalence, the exact fast path and math-verify's pitfalls."""
import time

import pytest

from verifiers import answers_equivalent, extract_answer, verify, verify_batch

EXTRACTION = [
    # (completion, strategies or None for the default, expected answer)
    (r"so \boxed{\frac{1}{2}} hence \boxed{3}", None, "3"),  # the last boxed wins
    (r"\boxed{\{1, \{2\}\}}", None, r"\{1, \{2\}\}"),  # nested braces stay balanced
    ("<think>2+2</think><answer>4</answer>", None, "4"),  # answer tags
    (r"<answer>so \boxed{7}</answer>", None, "7"),  # a boxed answer inside the tags
    ("The final answer is: $\\frac{3}{4}$.", None, "\\frac{3}{4}"),  # "the answer is", $ and . stripped
    ("First 3 apples, then 1,234.5 pears", None, "1,234.5"),  # last number, thousands kept
    ("no digits at all", None, None),  # nothing to find
    (r"answer \boxed{5} but the answer is 6", ["the_answer_is", "boxed"], "6"),  # order is configurable
    ("the answer is 6", ["boxed"], None),  # a strategy left out is not used
    (r"\boxed{unclosed", None, None),  # unbalanced braces: no boxed answer, no number
]


@pytest.mark.parametrize("completion, strategies, expected", EXTRACTION)
def test_extract_answer(completion, strategies, expected):
    kwargs = {} if strategies is None else {"strategies": strategies}
    assert extract_answer(completion, **kwargs) == expected


def test_unknown_strategy_is_named():
    with pytest.raises(ValueError, match="nope"):
        extract_answer("x", ["nope"])


EQUIVALENT = [
    # (completion, reference, correct?)
    (r"\boxed{42}", "42", True),  # plain integers (fast path)
    (r"\boxed{42}", "43", False),  # plain integers differ
    (r"\boxed{\frac{1}{2}}", "0.5", True),  # LaTeX fraction vs decimal (fast path)
    ("the answer is 3/4", r"\dfrac{3}{4}", True),  # a/b vs \dfrac
    (r"\boxed{1,000}", "1000", True),  # thousands separator
    (r"\boxed{50\%}", "0.5", True),  # percentage (math-verify)
    (r"\boxed{\{1,2\}}", r"\{2,1\}", True),  # sets are unordered
    (r"\boxed{[1,2)}", "[1,2)", True),  # intervals
    (r"\boxed{(1,2]}", "[1,2)", False),  # intervals with other ends
    (r"\boxed{\begin{pmatrix}1&2\\3&4\end{pmatrix}}", r"\begin{pmatrix}1&2\\3&4\end{pmatrix}", True),  # matrices
    (r"\boxed{\begin{pmatrix}1&2\\3&5\end{pmatrix}}", r"\begin{pmatrix}1&2\\3&4\end{pmatrix}", False),  # one entry off
    (r"\boxed{5\text{ cm}}", "5", True),  # units
    (r"\boxed{\sqrt{2}/2}", r"\frac{\sqrt{2}}{2}", True),  # symbolic forms
    (r"\boxed{(x+1)^2}", "x^2+2x+1", True),  # expanded vs factored
    (r"\boxed{x = 5}", "5", True),  # "x = value" against a value
    (r"\boxed{x^2 = 25}", "25", False),  # an equation is not its right-hand side
    (r"\boxed{x + y = 2}", "2", False),  # same
    ("the answer is 0.0000001", "0.0000002", False),  # tiny numbers differ (math-verify would round them equal)
    (r"\boxed{10^{-7}}", "2 \\times 10^{-7}", False),  # tiny numbers in LaTeX go through the guard too
    (r"\boxed{1000001}", "1000000", False),  # large integers are compared exactly
    (r"\boxed{0.333333}", r"\frac{1}{3}", True),  # within the relative tolerance of 1e-6
    (r"\boxed{\pi}", "3.14159", False),  # pi is not a rounded decimal
    ("nothing here", "3", False),  # no answer
]


@pytest.mark.parametrize("completion, reference, correct", EQUIVALENT)
def test_math_equivalence(completion, reference, correct):
    result = verify("math", completion, reference, timeout_s=20)
    assert result.correct is correct, result
    assert result.score == (1.0 if correct else 0.0)
    assert result.reason == "correct" if correct else result.reason != "correct"


def test_fast_path_needs_no_worker(monkeypatch):
    # Plain numbers are judged in-process: make the pool unusable and they still work.
    import verifiers.api

    monkeypatch.setattr(verifiers.api, "shared_pool", lambda: pytest.fail("the fast path used the pool"))
    assert verify("math", "The answer is 1,234", "1234").correct
    assert verify("math", "no answer", "1234").reason == "no answer found"


def test_integers_past_pythons_digit_limit_are_compared_as_digits(monkeypatch):
    import verifiers.api

    monkeypatch.setattr(verifiers.api, "shared_pool", lambda: pytest.fail("a plain integer used the pool"))
    digits = "7" * 5000  # int() of a string this long raises
    assert verify("math", f"\\boxed{{{digits}}}", digits).correct
    assert verify("math", f"The answer is +000{digits}", digits).correct  # equal, not the same text
    assert verify("math", f"\\boxed{{{digits[:-1]}8}}", digits).reason == "wrong answer"


def test_an_answer_written_as_its_reference_needs_no_evaluation(monkeypatch):
    import verifiers.api

    monkeypatch.setattr(verifiers.api, "shared_pool", lambda: pytest.fail("an exact match used the pool"))
    huge = "+".join(["1"] * 20000)  # sympy cannot evaluate this within any sensible deadline
    assert verify("math", f"\\boxed{{{huge.replace('+', ' + ')}}}", huge, timeout_s=2).correct
    assert verify("math", r"\boxed{\pi r^2}", r"\pi r^2").correct


def test_sympy_hard_answers_end_at_the_deadline():
    hard = [
        r"\boxed{9^{9^{9^{9}}}}",  # exponent tower: sympy would compute for hours
        r"\boxed{\frac{9^{9^{9^{9}}}}{9^{9^{9^{9}}}+1}}",  # the same inside a fraction
        r"\boxed{1e999999999}",  # not expanded by the in-process fast path; the worker may try
        r"\boxed{\sqrt{4}}",  # an ordinary item in the same batch still gets its verdict
    ]
    start = time.monotonic()
    results = verify_batch("math", hard, ["1", "1", "1", "2"], timeout_s=1.5, workers=2)
    elapsed = time.monotonic() - start
    assert results[0].reason == "timeout: no verdict within 1.5 s"
    assert results[1].reason.startswith("timeout")
    assert results[2].score == 0.0 and results[2].reason.startswith(("timeout", "wrong answer"))
    assert results[3].correct
    assert elapsed < 2 * 1.5 + 8.0  # two rounds of deadlines plus worker starts on two busy cores


def test_unknown_option_is_an_error():
    with pytest.raises(TypeError, match="rel_tolerance.*valid options"):
        verify("math", r"\boxed{1}", "1", rel_tolerance=0.1)


def test_bad_reference_is_an_error():
    with pytest.raises(ValueError, match=r"references\[0\].*string"):
        verify("math", r"\boxed{1}", ["1"])


EQUIVALENT_ANSWERS = [
    # (a, b, same?)
    (r"\frac{1}{2}", "0.5", True),  # voting groups these together
    ("1/3", "0.3333", False),  # beyond the tolerance
    (r"x^2+2x+1", "(x+1)^2", True),  # symbolic
    ("12", "12.0", True),  # integer written as decimal
]


@pytest.mark.parametrize("a, b, same", EQUIVALENT_ANSWERS)
def test_answers_equivalent(a, b, same):
    assert answers_equivalent(a, b) is same


def test_answers_equivalent_for_kinds_without_answers_compares_text():
    assert answers_equivalent("(3 + 5) * 2 ", "(3 + 5) * 2", kind="countdown")
    assert not answers_equivalent("(3 + 5) * 2", "2 * (3 + 5)", kind="countdown")
    with pytest.raises(ValueError, match="unknown verifier kind"):
        answers_equivalent("a", "a", kind="nope")


@pytest.mark.parametrize(
    "text",
    [
        "\\boxed{" * 20000,  # thousands of unclosed boxes: one pass, not a rescan per box
        "<answer>" * 50000 + "</answer>",  # many opening tags
        "the answer is " * 50000,  # one long "answer is" line
        "1," * 200000,  # a number-like run
    ],
)
def test_extraction_stays_fast_on_hostile_text(text):
    # Extraction runs in the caller's process (before any worker), so it must never be slow.
    start = time.monotonic()
    extract_answer(text)
    verify("numeric", text, "1")
    assert time.monotonic() - start < 3.0


NUMERIC_VERDICTS = [
    # (answer, reference, verdict: True/False decided numerically, None = left to math-verify)
    (r"2 + \sqrt{5}", "4", False),  # far apart: no symbolic proof needed (math-verify takes seconds)
    (r"\frac{7}{2} + \sqrt{4}", "5.5", True),  # equal to 25 digits
    (r"\sqrt{2}/2", r"\frac{\sqrt{2}}{2}", True),  # the same constant written twice
    ("0.333333", r"\frac{1}{3}", None),  # close but not equal: math-verify's rounding decides
    (r"\pi", "3.14159", None),  # same
    ("x + 1", "2", None),  # not a constant
]


@pytest.mark.parametrize("answer, reference, verdict", NUMERIC_VERDICTS)
def test_numeric_verdict_for_constants(answer, reference, verdict):
    from verifiers.math_answer import _numeric_verdict, _parse

    decided = _numeric_verdict(_parse(answer)[0], _parse(reference)[0])
    assert (None if decided is None else decided[0]) is verdict
