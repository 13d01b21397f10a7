"""verify_batch: order, isolation of hanging/crashing/memory-hungry items, scale, threads."""
import threading
import time

import pytest
import verifier_test_kinds  # noqa: F401  (registers the hostile test kinds)

from verifiers import verify, verify_batch


def test_input_order_is_kept():
    completions = [f"item-{i}" for i in range(40)]
    results = verify_batch("test_echo", completions, [None] * 40, workers=2)
    assert [r.extracted for r in results] == completions


FAILURES = [
    # (kind, the bad completion, reason prefix)
    ("test_hang", "hang", "timeout: no verdict within 1 s"),  # an item that never returns
    ("test_crash", "segfault", "crashed: worker killed by SIGSEGV"),  # a hard crash
    ("test_crash", "exit", "crashed: worker exited with code 3"),  # an exit mid-check
]


@pytest.mark.parametrize("kind, bad, reason", FAILURES)
def test_one_bad_item_gets_zero_and_the_batch_goes_on(kind, bad, reason):
    completions = ["a", "b", bad, "c", "d"]
    results = verify_batch(kind, completions, [None] * 5, timeout_s=1.0, workers=2)
    assert results[2].score == 0.0 and results[2].reason == reason, results[2]
    assert [r.extracted for i, r in enumerate(results) if i != 2] == ["a", "b", "c", "d"]


def test_an_item_exhausting_memory_gets_zero_and_the_batch_goes_on():
    results = verify_batch("test_oom", ["a", "oom", "b", "c"], [None] * 4, timeout_s=20.0, workers=2)
    assert results[1].score == 0.0 and results[1].reason.startswith("out of memory"), results[1]
    assert [results[i].extracted for i in (0, 2, 3)] == ["a", "b", "c"]


def test_thousands_of_math_completions_in_one_batch():
    # Like a GRPO batch: 250 prompts x 8 completions. Three prompts in four have plain-number
    # answers (the in-process fast path); the others have LaTeX answers for the workers, each
    # group repeating two distinct answers (one right, one wrong), which are checked once each.
    completions, references, expected = [], [], []
    for prompt in range(250):
        for sample in range(8):
            right = sample % 2 == 0
            if prompt % 4:
                completions.append(f"... so the answer is \\boxed{{{prompt if right else prompt + 1}}}")
            else:
                completions.append(f"\\boxed{{\\frac{{{prompt}}}{{2}} + \\sqrt{{{4 if right else 5}}}}}")
            references.append(str(prompt) if prompt % 4 else f"{prompt / 2 + 2}")
            expected.append(right)
    start = time.monotonic()
    results = verify_batch("math", completions, references, timeout_s=10.0, workers=2)
    elapsed = time.monotonic() - start
    print(f"\n2000 math completions: {elapsed:.1f} s")
    assert [r.correct for r in results] == expected
    assert elapsed < 45


def test_a_batch_from_a_non_main_thread_with_a_hang_in_it():
    outcome = {}

    def work():
        outcome["results"] = verify_batch(
            "math", [r"\boxed{\frac{6}{4}}", r"\boxed{9^{9^{9^{9}}}}", r"\boxed{x=2}"], ["1.5", "1", "2"], timeout_s=1.5
        )

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    reasons = [r.reason for r in outcome["results"]]
    assert reasons[0] == "correct" and reasons[1].startswith("timeout") and reasons[2] == "correct"


def test_single_verify_calls_from_many_threads():
    answers = {}

    def work(i):
        answers[i] = verify("math", rf"\boxed{{\sqrt{{{i * i}}}}}", str(i)).correct

    threads = [threading.Thread(target=work, args=(i,)) for i in range(1, 4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert answers == {i: True for i in range(1, 4)}


def test_mismatched_lengths_and_non_text_completions_are_errors():
    with pytest.raises(ValueError, match="2 completions but 1 references"):
        verify_batch("math", ["1", "2"], ["1"])
    with pytest.raises(TypeError, match=r"completions\[1\]"):
        verify_batch("math", ["1", None], ["1", "1"])


def test_repeated_final_answers_are_checked_once(monkeypatch):
    # A GRPO group repeats answers: only distinct (answer, reference) pairs reach the workers.
    from verifiers import pool

    sent = []
    real_map = pool.WorkerPool.map

    def counting_map(self, tasks, timeout_s, workers):
        sent.extend(tasks)
        return real_map(self, tasks, timeout_s, workers)

    monkeypatch.setattr(pool.WorkerPool, "map", counting_map)
    completions = [f"try {i}: \\boxed{{\\sqrt{{{4 + i % 2}}}}}" for i in range(16)]
    results = verify_batch("math", completions, ["2"] * 16, workers=2)
    assert len(sent) == 2
    assert [r.correct for r in results] == [i % 2 == 0 for i in range(16)]
