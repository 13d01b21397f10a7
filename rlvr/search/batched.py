"""Many problems searched at once: one engine call and one reward-model pass per round.

Every search method is written for one problem and calls `ctx.sample` / `ctx.score` step by step.
`run_search_batch` runs one search per problem in its own thread, each with its own view of the
context (its own token ledger). A view's sample or score call does not run: it waits until every
search still running is waiting too, then the main thread serves the whole round. Policy samples
with the same settings go to the engine in one call (split at `max_rows` sequences, which bounds
the KV cache); reward-model scores of every problem go through the model in shared forwards.
The methods stay untouched, tree search included, and `run_search` checks each ledger as before.

Rounds are served in problem order, so a run is reproducible for a given seed; it samples other
random numbers than the same searches run one after another would.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

from rlvr.rollout.base import SamplingParams
from rlvr.search.base import Problem, SearchResult, get_method, run_search
from rlvr.search.context import Completion, SearchContext, generate, score_items


@dataclass
class _Request:
    kind: str
    """'sample' or 'score'."""
    key: tuple
    """Requests with equal keys are served together."""
    payload: tuple
    result: object = None
    error: BaseException | None = None
    done: bool = False


@dataclass
class RoundStats:
    """What serving the searches cost in calls (for the record of a benchmark)."""

    rounds: int = 0
    engine_calls: int = 0
    scorer_calls: int = 0
    requests: int = 0


class _Gatherer:
    """Collects one pending request per running search; the main thread serves full rounds."""

    def __init__(self, ctx: SearchContext, workers: int, max_rows: int, stats: RoundStats):
        self.ctx, self.live, self.max_rows, self.stats = ctx, workers, max_rows, stats
        self.pending: dict[int, _Request] = {}
        self.cond = threading.Condition()

    # ---- worker side ---------------------------------------------------------------------
    def call(self, worker: int, request: _Request):
        with self.cond:
            self.pending[worker] = request
            self.cond.notify_all()
            self.cond.wait_for(lambda: request.done)
        if request.error is not None:
            raise request.error
        return request.result

    def finish(self) -> None:
        with self.cond:
            self.live -= 1
            self.cond.notify_all()

    # ---- main-thread side ----------------------------------------------------------------
    def serve_until_done(self) -> None:
        while True:
            with self.cond:
                self.cond.wait_for(lambda: self.live == 0 or len(self.pending) == self.live)
                if self.live == 0:
                    return
                batch, self.pending = sorted(self.pending.items()), {}
            self._serve([r for _, r in batch])  # every worker is waiting: nothing else runs
            with self.cond:
                for r in (r for _, r in batch):
                    r.done = True
                self.cond.notify_all()

    def _serve(self, requests: list[_Request]) -> None:
        self.stats.rounds += 1
        self.stats.requests += len(requests)
        groups: dict[tuple, list[_Request]] = {}
        for r in requests:
            groups.setdefault((r.kind, r.key), []).append(r)
        for (kind, _), group in groups.items():
            try:
                (self._sample if kind == "sample" else self._score)(group)
            except BaseException as e:  # every search waiting on this group sees the error
                for r in group:
                    r.error = e

    def _sample(self, group: list[_Request]) -> None:
        n, params = group[0].payload[1], group[0].payload[2]
        prefixes = [p for r in group for p in r.payload[0]]
        per_call = max(1, self.max_rows // n)
        out: list[list[Completion]] = []
        for start in range(0, len(prefixes), per_call):
            out += generate(self.ctx.engine, self.ctx.tokenizer, prefixes[start:start + per_call], n, params)
            self.stats.engine_calls += 1
        for r in group:
            r.result, out = out[: len(r.payload[0])], out[len(r.payload[0]):]

    def _score(self, group: list[_Request]) -> None:
        scorer, aggregation = self.ctx.scorers[group[0].key[0]], group[0].key[1]
        results = score_items(scorer, [r.payload for r in group], aggregation)  # one pass when it can
        self.stats.scorer_calls += 1
        for r, scores in zip(group, results):
            r.result = scores


class _ProblemView(SearchContext):
    """One search's context: the shared engine and scorers, its own ledger, calls gathered."""

    def __init__(self, ctx: SearchContext, gatherer: _Gatherer, worker: int):
        self.engine, self.tokenizer, self.generation, self.scorers = ctx.engine, ctx.tokenizer, ctx.generation, ctx.scorers
        self.generated_tokens = self.scored_tokens = 0
        self._gatherer, self._worker = gatherer, worker

    def _generate(self, prefixes: list[str], n: int, params: SamplingParams) -> list[list[Completion]]:
        # every sampling field (seed included), lists as tuples: equal keys share an engine call
        key = (n, *(tuple(v) if isinstance(v, list) else v for v in vars(params).values()))
        return self._gatherer.call(self._worker, _Request("sample", key, (prefixes, n, params)))

    def _score(self, scorer: str, problem, texts: list[str], aggregation: str) -> list[float]:
        return self._gatherer.call(self._worker, _Request("score", (scorer, aggregation), (problem, texts)))


def run_search_batch(name: str, problems: list[Problem], ctx: SearchContext, cfg=None, max_rows: int = 4096,
                     stats: RoundStats | None = None, max_concurrent: int = 1024) -> list[SearchResult]:
    """`run_search(name, problem, ...)` for every problem, served round by round in shared batches
    (at most `max_concurrent` problems, one thread each, at a time).

    The context's ledger grows by what all searches spent. The first error of any search is raised
    after every search has stopped.
    """
    get_method(name)  # an unknown name fails before any thread starts
    if max_concurrent < 1:
        raise ValueError(f"max_concurrent must be >= 1, got {max_concurrent}")
    stats = stats if stats is not None else RoundStats()
    results: list[SearchResult] = []
    for start in range(0, len(problems), max_concurrent):
        results += _search_wave(name, problems[start:start + max_concurrent], ctx, cfg, max_rows, stats)
    return results


def _search_wave(name: str, problems: list[Problem], ctx: SearchContext, cfg, max_rows: int,
                 stats: RoundStats) -> list[SearchResult]:
    """One thread per problem, all served together."""
    gatherer = _Gatherer(ctx, len(problems), max_rows, stats)
    views = [_ProblemView(ctx, gatherer, i) for i in range(len(problems))]
    results: list[SearchResult | None] = [None] * len(problems)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = run_search(name, problems[i], views[i], cfg)
        except BaseException as e:  # reported after the round loop ends
            errors.append(e)
        finally:
            gatherer.finish()

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(problems))]
    for t in threads:
        t.start()
    gatherer.serve_until_done()
    for t in threads:
        t.join()
    ctx.generated_tokens += sum(v.generated_tokens for v in views)
    ctx.scored_tokens += sum(v.scored_tokens for v in views)
    if errors:
        raise errors[0]
    return results
