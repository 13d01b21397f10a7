import argparse
import sys

from rlvr.reward_models.cli import add_arguments, main

parser = argparse.ArgumentParser(prog="python -m rlvr.reward_models", description="train an ORM or PRM")
add_arguments(parser)
sys.exit(main(parser.parse_args()))
