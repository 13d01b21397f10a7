"""Refill in the fast engine (`FastEngineConfig.refill_rows`): a call asking for more rows than it
decodes at once hands each finished row to the next waiting sample, prefilled mid-generation.
Every completion is the one the engine gives without refill (greedy), or one whose log-probs a
forward pass over its own prompt reproduces (sampled)."""
from __future__ import annotations

import os

import pytest
import torch

from rlvr.models.char_tokenizer import build_char_tokenizer
from rlvr.rollout.base import SamplingParams
from rlvr.rollout.fast import FastEngine, FastEngineConfig

from test_fast import _forward_logprobs, _model, _prompt_ids
from test_fast_compaction import _assert_same, _fake_cuda_graphs

CAP = 16
# 3 prompts x G=4, lengths [1, 2, 3, 3, 4, 6, 12, 16 (truncated at the cap), 2, 5, 7, 9] greedy
END_AT = [1, 2, 3, 9, 4, 6, 12, 40, 2, 5, 7, 9]
GREEDY = SamplingParams(max_new_tokens=CAP, temperature=0.0)


@pytest.fixture(scope="module")
def setup():
    tokenizer = build_char_tokenizer()
    model = _model(tokenizer)
    plain = FastEngine(model, tokenizer, FastEngineConfig())
    return tokenizer, model, plain


@pytest.mark.parametrize("rows,every", [(4, 1), (4, 3), (8, 1), (8, 4), (4, 16)])
def test_refilled_rows_give_the_completions_of_an_unrefilled_call_cpu(setup, rows, every):
    tokenizer, model, plain = setup
    expected = plain.generate(_prompt_ids(tokenizer), 4, GREEDY, end_at=END_AT)
    engine = FastEngine(model, tokenizer, FastEngineConfig(refill_rows=rows, refill_check_every=every))
    got = engine.generate(_prompt_ids(tokenizer), 4, GREEDY, end_at=END_AT)
    _assert_same(expected, got)
    assert got.truncated == [i == 7 for i in range(12)]
    stats = engine.last_refill
    assert stats["runs"] == 1 and stats["refills"] == 12 - rows  # every row past the first ones
    if every == 1:  # freed lanes are refilled at once: fewer steps than one prompt after another
        assert stats["steps"] < 3 * CAP


def _fake_prefill_graphs(monkeypatch) -> list:
    """Route refill's prefill through `PrefillGraphs` on the CPU: a fake graph's replay reruns the
    forward it captured on its static inputs, into its static outputs. Returns the PrefillGraphs
    made (their `graphs` per bucket) and counts each replay on its graph."""
    import contextlib

    from rlvr.rollout import fast_refill

    class Graph:
        capturing = None

        def __init__(self):
            self.rerun, self.replays = None, 0

        def replay(self):
            self.replays += 1
            self.rerun()

    @contextlib.contextmanager
    def graph(g, pool=None):
        Graph.capturing = g
        yield
        Graph.capturing = None

    class Stream:
        def wait_stream(self, other):
            pass

    real = FastEngine.prefill

    def recorded(engine, ids, valid):
        out = real(engine, ids, valid)
        if Graph.capturing is not None:
            def rerun():
                new = real(engine, ids, valid)
                for dst, src in zip([out[0], *out[1], *out[2]], [new[0], *new[1], *new[2]]):
                    dst.copy_(src)
            Graph.capturing.rerun = rerun
        return out

    for name, value in (("Stream", Stream), ("current_stream", Stream), ("CUDAGraph", Graph), ("graph", graph),
                        ("stream", lambda s: contextlib.nullcontext())):
        monkeypatch.setattr(torch.cuda, name, value)
    monkeypatch.setattr(FastEngine, "prefill", recorded)
    monkeypatch.setattr(fast_refill.RefillRun, "_graphed", lambda self, st: True)
    made = []
    init = fast_refill.PrefillGraphs.__init__

    def remember(self, *args):
        init(self, *args)
        made.append(self)
    monkeypatch.setattr(fast_refill.PrefillGraphs, "__init__", remember)
    return made


