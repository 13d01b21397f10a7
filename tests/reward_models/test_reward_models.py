"""ORM/PRM: verifier-made labels, BCE training, scoring with aggregation, save/load."""
import json

import pytest
import torch

from rlvr.reward_models import (
    LabeledSolution,
    RewardModel,
    RewardModelError,
    RewardTrainConfig,
    aggregate,
    encode_steps,
    evaluate_loss,
    load_reward_model,
    orm_labels,
    prm_labels,
    split_steps,
    train_reward_model,
)
from toy_setup import toy_context, toy_policy, toy_problem

PROBLEMS = [toy_problem(3, 4), toy_problem(1, 4)]


@pytest.fixture(scope="module")
def toy():
    return toy_policy(seed=0)


@pytest.fixture(scope="module")
def orm_records(toy):
    torch.manual_seed(0)
    ctx = toy_context(*toy)
    return orm_labels(ctx, [(p.prompt, p.example) for p in PROBLEMS], num_generations=48)


def test_split_and_encode_steps_put_scores_at_step_ends(toy):
    _, tok = toy
    assert split_steps("a\n\nb\n\n\n\nc") == ["a", "b", "c"]
    assert split_steps("3\n7", "\n") == ["3", "7"]
    ids, ends = encode_steps(tok, "Q: ", ["3", "17"], "\n")
    assert tok.decode(ids) == "Q: 3\n17\n"
    assert [tok.decode(ids[: e + 1]) for e in ends] == ["Q: 3\n", "Q: 3\n17\n"]
    with pytest.raises(ValueError, match="non-empty"):
        split_steps("x", "")


@pytest.mark.parametrize(
    "scores, how, expected",
    [([0.9, 0.5, 0.8], "last", 0.8), ([0.9, 0.5, 0.8], "min", 0.5), ([0.5, 0.5], "prod", 0.25),
     ([0.2, 0.4], "mean", 0.3), ([], "last", 0.0)],
)
def test_aggregate(scores, how, expected):
    assert aggregate(scores, how) == pytest.approx(expected)


def test_unknown_aggregation_is_an_error():
    with pytest.raises(RewardModelError, match="unknown aggregation 'max'; valid: last, min, prod, mean"):
        aggregate([0.5], "max")


def test_orm_labels_come_from_the_verifier(orm_records):
    assert len(orm_records) == 96
    for rec in orm_records:
        answer = "7" if rec.prompt == PROBLEMS[0].prompt else "5"
        text = "\n".join(rec.steps)
        last_number = [tok for tok in text.replace("\n", " ").split() if tok.isdigit()][-1:] or [None]
        assert rec.labels == [1.0 if last_number[0] == answer else 0.0]
    assert 0 < sum(r.labels[0] for r in orm_records) < len(orm_records)  # both classes present


def test_orm_training_lowers_loss_and_ranks_correct_above_incorrect(toy, orm_records):
    model, tok = toy
    orm = RewardModel.from_policy(model, tok, "orm", step_separator="\n")
    before = evaluate_loss(orm, orm_records)
    losses = train_reward_model(orm, orm_records, RewardTrainConfig(epochs=20, learning_rate=1e-3, batch_size=8))
    after = evaluate_loss(orm, orm_records)
    assert after < before * 0.8 and losses[-1] < losses[0]
    scores = [orm.score(r.prompt, r.steps) for r in orm_records]
    good = [s for s, r in zip(scores, orm_records) if r.labels[0] == 1.0]
    bad = [s for s, r in zip(scores, orm_records) if r.labels[0] == 0.0]
    # AUC: how often a correct solution outscores an incorrect one.
    auc = sum((g > b) + 0.5 * (g == b) for g in good for b in bad) / (len(good) * len(bad))
    assert auc > 0.9
    assert model.lm_head.bias is not None  # the policy itself is untouched (a copy was trained)


@pytest.mark.parametrize("label_type", ["hard", "soft"])
def test_prm_labels_math_shepherd(toy, label_type):
    torch.manual_seed(1)
    ctx = toy_context(*toy)
    records = prm_labels(ctx, [(PROBLEMS[0].prompt, PROBLEMS[0].example)], num_generations=12,
                         rollouts_per_step=6, label_type=label_type)
    assert records and all(len(r.labels) == len(r.steps) for r in records)
    values = {v for r in records for v in r.labels}
    assert all(0.0 <= v <= 1.0 for v in values)
    if label_type == "hard":
        assert values <= {0.0, 1.0}
    multi = [r for r in records if len(r.steps) > 1]
    assert multi, "some sampled solutions must have several steps"


