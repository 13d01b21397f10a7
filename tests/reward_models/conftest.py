import sys
from pathlib import Path

import torch

# The toy policy helper lives beside the search tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "search"))
# Tiny models on a shared 2-core machine: one thread is ~20x faster than oversubscribed threads.
torch.set_num_threads(1)
