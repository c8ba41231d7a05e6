"""The engine's shape, checked from its source: no import cycle (imports inside functions count), no task-type
branch outside engine/tasks/, no module over the size the project keeps to."""

import ast
from pathlib import Path

from conftest import ROOT

ENGINE = ROOT / "engine"
MAX_LINES = 410  # "no file over ~400 lines"
# what a task-type branch looks like: asking whether something is an image (or text) run / model
TASK_CHECKS = ("is_image", "is_text", "== \"image-classification\"", "== \"text-classification\"",
               "!= \"image-classification\"", "!= \"text-classification\"", "image_inputs", "custom_models")


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Engine modules `path` imports anywhere (module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name in modules:
                found.add(name)
    return found


def test_the_engine_import_graph_has_no_cycle():
    files = {_module(p): p for p in ENGINE.rglob("*.py")}
    graph = {m: _imports(p, set(files)) - {m} for m, p in files.items()}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(m, path):
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(n):] + [n]))
            if n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert "engine.tasks" in graph and len(graph) > 30


def test_task_type_checks_live_in_the_tasks():
    outside = [p for p in [*ENGINE.rglob("*.py"), *(ROOT / "ui").rglob("*.py"), ROOT / "app.py"]
               if ENGINE / "tasks" not in p.parents]
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in outside
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
            if any(check in line for check in TASK_CHECKS)]
    assert hits == []


def test_no_module_is_over_the_size_limit():
    long = [f"{p.relative_to(ROOT)}: {n} lines" for p in [*ENGINE.rglob("*.py"), *(ROOT / "ui").rglob("*.py")]
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES]
    assert long == []
