"""The `rlvr` command. Each subcommand lives beside the library code it fronts:
the module named here provides `add_arguments(parser)` and `main(args) -> int`.

A user error (`ConfigError`, `rlvr.errors.UserError`) is one line on stderr and exit status 2;
`--debug` shows its traceback. `rlvr run` stopped by SIGTERM/SIGINT exits 128 + the signal.
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
        _add_arguments(importlib.import_module(module), p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Import only the chosen subcommand's module (light start-up for `rlvr verify`).
    if argv and argv[0] in SUBCOMMANDS:
        module = importlib.import_module(SUBCOMMANDS[argv[0]][0])
        parser = argparse.ArgumentParser(prog=f"rlvr {argv[0]}", description=SUBCOMMANDS[argv[0]][1])
        _add_arguments(module, parser)
        return _call(module, parser.parse_args(argv[1:]), argv[0])
    args = build_parser().parse_args(argv)
    return _call(importlib.import_module(args._module), args, args.command)


def _add_arguments(module, parser: argparse.ArgumentParser) -> None:
    module.add_arguments(parser)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")


def _call(module, args, command: str) -> int:
    from rlvr.config import ConfigError
    from rlvr.errors import UserError, one_line

    try:
        return int(module.main(args) or 0)
    except (ConfigError, UserError) as e:
        if args.debug:
            raise
        print(f"rlvr {command}: {one_line(e)}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