def test_soft_labels_are_fractions_and_hard_labels_are_any_correct(toy):
    from rlvr.reward_models.labels import step_label

    ctx = toy_context(*toy)
    p = PROBLEMS[0]
    torch.manual_seed(5)
    soft = step_label(ctx, p.prompt, p.example, ["3"], 16, "soft")
    torch.manual_seed(5)
    hard = step_label(ctx, p.prompt, p.example, ["3"], 16, "hard")
    assert soft in {i / 16 for i in range(17)}
    assert hard == float(soft > 0)


def test_prm_trains_scores_each_step_and_aggregation_changes_the_score(toy, tmp_path):
    torch.manual_seed(2)
    model, tok = toy
    ctx = toy_context(*toy)
    records = prm_labels(ctx, [(p.prompt, p.example) for p in PROBLEMS], num_generations=16,
                         rollouts_per_step=4, label_type="soft")
    prm = RewardModel.from_policy(model, tok, "prm", step_separator="\n", label_type="soft")
    before = evaluate_loss(prm, records)
    train_reward_model(prm, records, RewardTrainConfig(epochs=4, learning_rate=3e-3))
    assert evaluate_loss(prm, records) < before
    steps = ["3", "1", "7"]
    per_step = prm.step_scores(PROBLEMS[0].prompt, [steps])[0]
    assert len(per_step) == 3
    for how in ("last", "min", "prod", "mean"):
        assert prm.score(PROBLEMS[0].prompt, steps, how) == pytest.approx(aggregate(per_step, how), abs=1e-6)
    assert prm.score(PROBLEMS[0].prompt, steps, "prod") != pytest.approx(prm.score(PROBLEMS[0].prompt, steps, "last"))


def test_save_load_round_trip_and_kind_checks(toy, tmp_path):
    model, tok = toy
    prm = RewardModel.from_policy(model, tok, "prm", step_separator="\n")
    with torch.no_grad():
        prm.head.bias.fill_(0.7)
        prm.head.weight.normal_()
    saved = prm.save(tmp_path / "prm")
    loaded = load_reward_model(saved, expect="prm")
    assert loaded.config.step_separator == "\n"
    steps = ["3", "7"]
    assert loaded.step_scores("Q: ", [steps])[0] == pytest.approx(prm.step_scores("Q: ", [steps])[0], abs=1e-5)
    assert json.loads((saved / "reward_model.json").read_text())["kind"] == "prm"
    with pytest.raises(RewardModelError, match="is a PRM, not a ORM"):
        load_reward_model(saved, expect="orm")


def test_loading_something_that_is_not_a_reward_model_is_a_clear_error(tmp_path):
    with pytest.raises(RewardModelError, match="is not a reward model: it does not exist"):
        load_reward_model(tmp_path / "missing", expect="prm")
    (tmp_path / "policy").mkdir()
    (tmp_path / "policy" / "config.json").write_text("{}")
    with pytest.raises(RewardModelError, match="has no reward_model.json"):
        load_reward_model(tmp_path / "policy", expect="prm")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "reward_model.json").write_text('{"kind": "value"}')
    with pytest.raises(RewardModelError, match="not a valid reward model config"):
        load_reward_model(tmp_path / "bad")


def test_labels_must_match_scored_positions(toy):
    model, tok = toy
    prm = RewardModel.from_policy(model, tok, "prm", step_separator="\n")
    with pytest.raises(ValueError, match="2 steps has 1 labels; expected 2"):
        train_reward_model(prm, [LabeledSolution("Q: ", ["3", "7"], [1.0])], RewardTrainConfig(epochs=1))


def test_a_prm_with_another_step_separator_is_refused_by_search(toy):
    from rlvr.search import RewardModelScorer, SearchError

    model, tok = toy
    prm = RewardModel.from_policy(model, tok, "prm")  # default separator: a blank line
    with pytest.raises(SearchError, match="trained with step separator '\\\\n\\\\n' but generation uses '\\\\n'"):
        toy_context(model, tok, scorers={"prm": RewardModelScorer(prm)})


