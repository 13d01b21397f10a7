"""Many problems searched at once (`run_search_batch`): the same answers as one at a time, exact
ledgers per problem, and one engine call per round instead of one per problem."""
import pytest
import torch

from rlvr.search import BeamSearchConfig, BestOfNConfig, DVTSConfig, MCTSConfig, run_search
from rlvr.search.batched import RoundStats, run_search_batch
from rlvr.search.context import GenerationConfig, SearchContext
from toy_setup import toy_context, toy_problem

PROBLEMS = [toy_problem(a, b) for a, b in [(3, 4), (1, 2), (5, 2), (2, 1), (4, 3)]]
GREEDY_CONFIGS = {
    "best_of_n": BestOfNConfig(num_generations=3, scorer="verifier"),
    "beam_search": BeamSearchConfig(beam_width=2, expansions=2, max_steps=3, scorer="verifier"),
    "dvts": DVTSConfig(subtrees=2, expansions=2, max_steps=3, scorer="verifier"),
    "mcts": MCTSConfig(simulations=4, expansions=2, max_depth=3, value="rollout", scorer="verifier"),
}


class CountingEngine:
    """The real engine, with its calls counted."""

    def __init__(self, engine):
        self.engine, self.calls = engine, 0

    def generate(self, prompt_ids, group_size, params):
        self.calls += 1
        return self.engine.generate(prompt_ids, group_size, params)


def greedy_context(toy, max_new_tokens=6):
    model, tokenizer = toy
    ctx = toy_context(model, tokenizer, max_new_tokens=max_new_tokens)
    ctx.generation = GenerationConfig(temperature=0.0, max_new_tokens=max_new_tokens, max_step_tokens=2,
                                      step_separator="\n")
    ctx.engine = CountingEngine(ctx.engine)
    return ctx


@pytest.mark.parametrize("method", sorted(GREEDY_CONFIGS))
def test_batched_search_answers_as_one_problem_at_a_time(toy, method):
    # Greedy decoding makes each search a function of its problem: any mix-up between problems
    # (a completion handed to the wrong search) changes some answer or text.
    cfg = GREEDY_CONFIGS[method]
    one = greedy_context(toy)
    sequential = [run_search(method, p, one, cfg) for p in PROBLEMS]
    many = greedy_context(toy)
    stats = RoundStats()
    batched = run_search_batch(method, PROBLEMS, many, cfg, stats=stats)
    assert [r.text for r in batched] == [r.text for r in sequential]
    assert [r.tokens_spent for r in batched] == [r.tokens_spent for r in sequential]
    assert many.generated_tokens == one.generated_tokens == sum(r.tokens_spent for r in batched)
    # One engine call per round for all five problems, instead of one per problem per round.
    assert many.engine.calls == stats.engine_calls <= stats.rounds
    assert many.engine.calls * 2 < one.engine.calls


def test_rows_cap_splits_an_engine_call_without_changing_the_ledger(toy):
    ctx = greedy_context(toy)
    stats = RoundStats()
    results = run_search_batch("best_of_n", PROBLEMS, ctx, BestOfNConfig(num_generations=4, scorer="verifier"), max_rows=8,
                               stats=stats)
    # one sampling round of 20 rows, at most 8 (two problems) per call, then one scoring round
    assert stats.rounds == 2 and stats.engine_calls == 3
    assert ctx.generated_tokens == sum(r.tokens_spent for r in results)
    assert all(len(r.details["sample_tokens"]) == 4 for r in results)


def test_one_failing_search_raises_after_the_others_finish(toy):
    ctx = greedy_context(toy)
    # mcts asks for a scorer that is not loaded: its error reaches the caller, nothing hangs.
    with pytest.raises(Exception, match="scorer 'prm' is not loaded"):
        run_search_batch("mcts", PROBLEMS[:3], ctx, MCTSConfig(simulations=2, value="prm", scorer="prm"))


def test_reward_model_scores_many_problems_in_shared_forwards(toy):
    from rlvr.reward_models.model import RewardModel

    model, tokenizer = toy
    torch.manual_seed(0)
    prm = RewardModel.from_policy(model, tokenizer, "prm", step_separator="\n")
    torch.nn.init.normal_(prm.head.weight, std=1.0)
    texts = {"Q: 3+4\nA: ": ["7", "1\n3\n", "5\n1"], "Q: 1+2\nA: ": ["3\n", "1"]}
    one_by_one = [prm.score_texts(p, t, "min") for p, t in texts.items()]
    together = prm.score_texts_many(list(texts.items()), "min")
    assert [len(t) for t in together] == [3, 2]
    for got, want in zip(together, one_by_one):
        assert got == pytest.approx(want, abs=1e-6)
    assert prm.step_scores_many([("Q: 3+4\nA: ", ["1", "3"])], batch_size=1)[0] == pytest.approx(
        prm.step_scores("Q: 3+4\nA: ", [["1", "3"]])[0], abs=1e-6)


def test_problems_beyond_max_concurrent_run_in_waves_with_the_same_answers(toy):
    cfg = GREEDY_CONFIGS["beam_search"]
    together = run_search_batch("beam_search", PROBLEMS, greedy_context(toy), cfg)
    waves_ctx = greedy_context(toy)
    waves = run_search_batch("beam_search", PROBLEMS, waves_ctx, cfg, max_concurrent=2)
    assert [r.text for r in waves] == [r.text for r in together]
    assert waves_ctx.generated_tokens == sum(r.tokens_spent for r in waves)
    with pytest.raises(ValueError, match="max_concurrent"):
        run_search_batch("beam_search", PROBLEMS, waves_ctx, cfg, max_concurrent=0)


def _fast_context(device: str):
    from rlvr.config import from_dict
    from rlvr.models import ModelConfig, load_policy
    from rlvr.rollout import EngineConfig, make_engine

    cfg = from_dict(ModelConfig, {"name_or_path": "tiny", "tiny": {
        "hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64, "max_position_embeddings": 96}})
    policy = load_policy(cfg, device=device, train=True)  # fp32: greedy choices do not depend on the batch
    engine = make_engine(EngineConfig(name="fast", kernels="torch" if device == "cpu" else "auto"),
                         policy.model, policy.tokenizer)
    generation = GenerationConfig(temperature=0.0, max_new_tokens=12, max_step_tokens=4, step_separator=",")
    return SearchContext(CountingEngine(engine), policy.tokenizer, generation), policy


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_batched_search_on_the_fast_engine_matches_one_problem_at_a_time(device):
    from rlvr.search import Problem
    from rlvr.tasks import make_task, render_prompt

    one, policy = _fast_context(device)
    problems = [Problem(render_prompt(ex, policy.tokenizer, template="plain"), ex)
                for ex in make_task("arithmetic", seed=0, difficulty=1).held_out(6)]
    cfg = BeamSearchConfig(beam_width=2, expansions=2, max_steps=3, scorer="verifier")
    sequential = [run_search("beam_search", p, one, cfg) for p in problems]
    many, _ = _fast_context(device)
    batched = run_search_batch("beam_search", problems, many, cfg)
    assert [r.text for r in batched] == [r.text for r in sequential]
    assert many.generated_tokens == one.generated_tokens
    assert many.engine.calls * 2 < one.engine.calls
