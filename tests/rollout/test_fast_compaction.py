"""Compaction in the fast engine's decode loop: finished rows leave the stepped batch, and the rows
that remain give the same tokens, log-probs and truncation flags as without compaction."""
from __future__ import annotations

import pytest
import torch

from rlvr.models.char_tokenizer import build_char_tokenizer
from rlvr.rollout.base import SamplingParams
from rlvr.rollout.fast import FastEngine, FastEngineConfig

from test_fast import _check_greedy_matches_generate, _forward_logprobs, _model, _prompt_ids

EVERY_STEP = dict(check_every=1, compact_min_rows=1)  # compact as soon as half the rows are done
CAP = 16
# 3 prompts x G=4; greedy ends on its own at 3, 17 and 10 tokens for the three prompts, so the
# lengths are [1, 2, 3, 3, 4, 6, 12, 16 (truncated at the cap), 2, 5, 7, 9]
END_AT = [1, 2, 3, 9, 4, 6, 12, 40, 2, 5, 7, 9]
SIZES = [1, 2, 4, 12]  # the batch sizes stepped with END_AT


def _recording_engine(model, tokenizer, **config) -> tuple[FastEngine, list[int]]:
    """An engine whose every decode step records how many rows it ran on."""
    engine = FastEngine(model, tokenizer, FastEngineConfig(**config))
    stepped = []
    step = engine._step

    def recorded(batch, params):
        stepped.append(batch.n)
        step(batch, params)

    engine._step = recorded
    return engine, stepped


def _run_both(device: str, kernels: str = "auto"):
    tokenizer = build_char_tokenizer()
    model = _model(tokenizer, device=device)
    params = SamplingParams(max_new_tokens=CAP, temperature=0.0)
    plain, plain_steps = _recording_engine(model, tokenizer, compact=False, kernels=kernels, **EVERY_STEP)
    compact, compact_steps = _recording_engine(model, tokenizer, compact=True, kernels=kernels, **EVERY_STEP)
    expected = plain.generate(_prompt_ids(tokenizer), 4, params, end_at=END_AT)
    got = compact.generate(_prompt_ids(tokenizer), 4, params, end_at=END_AT)
    return expected, got, plain_steps, compact_steps


def _assert_same(expected, got):
    assert got.completion_ids == expected.completion_ids
    assert got.truncated == expected.truncated
    assert got.texts == expected.texts
    for a, b in zip(got.logprobs, expected.logprobs):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=1e-4, rtol=0)


def test_compaction_drops_finished_rows_and_keeps_results_cpu():
    expected, got, plain_steps, compact_steps = _run_both("cpu")
    _assert_same(expected, got)
    lengths = got.lengths
    assert lengths == [1, 2, 3, 3, 4, 6, 12, 16, 2, 5, 7, 9]
    assert got.truncated == [i == 7 for i in range(12)]
    assert plain_steps == [12] * (CAP - 1)  # without compaction every step runs every row
    assert compact_steps[0] == 12 and compact_steps[-1] == 1
    assert compact_steps == sorted(compact_steps, reverse=True)
    # after each step's check, the rows stepped are fewer than twice the rows still running
    for s, rows in enumerate(compact_steps, start=1):
        running = sum(length > s for length in lengths)
        assert rows < 2 * running or rows == 12, (s, rows, running)


def test_compaction_greedy_equals_generate_with_natural_eos_cpu():
    """No forced ends: rows stop at the model's own EOS (lengths 3, 10 and the cap here)."""
    tokenizer = build_char_tokenizer()
    model = _model(tokenizer)
    engine, stepped = _recording_engine(model, tokenizer, **EVERY_STEP)
    _check_greedy_matches_generate(model, tokenizer, engine)
    assert min(stepped) < max(stepped)  # it did compact


