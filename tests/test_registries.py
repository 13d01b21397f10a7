"""Every name registry (losses, advantages, KL estimators, tasks, templates, rollout engines, stage
types, search methods) is one `rlvr.registry.Registry`: an unknown name raises the same error,
listing the valid names, and a name cannot be registered twice."""
import pytest

from rlvr.algorithms import ADVANTAGES, KL_ESTIMATORS, POLICY_LOSSES
from rlvr.pipeline.stages import STAGE_KINDS, stage_kind
from rlvr.registry import Registry, UnknownNameError
from rlvr.rollout import ENGINES, check_engine_name, make_engine, register_engine
from rlvr.search import get_method
from rlvr.tasks import make_task, render_prompt
from rlvr.tasks.base import Example


@pytest.mark.parametrize("lookup,listed", [
    (lambda: POLICY_LOSSES.get("dapoo"), "dapo"),
    (lambda: ADVANTAGES.get("ppo"), "grpo"),
    (lambda: KL_ESTIMATORS.get("k4"), "k3"),
    (lambda: make_task("arithmatic"), "arithmetic"),
    (lambda: render_prompt(Example(prompt="1+1", reference="2", kind="math"), template="r2"), "r1_chat"),
    (lambda: make_engine("vllm", None, None), "hf"),
    (lambda: check_engine_name("vllm"), "auto, fast, hf"),
    (lambda: stage_kind("evaluate"), "self_improve"),
    (lambda: get_method("beem"), "beam_search"),
], ids=["loss", "advantage", "kl", "task", "template", "engine", "engine name", "stage", "search"])
def test_an_unknown_name_raises_one_error_type_listing_the_valid_names(lookup, listed):
    with pytest.raises(UnknownNameError, match="unknown .*; valid") as err:
        lookup()
    assert listed in str(err.value)


def test_the_registries_share_one_mechanism():
    for registry in (POLICY_LOSSES, ADVANTAGES, KL_ESTIMATORS, ENGINES, STAGE_KINDS):
        assert isinstance(registry, Registry)
    with pytest.raises(ValueError, match="rollout engine 'hf' is already registered"):
        register_engine("hf", lambda model, tokenizer: None)
