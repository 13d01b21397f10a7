"""`python -m verifiers --kind math --input completions.jsonl`: the same as `rlvr verify`."""
import argparse
import sys

from verifiers.cli import add_arguments, main

parser = argparse.ArgumentParser(prog="python -m verifiers", description="score completions from a jsonl file")
add_arguments(parser)
sys.exit(main(parser.parse_args()))