def test_pairwise_loss_is_the_mean_over_right_wrong_pairs_of_each_problem():
    from rlvr.reward_models.train import pairwise_loss

    recs = [LabeledSolution("A", ["x"], [1.0]), LabeledSolution("A", ["y"], [0.0]), LabeledSolution("A", ["z"], [0.0]),
            LabeledSolution("B", ["x"], [0.0]), LabeledSolution("C", ["x"], [1.0]), LabeledSolution("C", ["y"], [0.2])]
    z = torch.tensor([2.0, 0.0, 1.0, 5.0, 0.0, 3.0], requires_grad=True)
    # Pairs: A (2 vs 0), A (2 vs 1), C (0 vs 3); B has no right solution, and a right solution is
    # never compared with another problem's wrong one.
    want = sum(torch.nn.functional.softplus(torch.tensor(-m)) for m in (2.0, 1.0, -3.0)) / 3
    got = pairwise_loss(z, recs)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    got.backward()
    assert z.grad[3] == 0 and z.grad[0] < 0 < z.grad[5]  # push right up, wrong down
    assert pairwise_loss(z, recs[3:4]).item() == 0.0  # no pairs: zero, still differentiable


def test_problem_batches_keep_each_problem_whole():
    import random

    from rlvr.reward_models.train import problem_batches

    recs = [LabeledSolution(p, ["s"], [0.0]) for p in "AAABBCCCCD"]
    batches = problem_batches(recs, 4, random.Random(0))
    assert sorted(i for b in batches for i in b) == list(range(10))
    for b in batches:
        for prompt in {recs[i].prompt for i in b}:
            assert sum(r.prompt == prompt for r in recs) == sum(recs[i].prompt == prompt for i in b)


def test_orm_with_the_pairwise_term_ranks_within_each_problem(toy, orm_records):
    model, tok = toy
    orm = RewardModel.from_policy(model, tok, "orm", step_separator="\n")
    cfg = RewardTrainConfig(epochs=40, learning_rate=1e-3, batch_size=16, pairwise_weight=1.0)
    losses = train_reward_model(orm, orm_records, cfg)
    assert losses[-1] < losses[0]
    for prompt in {r.prompt for r in orm_records}:
        mine = [r for r in orm_records if r.prompt == prompt]
        scores = [orm.score(r.prompt, r.steps) for r in mine]
        good = [s for s, r in zip(scores, mine) if r.labels[0] == 1.0]
        bad = [s for s, r in zip(scores, mine) if r.labels[0] == 0.0]
        assert good and bad
        assert sum((g > b) + 0.5 * (g == b) for g in good for b in bad) / (len(good) * len(bad)) > 0.9
    with pytest.raises(ValueError, match="pairwise_weight"):
        RewardTrainConfig(pairwise_weight=-1.0)


def test_fit_config_refuses_the_old_samples_key_naming_the_new_one():
    from rlvr.config import ConfigError, from_dict
    from rlvr.reward_models.fit import FitConfig

    with pytest.raises(ConfigError, match="samples_per_problem: renamed to num_generations"):
        from_dict(FitConfig, {"samples_per_problem": 4})
    assert from_dict(FitConfig, {"num_generations": 4}).num_generations == 4


def test_mixed_problems_only_trains_on_problems_with_both_outcomes(toy, monkeypatch):
    from rlvr.reward_models import train as train_module

    recs = [LabeledSolution("A", ["x"], [1.0]), LabeledSolution("A", ["y"], [0.0]), LabeledSolution("B", ["x"], [1.0]),
            LabeledSolution("B", ["y"], [1.0]), LabeledSolution("C", ["x"], [0.0]), LabeledSolution("C", ["z"], [0.4]),
            LabeledSolution("A", ["z"], [0.0])]
    assert [(r.prompt, r.steps) for r in train_module.mixed_outcome_records(recs)] == [
        ("A", ["x"]), ("A", ["y"]), ("A", ["z"])]  # B always right, C always wrong (0.4 < 0.5)
    seen = []
    monkeypatch.setattr(train_module, "batch_loss",
                        lambda model, batch, w, encoded: seen.extend(r.prompt for r in batch) or torch.ones((), requires_grad=True))
    model, tok = toy
    orm = RewardModel.from_policy(model, tok, "orm", step_separator="\n")
    train_reward_model(orm, recs, RewardTrainConfig(epochs=1, batch_size=2, mixed_problems_only=True))
    assert sorted(seen) == ["A", "A", "A"]
    with pytest.raises(ValueError, match="no problem has both"):
        train_reward_model(orm, recs[2:6], RewardTrainConfig(epochs=1, mixed_problems_only=True))