def test_captured_prefill_graphs_leave_the_completions_unchanged_cpu(setup, monkeypatch):
    """The newcomers' prefill from captured graphs: prompts left-padded to the run's widest and
    rows to a power-of-two bucket give the greedy completions of an unrefilled call, one graph per
    bucket replayed at every fill."""
    tokenizer, model, plain = setup
    expected = plain.generate(_prompt_ids(tokenizer), 4, GREEDY, end_at=END_AT)
    made = _fake_prefill_graphs(monkeypatch)
    engine = FastEngine(model, tokenizer, FastEngineConfig(refill_rows=4, refill_check_every=1))
    _assert_same(expected, engine.generate(_prompt_ids(tokenizer), 4, GREEDY, end_at=END_AT))
    assert len(made) == engine.last_refill["runs"] == 1
    graphs = made[0].graphs
    assert graphs and all(bucket & (bucket - 1) == 0 for bucket in graphs)  # powers of two
    replays = sum(entry[0].replays for entry in graphs.values())
    assert replays > 1  # the first fill and the refills
    with pytest.raises(ValueError, match="padded to width"):  # static shapes: the run's width only
        made[0](torch.zeros((1, made[0].width + 1), dtype=torch.long), torch.ones((1, made[0].width + 1), dtype=torch.bool))


def test_a_failed_prefill_capture_falls_back_to_eager_cpu(setup, monkeypatch):
    """A capture that raises (an untested GPU or toolchain) warns once and prefills eagerly."""
    from rlvr.rollout import fast_refill

    tokenizer, model, plain = setup
    expected = plain.generate(_prompt_ids(tokenizer), 4, GREEDY, end_at=END_AT)
    _fake_prefill_graphs(monkeypatch)

    def broken(self, bucket):
        raise RuntimeError("no graphs here")
    monkeypatch.setattr(fast_refill.PrefillGraphs, "_capture", broken)
    engine = FastEngine(model, tokenizer, FastEngineConfig(refill_rows=4, refill_check_every=1))
    with pytest.warns(UserWarning, match="capturing the prefill failed.*no graphs here") as caught:
        _assert_same(expected, engine.generate(_prompt_ids(tokenizer), 4, GREEDY, end_at=END_AT))
    assert len([w for w in caught if "capturing the prefill" in str(w.message)]) == 1


def test_refill_with_the_models_own_eos_cpu(setup):
    tokenizer, model, plain = setup
    params = SamplingParams(max_new_tokens=24, temperature=0.0)
    expected = plain.generate(_prompt_ids(tokenizer), 2, params)
    engine = FastEngine(model, tokenizer, FastEngineConfig(refill_rows=2, refill_check_every=2))
    got = engine.generate(_prompt_ids(tokenizer), 2, params)
    _assert_same(expected, got)
    assert got.lengths == expected.lengths and len(set(got.lengths)) > 1


def test_prompts_past_the_cache_horizon_wait_for_the_next_run_cpu(setup):
    """Rows that all run to the cap (greedy, this prompt ends past it): a row takes three samples
    within its output columns (3 x the cap), so 2 rows take two runs for 12 samples."""
    tokenizer, model, plain = setup
    prompts = [_prompt_ids(tokenizer)[1]] * 6
    end_at = [40] * 12
    expected = plain.generate(prompts, 2, GREEDY, end_at=end_at)
    engine = FastEngine(model, tokenizer, FastEngineConfig(refill_rows=2, refill_check_every=1))
    got = engine.generate(prompts, 2, GREEDY, end_at=end_at)
    _assert_same(expected, got)
    assert got.lengths == [CAP] * 12 and all(got.truncated)
    stats = engine.last_refill
    assert {k: stats[k] for k in ("runs", "refills", "steps")} == {"runs": 2, "refills": 8, "steps": 2 * (3 * CAP - 2)}
    # 2 rows stepped by every replay (a run's first token comes from the prefill), and the checks timed
    assert stats["row_steps"] == 2 * 2 * (3 * CAP - 3) and stats["check_s"] > 0
    # the last samples run unrefilled: steps 33-45 of the first run (its horizon), 32-45 of the
    # second (its queue emptied at the check of step 31)
    assert stats["drain_steps"] == 13 + 14
    assert set(stats) == {"runs", "refills", "steps", "drain_steps", "row_steps", "check_s", "prefill_s", "wait_s"}
    assert 0 < stats["prefill_s"] < stats["check_s"]  # the newcomers' prefill is part of the checks' work


