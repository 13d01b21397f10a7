"""`python -m rlvr ...` (what `accelerate launch -m rlvr run RECIPE.yaml` calls)."""
import sys

from rlvr.cli import main

sys.exit(main())
