"""rlvr.rewards: verifier scores weighted per kind, the format reward, DAPO's soft overlong penalty,
per-verifier columns, and clear errors for bad config or mismatched inputs. Real verifiers."""
import math

import pytest

from rlvr.config import ConfigError, from_dict
from rlvr.rewards import RewardConfig, compute_rewards, overlong_penalty
from rlvr.tasks.base import Example

NUM = Example(prompt="2+3?", reference="5", kind="numeric")
CD = Example(prompt="make 10", reference={"numbers": [2, 5], "target": 10}, kind="countdown")


@pytest.mark.parametrize("length,expected", [
    (10, 0.0),    # well under L_max - L_cache
    (15, 0.0),    # exactly at the start of the ramp
    (17, -0.4),   # (15 - 17) / 5
    (20, -1.0),   # at L_max
    (25, -1.0),   # beyond L_max
])
def test_overlong_penalty_matches_dapo_formula(length, expected):
    assert overlong_penalty(length, max_length=20, cache=5) == pytest.approx(expected)


def test_scores_weights_and_per_kind_columns():
    texts = ["the answer is 5", "it is 4", "<answer>2*5</answer>"]
    cfg = RewardConfig(weights={"countdown": 0.5})
    out = compute_rewards([NUM, NUM, CD], texts, [5, 5, 5], [False] * 3, cfg)
    assert out.correct == [True, False, True]
    assert out.total == pytest.approx([1.0, 0.0, 0.5])  # countdown weighs 0.5
    assert out.per_verifier["numeric"][:2] == [1.0, 0.0] and math.isnan(out.per_verifier["numeric"][2])
    assert out.per_verifier["countdown"][2] == 1.0 and math.isnan(out.per_verifier["countdown"][0])
    assert len(out.reasons) == 3 and all(isinstance(r, str) for r in out.reasons)


def test_format_reward_and_overlong_penalty_add_up():
    texts = ["<think>2+3</think><answer>5</answer>", "5"]
    cfg = RewardConfig(format_weight=0.2, overlong_max_length=10, overlong_cache=4)
    out = compute_rewards([NUM, NUM], texts, [3, 9], [False, False], cfg)
    assert out.per_verifier["format"] == [1.0, 0.0]
    assert out.per_verifier["overlong"] == pytest.approx([0.0, -0.75])  # (6 - 9) / 4
    assert out.total == pytest.approx([1.0 + 0.2, 1.0 - 0.75])


def test_format_is_measured_but_not_rewarded_by_default():
    out = compute_rewards([NUM], ["5"], [1], [False], RewardConfig())
    assert set(out.per_verifier) == {"numeric", "format"}  # no overlong column: that term is off
    assert out.per_verifier["format"] == [0.0]  # "5" has no <think>/<answer> tags...
    assert out.total == [1.0]  # ...and costs nothing: the format rate is only logged


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="same length"):
        compute_rewards([NUM, NUM], ["5"], [1], [False], RewardConfig())


@pytest.mark.parametrize("data,match", [
    ({"overlong_max_length": 10}, "overlong_cache"),          # penalty on, no ramp
    ({"overlong_max_length": 10, "overlong_cache": 11}, "overlong_cache"),
    ({"timeout_s": 0}, "timeout_s"),
    ({"wieghts": {}}, "unknown key reward.wieghts"),           # typo caught by the loader
    ({"weights": {"math": "high"}}, "reward.weights.math"),
])
def test_bad_config_names_the_field(data, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(RewardConfig, data, "reward")


def test_unknown_kind_lists_valid_kinds():
    bad = Example(prompt="?", reference="1", kind="astrology")
    with pytest.raises(ValueError, match="astrology"):
        compute_rewards([bad], ["1"], [1], [False], RewardConfig())


def test_verifier_options_reach_the_verifier():
    # an R1 prompt that ends with "<think>": the completion starts inside the think block
    text = "2+3=5</think><answer>5</answer>"
    plain = compute_rewards([NUM], [text], [5], [False], RewardConfig(format_weight=1.0))
    opened = compute_rewards([NUM], [text], [5], [False], RewardConfig(
        format_weight=1.0, verifier_options={"format": {"prompt_opens_think": True}}))
    assert plain.per_verifier["format"] == [0.0] and opened.per_verifier["format"] == [1.0]
    with pytest.raises(TypeError, match="unknown option"):
        compute_rewards([NUM], [text], [5], [False], RewardConfig(verifier_options={"numeric": {"nope": 1}}))
