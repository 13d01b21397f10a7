"""`rlvr generate`: answer one prompt with any search method.

    rlvr generate --model runs/arith/02-grpo/model --prompt "What is 23 + 58?" \
        --method best_of_n --set num_generations=8 --set scorer=orm --orm rm/orm   # default method: majority_vote

Prints the final answer and the tokens spent; the text inside <think> is hidden unless
--show-thinking is given.
"""
from __future__ import annotations

import argparse
import json
import re

from rlvr.cli_setup import add_model_arguments

THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt", required=True, help="the problem to answer")
    parser.add_argument("--method", default="majority_vote",
                        help="search method (rlvr search --help lists them); the default needs no reward model")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="method option, e.g. --set num_generations=16 --set scorer=prm (repeatable)")
    parser.add_argument("--reference", default=None,
                        help="gold answer, only needed by the 'verifier' scorer or check")
    parser.add_argument("--kind", default="math", help="verifier kind for answer equivalence and checks")
    parser.add_argument("--show-thinking", action="store_true", help="print the <think> part too")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_model_arguments(parser)


def hide_thinking(text: str) -> str:
    """The text with every <think>...</think> span removed.

    >>> hide_thinking("<think>12+3</think><answer>15</answer>")
    '<answer>15</answer>'
    """
    return THINK.sub("", text).strip()


def main(args: argparse.Namespace) -> int:
    from rlvr.config import apply_overrides
    from rlvr.search.base import Problem, make_config, run_search
    from rlvr.cli_setup import build_context, check_scorers, prompt_format
    from rlvr.tasks.base import Example

    cfg = make_config(args.method, apply_overrides({}, args.overrides))
    check_scorers({args.method: cfg}, args)
    ctx, policy = build_context(args)
    example = Example(prompt=args.prompt, reference=args.reference, kind=args.kind, id="cli")
    problem = Problem(prompt_format(args).render(example, policy.tokenizer), example)
    result = run_search(args.method, problem, ctx, cfg)
    shown = result.text if args.show_thinking else hide_thinking(result.text)
    if args.json:
        print(json.dumps({"answer": result.answer, "text": shown, "tokens_spent": result.tokens_spent,
                          "details": {k: v for k, v in result.details.items() if isinstance(v, (int, float, str, bool))}}))
        return 0
    print(shown)
    print(f"\nanswer: {result.answer}")
    print(f"tokens: {result.tokens_spent} generated, {result.details.get('scored_tokens', 0)} scored")
    if "level" in result.details:
        print(f"level: {result.details['level']} (accepted: {result.details['accepted']})")
    return 0