def test_a_longer_refill_horizon_takes_the_queue_in_one_run_cpu(setup):
    """refill_horizon=6: each of the 2 rows takes its 6 samples in one run, paying one drain
    instead of two, with the outputs unchanged."""
    tokenizer, model, plain = setup
    prompts = [_prompt_ids(tokenizer)[1]] * 6
    end_at = [40] * 12
    expected = plain.generate(prompts, 2, GREEDY, end_at=end_at)
    engine = FastEngine(model, tokenizer, FastEngineConfig(refill_rows=2, refill_check_every=1, refill_horizon=6))
    _assert_same(expected, engine.generate(prompts, 2, GREEDY, end_at=end_at))
    stats = engine.last_refill
    assert {k: stats[k] for k in ("runs", "refills", "steps", "drain_steps")} == {
        "runs": 1, "refills": 10, "steps": 6 * CAP - 5, "drain_steps": 14}
    with pytest.raises(ValueError, match="refill_horizon"):
        FastEngineConfig(refill_rows=2, refill_horizon=0)


def test_sampled_refilled_rows_keep_their_own_prompt_cpu(setup):
    tokenizer, model, _ = setup
    prompts = _prompt_ids(tokenizer)
    engine = FastEngine(model, tokenizer, FastEngineConfig(refill_rows=4, refill_check_every=1))
    params = SamplingParams(max_new_tokens=CAP, temperature=0.9, seed=2)
    out = engine.generate(prompts, 4, params, end_at=END_AT)
    assert engine.last_refill["refills"] == 8 and all(length <= CAP for length in out.lengths)
    for i, (completion, logprobs) in enumerate(zip(out.completion_ids, out.logprobs)):
        expected = _forward_logprobs(model, prompts[i // 4], completion, params.temperature)
        torch.testing.assert_close(torch.tensor(logprobs[:-1]), expected[:-1], atol=1e-4, rtol=0)


def test_refill_through_captured_graphs_and_a_reused_state_cpu(setup, monkeypatch):
    """The graph path (captured on first use, replayed) over refilled rows, twice on the same
    state, equals the eager engine without refill."""
    tokenizer, model, plain = setup
    engine = FastEngine(model, tokenizer, FastEngineConfig(refill_rows=8, refill_check_every=1, compact_min_rows=1))
    _fake_cuda_graphs(monkeypatch, engine)
    for end_at in (END_AT, END_AT[::-1]):
        _assert_same(plain.generate(_prompt_ids(tokenizer), 4, GREEDY, end_at=end_at),
                     engine.generate(_prompt_ids(tokenizer), 4, GREEDY, end_at=end_at))
    assert len(engine._states) == 1 and 8 in next(iter(engine._states.values())).graphs


def test_a_call_within_refill_rows_runs_as_without_refill_cpu(setup):
    tokenizer, model, plain = setup
    engine = FastEngine(model, tokenizer, FastEngineConfig(refill_rows=12))
    _assert_same(plain.generate(_prompt_ids(tokenizer), 4, GREEDY, end_at=END_AT),
                 engine.generate(_prompt_ids(tokenizer), 4, GREEDY, end_at=END_AT))
    assert engine.last_refill is None


def test_a_recipe_engine_block_turns_refill_on(setup):
    """`engine: {name: fast, refill_rows: 4}` reaches the engine the stages build."""
    from rlvr.rollout import make_engine
    from rlvr.rollout.engine_config import EngineConfig

    tokenizer, model, plain = setup
    engine = make_engine(EngineConfig(name="fast", kernels="torch", refill_rows=4), model, tokenizer)
    assert engine.config.refill_rows == 4
    _assert_same(plain.generate(_prompt_ids(tokenizer), 4, GREEDY, end_at=END_AT),
                 engine.generate(_prompt_ids(tokenizer), 4, GREEDY, end_at=END_AT))
    assert engine.last_refill["refills"] == 8


def test_negative_refill_rows_is_a_config_error():
    with pytest.raises(ValueError, match="refill_rows: must be >= 0"):
        FastEngineConfig(refill_rows=-1)
    with pytest.raises(ValueError, match="refill_check_every: must be >= 1"):
        FastEngineConfig(refill_rows=8, refill_check_every=0)


@pytest.mark.gpu
@pytest.mark.parametrize("kernels", ["triton", "torch"])
def test_refill_keeps_results_cuda_graph(kernels):
    tokenizer = build_char_tokenizer()
    model = _model(tokenizer, device="cuda")
    plain = FastEngine(model, tokenizer, FastEngineConfig(kernels=kernels))
    engine = FastEngine(model, tokenizer, FastEngineConfig(kernels=kernels, refill_rows=4, refill_check_every=1))
    for end_at in (END_AT, END_AT[::-1]):
        _assert_same(plain.generate(_prompt_ids(tokenizer), 4, GREEDY, end_at=end_at),
                     engine.generate(_prompt_ids(tokenizer), 4, GREEDY, end_at=end_at))
    assert engine.last_refill["refills"] == 8


@pytest.mark.gpu
@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="the Triton CPU interpreter")
def test_refill_through_the_triton_kernels_interpreted():
    """The Triton step (attention reading each row from its `start`, the fused sampler recording
    into the state) over refilled rows, run by the Triton interpreter on CPU tensors."""
    tokenizer = build_char_tokenizer()
    model = _model(tokenizer)

    def triton_engine(**config):
        engine = FastEngine(model, tokenizer, FastEngineConfig(**config))
        engine.fused, engine.stacked = True, None  # FastEngine picks them on CUDA only
        engine._set_forward()
        return engine

    expected = triton_engine().generate(_prompt_ids(tokenizer), 4, GREEDY, end_at=END_AT)
    engine = triton_engine(refill_rows=4, refill_check_every=1)
    _assert_same(expected, engine.generate(_prompt_ids(tokenizer), 4, GREEDY, end_at=END_AT))
    assert engine.last_refill["refills"] == 8


def test_completions_shorter_than_the_check_interval_still_refill_cpu(setup):
    """max_new_tokens below refill_check_every: the host checks once per cap, so capped rows hand over
    their slots within the run instead of idling until the next run."""
    tokenizer, model, _ = setup
    params = SamplingParams(max_new_tokens=5, temperature=0.0)
    plain = FastEngine(model, tokenizer, FastEngineConfig())
    engine = FastEngine(model, tokenizer, FastEngineConfig(refill_rows=4, refill_check_every=16))
    _assert_same(plain.generate(_prompt_ids(tokenizer), 4, params), engine.generate(_prompt_ids(tokenizer), 4, params))
    stats = engine.last_refill
    assert {k: stats[k] for k in ("runs", "refills", "steps", "row_steps")} == {
        "runs": 1, "refills": 8, "steps": 15, "row_steps": 4 * 14}
    assert stats["drain_steps"] == 0  # the last samples end at the check that finds the queue empty


@pytest.mark.gpu
def test_refill_checks_queue_their_work_without_waiting_for_the_gpu(monkeypatch):
    """A check's collection and refill only queue work: a synchronizing call inside them (a Python
    scalar written through a tensor index is one: a blocking copy) makes the host wait for every
    decode step queued since the last check, and the GPU idle while the host then works."""
    from rlvr.rollout.fast_refill import RefillRun

    tokenizer = build_char_tokenizer()
    model = _model(tokenizer, device="cuda")
    plain = FastEngine(model, tokenizer, FastEngineConfig(cuda_graph=False))
    engine = FastEngine(model, tokenizer, FastEngineConfig(cuda_graph=False, refill_rows=4, refill_check_every=2))

    def strict(method):
        def wrapped(*args, **kwargs):
            torch.cuda.set_sync_debug_mode("error")
            try:
                return method(*args, **kwargs)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return wrapped
    expected = plain.generate(_prompt_ids(tokenizer), 4, GREEDY, end_at=END_AT)
    for name in ("_refill", "_collect_done", "_running"):
        monkeypatch.setattr(RefillRun, name, strict(getattr(RefillRun, name)))
    _assert_same(expected, engine.generate(_prompt_ids(tokenizer), 4, GREEDY, end_at=END_AT))
    assert engine.last_refill["refills"] == 8
