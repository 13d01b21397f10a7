"""Search generation defaults live in one place: `GenerationConfig`, a `SamplingConfig` with the
step settings; the command-line defaults of `rlvr search`, `rlvr eval` and `rlvr generate` are its."""
import argparse
import codecs
import dataclasses

import pytest

from rlvr.rollout.base import SamplingParams
from rlvr.rollout.sampling import SamplingConfig
from rlvr.search.base import SearchError
from rlvr.search.context import GenerationConfig, SearchContext


def test_the_cli_defaults_are_generation_config_defaults():
    from rlvr.cli_setup import add_model_arguments

    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    args = parser.parse_args([])
    built = GenerationConfig(temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                             max_step_tokens=args.max_step_tokens,
                             step_separator=codecs.decode(args.step_separator, "unicode_escape"))
    assert built == GenerationConfig()


def test_sampling_fields_and_their_defaults_come_from_sampling_config():
    gen, sampling = GenerationConfig(), SamplingConfig()
    for f in dataclasses.fields(SamplingConfig):
        assert hasattr(gen, f.name)
        if f.name != "temperature":  # search's own default, said where it is set
            assert getattr(gen, f.name) == getattr(sampling, f.name), f.name
    assert gen.temperature == 0.8


@pytest.mark.parametrize("kwargs,message", [
    ({"max_new_tokens": 0}, "generation.max_new_tokens: must be >= 1"),
    ({"top_p": 0.0}, "generation.top_p: must be in (0, 1]"),
    ({"max_step_tokens": 0}, "generation.max_step_tokens: must be >= 1"),
    ({"step_separator": ""}, "generation.step_separator must be a non-empty string"),
])
def test_bad_generation_values_are_search_errors_naming_the_field(kwargs, message):
    with pytest.raises(SearchError, match=message.replace("(", r"\(").replace("]", r"\]")):
        GenerationConfig(**kwargs)


def test_every_sampling_setting_reaches_the_engine():
    seen = []

    class Recorder:
        def generate(self, prompt_ids, n, params):
            from rlvr.rollout.base import Rollout

            seen.append(params)
            rows = len(prompt_ids) * n
            return Rollout(prompt_ids, [[1]] * rows, ["x"] * rows, [False] * rows)

    from rlvr.models.char_tokenizer import build_char_tokenizer

    gen = GenerationConfig(temperature=0.5, top_p=0.9, top_k=3, stop=["</answer>"], max_step_tokens=5)
    ctx = SearchContext(Recorder(), build_char_tokenizer(), gen)
    ctx.sample_steps(["a"], 2)
    assert seen[0] == SamplingParams(max_new_tokens=5, temperature=0.5, top_p=0.9, top_k=3,
                                     stop=["</answer>", gen.step_separator])
