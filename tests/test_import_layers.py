"""No import cycles between layers: the stage modules never import the recipe parser (which
imports them), the eval library (metrics, curves, report) never imports the search package (which
imports it), and importing the recipe parser loads no torch."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# (modules, what they may not import, even inside a function)
RULES = [
    (sorted((ROOT / "rlvr/pipeline/stages").glob("*.py")), ("rlvr.pipeline.recipe", "rlvr.pipeline.runner")),
    ([ROOT / f"rlvr/eval/{name}.py" for name in ("metrics", "curves", "report")], ("rlvr.search",)),
]


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("files,forbidden", RULES, ids=["stages-recipe", "eval-search"])
def test_lower_layers_do_not_import_upper_ones(files, forbidden):
    assert files
    bad = {f"{f.relative_to(ROOT)} imports {m}" for f in files for m in imported_modules(f)
           if m.startswith(forbidden)}
    assert not bad


def test_importing_the_recipe_parser_loads_no_torch():
    """Stage options are declared without torch; only running (or checking a registry name of) a
    stage loads it."""
    code = "import sys, rlvr.pipeline.recipe; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_the_shared_command_plumbing_imports_search_and_eval_only_when_used():
    """`rlvr.cli_setup` serves the eval, reward-model and search commands alike: importing it
    loads none of those packages (nor torch); its functions import what they use."""
    code = ("import sys, rlvr.cli_setup; loaded = [m for m in sys.modules if m.startswith(('rlvr.search', "
            "'rlvr.eval', 'rlvr.reward_models')) or m == 'torch']; assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
