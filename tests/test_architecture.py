"""The layout keeps its promises: no import circle, and a pure core that imports no edge.

The import graph is read from the source (every import statement, function-level ones included),
so a lazy import cannot hide a circle or an edge.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "reactor"
# The pure core: verify, understand, decide, plan, and the values it makes. rules/ and samples are
# whole packages; secrets is in the core because the rule loader checks `${NAME}`/`enc:` references.
CORE = {"reactor.signature", "reactor.events", "reactor.accounts", "reactor.plan", "reactor.receive", "reactor.delivery",
        "reactor.redact", "reactor.retry_policy", "reactor.errors", "reactor.secrets", "reactor.samples",
        "reactor.rules", "reactor.rules.model", "reactor.rules.match", "reactor.rules.load"}
CORE_PACKAGES = ("reactor.rules.",)  # every module in these is core too
FORBIDDEN_LIBRARIES = {"flask", "werkzeug", "requests", "psycopg", "psycopg_pool", "sqlite3", "gunicorn"}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, name: str, is_package: bool, known: set[str]) -> set[str]:
    """Every module `source` (the module `name`) imports, anywhere in the file."""
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, node.module] if node.module else anchor)
            for alias in node.names:  # `from . import live_rules` names a module, `from .x import y` a value
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    return {name: imports_of(path.read_text(), name, path.name == "__init__.py", set(files))
            for name, path in files.items()}


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle among the graph's own modules, as a path, or None."""
    state: dict[str, str] = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
            if nxt not in state and (circle := visit(nxt, path + [nxt])):
                return circle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (circle := visit(start, [start])):
            return circle
    return None


def impurities(graph: dict[str, set[str]], core: set[str]) -> list[str]:
    """Each import by a core module of an edge module or an edge library."""
    problems = []
    for module in sorted(core & set(graph)):
        for imported in sorted(graph[module]):
            if imported.startswith("reactor.") and imported not in core:
                problems.append(f"{module} imports the edge {imported}")
            elif imported.split(".")[0] in FORBIDDEN_LIBRARIES:
                problems.append(f"{module} imports {imported}")
    return problems


def test_reactor_has_no_import_circle():
    assert find_circle(import_graph()) is None


def test_the_core_imports_no_edge_and_no_edge_library():
    graph = import_graph()
    assert CORE <= set(graph), f"core modules missing: {CORE - set(graph)}"
    core = CORE | {m for m in graph if m.startswith(CORE_PACKAGES)}
    assert impurities(graph, core) == []


@pytest.mark.parametrize("graph, circle", [
    pytest.param({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"], id="three-modules"),
    pytest.param({"a": {"a"}}, ["a", "a"], id="self"),
    pytest.param({"a": {"b", "x"}, "b": set()}, None, id="none"),
])
def test_the_circle_finder_finds_circles(graph, circle):
    assert find_circle(graph) == circle


def test_the_checks_see_lazy_and_relative_imports(tmp_path):
    """What the two tests above rely on: a function-level relative import is an edge of the graph."""
    pkg = tmp_path / "reactor"
    (pkg / "store").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "store" / "__init__.py").write_text("")
    (pkg / "events.py").write_text("def f():\n    from .store import open_store\n    import requests\n")
    (pkg / "store" / "sql.py").write_text("from ..events import f\n")
    graph = import_graph(pkg)
    assert graph["reactor.events"] == {"reactor.store", "requests"}
    assert impurities(graph, {"reactor.events"}) == ["reactor.events imports the edge reactor.store",
                                                     "reactor.events imports requests"]


def test_the_worker_process_never_imports_flask(tmp_path):
    """`python -m reactor worker`, as the Procfile runs it, dispatches without the web stack: every
    module it imports is listed by -X importtime, read once it has started."""
    import os
    import signal
    import subprocess
    import sys
    import time

    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT.parent), "REACTOR_DRY_RUN": "1",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}"}
    err = tmp_path / "stderr"
    with open(err, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "reactor", "worker"], cwd=tmp_path,
                                env=env, stderr=out)
        try:
            deadline = time.time() + 20
            while b"worker started" not in err.read_bytes():
                assert proc.poll() is None and time.time() < deadline, err.read_text()
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0
    imported = {line.rsplit("|", 1)[1].strip() for line in err.read_text().splitlines()
                if line.startswith("import time:") and "|" in line}
    assert {"reactor.dispatch", "reactor.zoom", "requests"} <= imported  # the listing is real
    assert not {m for m in imported if m.split(".")[0] in ("flask", "werkzeug")}, "the worker imported Flask"
