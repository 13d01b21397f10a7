"""The `rlvr` command. Each subcommand lives beside the library code it fronts:
the module named here provides `add_arguments(parser)` and `main(args) -> int`.
"""
from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = {
    "run": ("rlvr.pipeline.cli", "run every stage of a recipe"),
    "verify": ("verifiers.cli", "score completions from a jsonl file with a verifier"),
    "eval": ("rlvr.eval.cli", "pass@k / maj@k / scaling curves of a model on a task"),
    "search": ("rlvr.search.cli", "compare test-time search methods on a task"),
    "generate": ("rlvr.search.generate_cli", "answer one prompt with a search method"),
    "train-rm": ("rlvr.reward_models.cli", "train an ORM or PRM on a policy's verified samples"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlvr", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Import only the chosen subcommand's module (light start-up for `rlvr verify`).
    if argv and argv[0] in SUBCOMMANDS:
        module = importlib.import_module(SUBCOMMANDS[argv[0]][0])
        parser = argparse.ArgumentParser(prog=f"rlvr {argv[0]}", description=SUBCOMMANDS[argv[0]][1])
        module.add_arguments(parser)
        return int(module.main(parser.parse_args(argv[1:])) or 0)
    args = build_parser().parse_args(argv)
    return int(importlib.import_module(args._module).main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
