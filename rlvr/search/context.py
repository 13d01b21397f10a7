"""The search context: the policy's engine, generation settings, scorers and the token ledger.

All policy generation in `rlvr.search` goes through `SearchContext.sample`, which counts every
generated token; methods report the tokens they spent and `run_search` checks the two agree.
"""
from __future__ import annotations

from dataclasses import dataclass

from rlvr.reward_models.steps import DEFAULT_SEPARATOR
from rlvr.rollout.base import SamplingParams
from rlvr.rollout.sampling import SamplingConfig
from rlvr.search.base import SearchError
from rlvr.tasks.prompts import encode_text


@dataclass
class GenerationConfig(SamplingConfig):
    """How the policy samples during search: a `SamplingConfig` (its fields and defaults;
    `max_new_tokens` caps a whole solution across its steps, `stop` ends every sample) plus the
    step settings. The defaults here are those of `rlvr search`, `rlvr eval` and `rlvr generate`."""

    # cooler than training's 1.0: votes and rankings need diverse samples, but mostly sensible ones
    temperature: float = 0.8
    """Sampling temperature (0 = greedy). Search needs diversity: keep it > 0."""
    max_step_tokens: int = 64
    """Cap on one step's length (tokens) when generating step by step."""
    step_separator: str = DEFAULT_SEPARATOR
    """The text that ends a step (default a blank line); generation stops right after it."""

    def __post_init__(self):
        try:
            super().__post_init__()
        except ValueError as e:
            raise SearchError(f"generation.{e}") from None
        if self.max_step_tokens < 1:
            raise SearchError(f"generation.max_step_tokens: must be >= 1, got {self.max_step_tokens}")
        if not self.step_separator:
            raise SearchError("generation.step_separator must be a non-empty string")


@dataclass
class Completion:
    """One sampled continuation."""

    text: str
    """The generated text (a stop string, when hit, is included)."""
    num_tokens: int
    """Tokens generated (what the ledger counts)."""
    finish: str
    """'stop' (hit a stop string), 'length' (hit the token cap) or 'eos'."""
    mean_logprob: float | None = None
    """Mean log-probability of the generated tokens, when the engine reports it (MCTS priors)."""


