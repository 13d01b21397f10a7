import sys
from pathlib import Path

# The toy policy helper lives beside the search tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "search"))
