"""`rlvr verify` (also `python -m verifiers`): score a jsonl file of completions."""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from verifiers.api import DEFAULT_TIMEOUT_S, verify_batch
from verifiers.registry import available_kinds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", required=True, help=f"verifier kind: {', '.join(available_kinds())}")
    parser.add_argument("--input", required=True, type=Path, help="jsonl with 'completion' and 'reference' per line")
    parser.add_argument("--output", type=Path, help="write one result per line (jsonl) here")
    parser.add_argument("--timeout-s", type=float, default=DEFAULT_TIMEOUT_S, help="hard limit per item, seconds")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: up to 4)")
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help='verifier option, value as JSON, e.g. --option rel_tol=1e-3 --option \'extract=["boxed"]\'',
    )
    parser.add_argument("--quiet", action="store_true", help="print only the summary")


def main(args: argparse.Namespace) -> int:
    if args.kind not in available_kinds():
        print(f"error: unknown kind {args.kind!r}; available kinds: {available_kinds()}", file=sys.stderr)
        return 2
    try:
        rows = read_rows(args.input)
        options = parse_options(args.option)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        results = verify_batch(
            args.kind,
            [row["completion"] for row in rows],
            [row["reference"] for row in rows],
            timeout_s=args.timeout_s,
            workers=args.workers,
            **options,
        )
    except (TypeError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not args.quiet:
        for index, result in enumerate(results):
            print(f"{index}\t{result.score:.3f}\t{result.reason}\t{result.extracted!r:.60}")
    if args.output:
        with open(args.output, "w") as out:
            for result in results:
                out.write(json.dumps(result.to_dict(), ensure_ascii=False) + "\n")
    print(json.dumps(summarize(results), indent=2))
    return 0


def read_rows(path: Path) -> list[dict]:
    """Rows of a jsonl file; a bad row names its line number."""
    rows = []
    with open(path) as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not valid JSON ({error.msg})") from None
            missing = [key for key in ("completion", "reference") if not isinstance(row, dict) or key not in row]
            if missing:
                raise ValueError(f"{path}:{number}: missing field(s) {missing}")
            rows.append(row)
    return rows


def parse_options(pairs: list[str]) -> dict:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--option {pair!r}: expected KEY=JSON")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value  # a bare string
    return options


def summarize(results: list) -> dict:
    """Count, mean score, accuracy, timeouts and a histogram of reason categories."""
    count = len(results)
    return {
        "count": count,
        "mean_score": sum(r.score for r in results) / count if count else 0.0,
        "accuracy": sum(r.correct for r in results) / count if count else 0.0,
        "timeouts": sum(r.category == "timeout" for r in results),
        "reasons": dict(Counter(r.category for r in results).most_common()),
    }