class SearchContext:
    """Everything a search method needs besides the problem and its config."""

    def __init__(self, engine, tokenizer, generation: GenerationConfig | None = None, scorers: dict | None = None):
        from rlvr.search.scorers import VerifierScorer

        self.engine = engine
        self.tokenizer = tokenizer
        self.generation = generation or GenerationConfig()
        self.scorers = {"verifier": VerifierScorer(), **(scorers or {})}
        for name, scorer in self.scorers.items():
            sep = getattr(getattr(getattr(scorer, "model", None), "config", None), "step_separator", None)
            if sep is not None and sep != self.separator:
                raise SearchError(
                    f"scorer {name!r} was trained with step separator {sep!r} but generation uses "
                    f"{self.separator!r}; set generation.step_separator to match"
                )
        self.generated_tokens = 0
        """Every policy token generated through this context so far."""
        self.scored_tokens = 0
        """Every token a reward model or judge read through this context so far."""

    @property
    def separator(self) -> str:
        return self.generation.step_separator

    def scorer(self, name: str):
        if name not in self.scorers:
            raise SearchError(
                f"scorer {name!r} is not loaded; loaded: {', '.join(sorted(self.scorers))} "
                "(load an ORM/PRM with --orm/--prm, a judge with --judge)"
            )
        return self.scorers[name]

    def score(self, scorer: str, problem, texts: list[str], aggregation: str = "last") -> list[float]:
        """Scores of (partial) solution texts by the named scorer; counts the tokens it reads."""
        chosen = self.scorer(scorer)
        if not texts:
            return []
        self.scored_tokens += chosen.num_tokens(problem, texts)
        return self._score(scorer, problem, texts, aggregation)

    def score_samples(self, scorer: str, problem, samples: list["Completion"], aggregation: str = "last") -> list[float]:
        """Scores of whole sampled solutions: `confidence` from the samples' own log-probs (no
        model call, no tokens read), any other scorer from their texts (`score`)."""
        from rlvr.eval.curves import CONFIDENCE, confidence_scores

        if scorer == CONFIDENCE:
            return confidence_scores(samples)
        return self.score(scorer, problem, [s.text for s in samples], aggregation)

    def score_many(self, scorer: str, items: list[tuple], aggregation: str = "last") -> list[list[float]]:
        """`score` for (problem, texts) items of several problems; a reward model scores them all
        in shared forwards."""
        chosen = self.scorer(scorer)
        self.scored_tokens += sum(chosen.num_tokens(problem, texts) for problem, texts in items)
        return score_items(chosen, items, aggregation)

    def _score(self, scorer: str, problem, texts: list[str], aggregation: str) -> list[float]:
        """The scorer call itself (a batched view gathers these across problems)."""
        return self.scorers[scorer].score(problem, texts, aggregation)

    def sample(self, prefixes: list[str], n: int, max_new_tokens: int, stop: list[str] | None = None) -> list[list[Completion]]:
        """n continuations of each prefix (prompt text + partial solution), grouped by prefix."""
        if n < 1:
            raise SearchError(f"number of samples must be >= 1, got {n}")
        if max_new_tokens < 1:
            raise SearchError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        params = SamplingParams.of(self.generation, max_new_tokens=max_new_tokens,
                                   stop=[*self.generation.stop, *(stop or [])])
        out = self._generate(prefixes, n, params)
        self.generated_tokens += sum(c.num_tokens for group in out for c in group)
        return out

    def _generate(self, prefixes: list[str], n: int, params: SamplingParams) -> list[list[Completion]]:
        """One engine call (a batched view gathers these across problems)."""
        return generate(self.engine, self.tokenizer, prefixes, n, params)

    def sample_solutions(self, prefix: str, n: int, max_new_tokens: int | None = None) -> list[Completion]:
        """n whole solutions continuing `prefix`."""
        return self.sample([prefix], n, max_new_tokens or self.generation.max_new_tokens)[0]

    def sample_steps(self, prefixes: list[str], n: int, max_tokens: int | None = None) -> list[list[Completion]]:
        """n next steps for each prefix: generation stops right after the step separator."""
        cap = min(self.generation.max_step_tokens, max_tokens or self.generation.max_step_tokens)
        return self.sample(prefixes, n, max(1, cap), stop=[self.separator])


def score_items(scorer, items: list[tuple], aggregation: str) -> list[list[float]]:
    """Scores of (problem, texts) items: in the scorer's shared forwards when it has `score_many`,
    else problem by problem."""
    many = getattr(scorer, "score_many", None)
    if many is not None:
        return many(items, aggregation)
    return [scorer.score(problem, texts, aggregation) if texts else [] for problem, texts in items]


def generate(engine, tokenizer, prefixes: list[str], n: int, params: SamplingParams) -> list[list[Completion]]:
    """n completions of each prefix from one engine call, grouped by prefix."""
    rollout = engine.generate([encode_text(tokenizer, p) for p in prefixes], n, params)  # as trained
    out: list[list[Completion]] = [[] for _ in prefixes]
    for i, text in enumerate(rollout.texts):
        finish = "length" if rollout.truncated[i] else ("stop" if any(s in text for s in params.stop) else "eos")
        lp = rollout.logprobs[i] if rollout.logprobs else None
        mean_lp = sum(lp) / len(lp) if lp else None
        out[i // n].append(Completion(text, len(rollout.completion_ids[i]), finish, mean_lp))
    return out


def extract(text: str) -> str | None:
    """The final answer of a solution text (the verifiers' math extractor)."""
    from verifiers import extract_answer

    return extract_answer(text)
