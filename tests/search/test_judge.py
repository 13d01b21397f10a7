"""LLM-as-a-judge: P(Yes) / (P(Yes) + P(No)) read from a local model's next-token distribution."""
import pytest
import torch

from rlvr.models import TinyModelConfig, build_char_tokenizer, build_tiny_model
from rlvr.search import BestOfNConfig, JudgeScorer, run_search
from toy_setup import toy_context, toy_problem


@pytest.fixture(scope="module")
def judge():
    tok = build_char_tokenizer()
    model = build_tiny_model(tok, TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                                                  max_position_embeddings=512), seed=1)
    return JudgeScorer(model.eval(), tok)


def test_judge_score_is_the_yes_probability_of_the_verdict_token(judge):
    problem = toy_problem()
    texts = ["7", "31\n5"]
    scores = judge.score(problem, texts)
    tok = judge.tokenizer
    # " Yes" and " No" share the leading space: the verdict is read one token later.
    assert tok.convert_ids_to_tokens(judge.shared_prefix) == [" "]
    assert tok.convert_ids_to_tokens([judge.yes_id, judge.no_id]) == ["Y", "N"]
    for text, score in zip(texts, scores):
        prompt = judge.template.format(problem=problem.example.prompt, solution=text) + " "
        ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            logits = judge.model(input_ids=ids).logits[0, -1]
        expected = torch.softmax(logits[[judge.yes_id, judge.no_id]], -1)[0].item()
        assert score == pytest.approx(expected, abs=1e-5)  # batching with left padding changes nothing
        assert 0.0 < score < 1.0
    assert judge.num_tokens(problem, texts) == sum(len(judge.prompts(problem, [t])[0]) for t in texts)


def test_judge_works_as_a_best_of_n_scorer(judge):
    from toy_setup import toy_policy

    torch.manual_seed(0)
    ctx = toy_context(*toy_policy(), scorers={"judge": judge})
    result = run_search("best_of_n", toy_problem(), ctx, BestOfNConfig(num_generations=4, scorer="judge"))
    assert result.details["scores"][result.details["chosen"]] == max(result.details["scores"])
    assert result.details["scored_tokens"] > 0


def test_judge_rejects_verdicts_that_do_not_differ(judge):
    with pytest.raises(ValueError, match="do not differ"):
        JudgeScorer(judge.model, judge.tokenizer, yes=" Yes", no=" Yes")
    with pytest.raises(ValueError, match="must contain"):
        JudgeScorer(judge.model, judge.tokenizer, template="no placeholders")
