"""Monte Carlo tree search over reasoning steps.

Node = a partial solution (steps). Each simulation:
  selection   walk down by PUCT (AlphaZero, as OpenR does):
              a = argmax Q(s,a) + c(s) · P(s,a) · sqrt(N(s)) / (1 + N(s,a)),
              c(s) = log((1 + N(s) + c_base) / c_base) + c_init;
  expansion   sample k next steps at the leaf; prior P = softmax of their mean token log-prob when
              the engine reports log-probs, else uniform;
  evaluation  each child's value from the PRM (`value: prm`), or from one rollout to the end scored
              by the verifier (`value: rollout`, rStar-Math style);
  backprop    add each child's value to every node on the path to the root.
The budget is `simulations`, and optionally `max_tokens` generated policy tokens: checked between
simulations, so the last one may pass it by one expansion (and its rollouts), and completing the
answer of an unfinished tree spends only what is left; the search also ends when every leaf is
terminal (the tree is exhausted). The answer is the finished node with the highest mean value Q;
if no node finished, the most visited path is completed with one sample.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from rlvr.search.base import Problem, SearchError, SearchResult, register_search, require_positive
from rlvr.search.context import SearchContext, extract
from rlvr.search.steps import Path, expand, score_paths


@dataclass
class MCTSConfig:
    """Step-level MCTS."""

    simulations: int = 16
    """Budget: selection-expansion-evaluation-backprop rounds."""
    max_tokens: int | None = None
    """Optional budget in generated policy tokens (rollouts included); None: simulations only."""
    expansions: int = 3
    """k: next steps sampled when a leaf is expanded."""
    max_depth: int = 8
    """Steps after which a node counts as terminal."""
    c_init: float = 1.25
    """PUCT exploration constant (AlphaZero c_init)."""
    c_base: float = 19652.0
    """PUCT exploration growth (AlphaZero c_base)."""
    value: Literal["prm", "rollout"] = "prm"
    """Leaf value: the scorer's score, or one rollout to the end scored by the verifier."""
    scorer: str = "prm"
    """Scorer for `value: prm` and for choosing among finished nodes."""
    aggregation: Literal["last", "min", "prod", "mean"] = "last"
    """How a PRM's step scores become a node value."""

    def validate(self):
        require_positive("mcts", simulations=self.simulations, expansions=self.expansions,
                         max_depth=self.max_depth)
        if self.max_tokens is not None and self.max_tokens < 1:
            raise SearchError(f"mcts.max_tokens must be >= 1 or null, got {self.max_tokens}")
        if self.c_init < 0 or self.c_base <= 0:
            raise SearchError("mcts.c_init must be >= 0 and mcts.c_base > 0")


@dataclass
class Node:
    path: Path
    prior: float = 1.0
    parent: "Node | None" = None
    children: list["Node"] = field(default_factory=list)
    visits: int = 0
    value_sum: float = 0.0

    @property
    def q(self) -> float:
        return self.value_sum / self.visits if self.visits else 0.0

    def terminal(self, max_depth: int) -> bool:
        return self.path.finished or len(self.path.steps) >= max_depth

    def exhausted(self, max_depth: int) -> bool:
        """Nothing left to expand below this node (every leaf under it is terminal)."""
        if not self.children:
            return self.terminal(max_depth)
        return all(ch.exhausted(max_depth) for ch in self.children)


def puct(parent: Node, child: Node, cfg: MCTSConfig) -> float:
    c = math.log((1 + parent.visits + cfg.c_base) / cfg.c_base) + cfg.c_init
    return child.q + c * child.prior * math.sqrt(parent.visits) / (1 + child.visits)


def select(root: Node, cfg: MCTSConfig) -> Node:
    """Walk down by PUCT, skipping exhausted subtrees (revisiting them would spend a simulation
    on nothing new)."""
    node = root
    while node.children and not node.terminal(cfg.max_depth):
        open_children = [ch for ch in node.children if not ch.exhausted(cfg.max_depth)]
        node = max(open_children or node.children, key=lambda ch: puct(node, ch, cfg))
    return node


def backprop(node: Node | None, value: float) -> None:
    while node is not None:
        node.visits += 1
        node.value_sum += value
        node = node.parent


def priors(logprobs: list[float | None]) -> list[float]:
    if any(lp is None for lp in logprobs):
        return [1.0 / len(logprobs)] * len(logprobs)
    m = max(logprobs)
    exp = [math.exp(lp - m) for lp in logprobs]
    return [e / sum(exp) for e in exp]


def evaluate(ctx: SearchContext, problem: Problem, paths: list[Path], cfg: MCTSConfig) -> tuple[list[float], int]:
    """Values of new nodes, and the policy tokens rollouts spent."""
    if cfg.value == "prm":
        score_paths(ctx, problem, paths, cfg.scorer, cfg.aggregation)
        return [p.score for p in paths], 0
    texts, spent = [], 0
    for p in paths:
        text = p.text(ctx.separator)
        if not p.finished:
            room = ctx.generation.max_new_tokens - p.tokens
            if room >= 1:
                rollout = ctx.sample_solutions(problem.prompt + text, 1, room)[0]
                spent += rollout.num_tokens
                text += rollout.text
        texts.append(text)
    return ctx.score("verifier", problem, texts), spent


@register_search("mcts", MCTSConfig, "MCTS over steps: PUCT, k-step expansion, PRM or rollout value")
def mcts(problem: Problem, ctx: SearchContext, cfg: MCTSConfig) -> SearchResult:
    root = Node(Path())
    spent = sims = 0
    for sims in range(1, cfg.simulations + 1):
        if root.exhausted(cfg.max_depth):
            sims -= 1
            break  # the whole tree is explored
        leaf = select(root, cfg)
        if leaf.terminal(cfg.max_depth):
            backprop(leaf, leaf.q)  # a finished solution: its value is already known
        else:
            (children,), tokens = expand(ctx, problem, [leaf.path], cfg.expansions)
            spent += tokens
            values, tokens = evaluate(ctx, problem, children, cfg)
            spent += tokens
            for path, prior, value in zip(children, priors([c.mean_logprob for c in children]), values):
                child = Node(path, prior, leaf)
                leaf.children.append(child)
                backprop(child, value)
        if cfg.max_tokens is not None and spent >= cfg.max_tokens:
            break
    best, extra = _answer_node(ctx, problem, root, cfg, spent)
    spent += extra
    return SearchResult(
        answer=extract(best), text=best, tokens_spent=spent,
        details={"simulations": sims, "exhausted": root.exhausted(cfg.max_depth), "tree_size": _size(root), "root_visits": root.visits},
    )


def _answer_node(ctx: SearchContext, problem: Problem, root: Node, cfg: MCTSConfig, spent: int) -> tuple[str, int]:
    finished = [n for n in _nodes(root) if n.path.finished]
    if finished:
        return max(finished, key=lambda n: n.q).path.text(ctx.separator), 0
    node = root
    while node.children:
        node = max(node.children, key=lambda ch: ch.visits)
    text = node.path.text(ctx.separator)
    room = ctx.generation.max_new_tokens - node.path.tokens
    if cfg.max_tokens is not None:  # completing the answer spends from the same budget
        room = min(room, cfg.max_tokens - spent)
    if room < 1:
        return text, 0
    tail = ctx.sample_solutions(problem.prompt + text, 1, room)[0]
    return text + tail.text, tail.num_tokens


def _nodes(root: Node):
    stack = [root]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(node.children)


def _size(root: Node) -> int:
    return sum(1 for _ in _nodes(root))
