"""The core is pure: the modules that verify, understand, decide and plan import no edge."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "reactor"
CORE = ["signature.py", "events.py", "rules/model.py", "rules/match.py", "plan.py", "receive.py", "store/contract.py"]
EDGES = {"flask", "werkzeug", "requests", "psycopg", "psycopg_pool", "sqlite3", "gunicorn", "threading", "socket",
         "subprocess", "yaml"}
EDGE_MODULES = {"web", "app", "dispatch", "zoom", "cli", "store.sqlite", "store.postgres", "store.sql", "logs", "boot"}


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_no_edge(module):
    tree = ast.parse((ROOT / module).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
            if node.level:  # relative: resolve against the package
                package = Path(module).parent.parts[: len(Path(module).parent.parts) - (node.level - 1)]
                names = [".".join([*package, node.module or ""]).strip(".")]
                assert names[0] not in EDGE_MODULES, f"{module} imports the edge {names[0]}"
                continue
        else:
            continue
        for name in names:
            assert name.split(".")[0] not in EDGES, f"{module} imports {name}"