def test_compaction_keeps_rows_with_their_prompts_when_sampling_cpu():
    """Sampled rows are moved between slots: each returned completion's log-probs still equal a
    forward pass over its own prompt."""
    tokenizer = build_char_tokenizer()
    model = _model(tokenizer)
    engine, stepped = _recording_engine(model, tokenizer, **EVERY_STEP)
    prompts = _prompt_ids(tokenizer)
    params = SamplingParams(max_new_tokens=CAP, temperature=0.9, seed=2)
    out = engine.generate(prompts, 4, params, end_at=END_AT)
    for i, (completion, logprobs) in enumerate(zip(out.completion_ids, out.logprobs)):
        expected = _forward_logprobs(model, prompts[i // 4], completion, params.temperature)
        # all but the last token: a forced EOS has log-prob 0, not the model's
        torch.testing.assert_close(torch.tensor(logprobs[:-1]), expected[:-1], atol=1e-4, rtol=0)
    assert min(stepped) < max(stepped)


def test_compaction_state_reused_across_calls_cpu():
    """A second generate on the same state starts from all rows again, in their original order."""
    tokenizer = build_char_tokenizer()
    model = _model(tokenizer)
    engine, _ = _recording_engine(model, tokenizer, **EVERY_STEP)
    params = SamplingParams(max_new_tokens=CAP, temperature=0.0)
    first = engine.generate(_prompt_ids(tokenizer), 4, params, end_at=END_AT)
    second = engine.generate(_prompt_ids(tokenizer), 4, params, end_at=END_AT[::-1])
    reference = FastEngine(model, tokenizer, FastEngineConfig(compact=False))
    _assert_same(reference.generate(_prompt_ids(tokenizer), 4, params, end_at=END_AT[::-1]), second)
    assert first.lengths != second.lengths and len(engine._states) == 1


def test_bias_rebuilt_from_start_and_col_equals_the_stepped_one_cpu():
    """A fallback to torch ops mid-generation rebuilds the torch path's mask from what the Triton
    path keeps (start, col); it equals the mask the torch steps build."""
    tokenizer = build_char_tokenizer()
    model = _model(tokenizer)
    engine = FastEngine(model, tokenizer, FastEngineConfig(compact=False))
    engine.generate(_prompt_ids(tokenizer), 2, SamplingParams(max_new_tokens=CAP, temperature=0.0))
    st = next(iter(engine._states.values()))
    stepped = st.bias.clone()
    st.bias.fill_(0.0)
    st.rebuild_bias()
    assert torch.equal(st.bias, stepped)
    assert (stepped == 0).sum() < stepped.numel()  # padding and unwritten columns are masked


class _RecordedStep:
    """CPU stand-in for a CUDA graph: capture records the step's call (running nothing, as a real
    capture), replay runs it."""

    capturing = None

    def replay(self):
        self.engine._eager_step(*self.call)


def _fake_cuda_graphs(monkeypatch, engine: FastEngine) -> None:
    """Route the engine's capture path through `_RecordedStep` on the CPU."""
    import contextlib

    class Stream:
        def wait_stream(self, other):
            pass

    @contextlib.contextmanager
    def graph(g):
        _RecordedStep.capturing = g
        yield
        _RecordedStep.capturing = None

    for name, value in (("Stream", Stream), ("current_stream", Stream), ("CUDAGraph", _RecordedStep),
                        ("graph", graph), ("stream", lambda s: contextlib.nullcontext())):
        monkeypatch.setattr(torch.cuda, name, value)
    engine._eager_step = engine._step

    def step(batch, params):
        if _RecordedStep.capturing is None:
            return engine._eager_step(batch, params)
        _RecordedStep.capturing.engine, _RecordedStep.capturing.call = engine, (batch, params)

    def replay(st, batch, params):  # as FastEngine._replay on CUDA: capture on first use
        graph = st.graphs.get(batch.n) or engine._capture_or_fall_back(st, batch, params)
        graph.replay()

    monkeypatch.setattr(engine, "_step", step)
    monkeypatch.setattr(engine, "_replay", replay)


def test_capture_mid_generation_leaves_the_rollout_unchanged_cpu(monkeypatch):
    """Graphs of the smaller batches are captured mid-generation, after warm-up steps that run on
    the live state: what they write is put back, so the rollout is the eager one."""
    tokenizer = build_char_tokenizer()
    model = _model(tokenizer)
    engine = FastEngine(model, tokenizer, FastEngineConfig(**EVERY_STEP))
    _fake_cuda_graphs(monkeypatch, engine)
    eager = FastEngine(model, tokenizer, FastEngineConfig(**EVERY_STEP))
    params = SamplingParams(max_new_tokens=CAP, temperature=0.0)
    for end_at in (END_AT, END_AT[::-1]):  # the second call reuses the graphs
        _assert_same(eager.generate(_prompt_ids(tokenizer), 4, params, end_at=end_at),
                     engine.generate(_prompt_ids(tokenizer), 4, params, end_at=end_at))
    assert sorted(next(iter(engine._states.values())).graphs) == SIZES


@pytest.mark.gpu
@pytest.mark.parametrize("kernels", ["triton", "torch"])
def test_compaction_keeps_results_cuda_graph(kernels):
    expected, got, _, _ = _run_both("cuda", kernels)
    _assert_same(expected, got)


@pytest.mark.gpu
@pytest.mark.parametrize("kernels", ["triton", "torch"])
def test_compaction_captures_a_graph_per_batch_size(kernels):
    tokenizer = build_char_tokenizer()
    model = _model(tokenizer, device="cuda")
    engine = FastEngine(model, tokenizer, FastEngineConfig(kernels=kernels, **EVERY_STEP))
    params = SamplingParams(max_new_tokens=CAP, temperature=0.0)
    engine.generate(_prompt_ids(tokenizer), 4, params, end_at=END_AT)
    st = next(iter(engine._states.values()))
    sizes = sorted(st.graphs)  # [1, 2, 4, 12] when greedy ends as on the CPU
    assert sizes[-1] == 12 and len(sizes) > 1 and all(n & (n - 1) == 0 for n in sizes[:-1])
    _check_greedy_matches_generate(model, tokenizer, engine)
