"""Diagnostic: the CLI with KahanAdamW's compiled update forced on the CPU (COMPILE_FROM=0)."""
import sys
import rlvr.trainer.optimizer as o
o.COMPILE_FROM = 0
from rlvr.cli import main
sys.exit(main(sys.argv[1:]))
