"""The engine's shape, checked from its source: imports point down the layers (imports inside functions count), no
import cycle in engine/ or ui/, no task-type branch outside engine/tasks/, a small core, no module over the size the
project keeps to."""

import ast
from pathlib import Path

from conftest import ROOT

ENGINE = ROOT / "engine"
MAX_LINES = 410  # "no file over ~400 lines"
MAX_TOP_MODULES = 12  # modules directly in engine/: the core and the public commands' entry points
# what a task-type branch looks like: asking whether something is an image (or text) run / model
TASK_CHECKS = ("is_image", "is_text", "== \"image-classification\"", "== \"text-classification\"",
               "!= \"image-classification\"", "!= \"text-classification\"", "image_inputs", "custom_models")

# The layers, lowest first: a module may import its own layer and the layers before it, never a later one.
# A module belongs to the layer of its longest prefix listed here. Two modules inside higher packages sit with the
# core, because the core needs them and they import only the core: engine.tasks.heads (what a model's outputs mean;
# config's checks name every head's metrics) and engine.hub.client (the Hub transport; model resolution downloads
# through it).
CORE = ["engine.errors", "engine.config", "engine.data", "engine.modeling", "engine.hardware", "engine.metrics",
        "engine.bundled", "engine.rundir", "engine.tasks.heads", "engine.hub.client"]
COMMANDS = ["engine.train", "engine.predict", "engine.export", "engine.leaderboard", "engine.launch",
            "engine.hub.__main__", "engine.runs.__main__", "engine.search.__main__"]
LAYERS = [("core", CORE), ("tasks", ["engine.tasks"]), ("serving", ["engine.serving"]), ("hub", ["engine.hub"]),
          ("training", ["engine.training"]), ("runs", ["engine.runs"]), ("search", ["engine.search"]),
          ("commands", COMMANDS), ("ui", ["ui", "space"]), ("app", ["app"])]


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    files = {_module(p): p for folder in ("engine", "ui", "space") for p in (ROOT / folder).rglob("*.py")}
    return files | {"app": ROOT / "app.py"}


def _imports(path: Path, modules: set[str]) -> dict[str, int]:
    """{project module: first line} of what `path` imports anywhere (module level or inside functions)."""
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name in modules:
                found.setdefault(name, node.lineno)
    return found


def _layer(module: str) -> int | None:
    if module in ("engine", "ui"):  # the packages themselves: docstring and settings only
        return 0 if module == "engine" else len(LAYERS) - 2
    best = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > best[1]):
                best = (i, len(p))
    return best and best[0]


def _assert_no_cycle(graph: dict[str, set[str]]) -> None:
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


def test_the_engine_import_graph_has_no_cycle():
    files = {m: p for m, p in _sources().items() if m.split(".")[0] == "engine"}
    graph = {m: set(_imports(p, set(files))) - {m} for m, p in files.items()}
    _assert_no_cycle(graph)
    assert "engine.tasks" in graph and len(graph) > 30


def test_the_ui_import_graph_has_no_cycle():
    files = {m: p for m, p in _sources().items() if m.split(".")[0] == "ui" or m == "app"}
    graph = {m: set(_imports(p, set(files))) - {m} for m, p in files.items()}
    _assert_no_cycle(graph)
    assert "ui.predict_tab" in graph and "ui.explain_view" in graph


def test_every_module_has_a_layer():
    assert [m for m in _sources() if _layer(m) is None] == []


def test_imports_point_down_the_layers():
    files = _sources()
    against = [f"{m} ({LAYERS[_layer(m)][0]}) imports {n} ({LAYERS[_layer(n)][0]}), line {line}"
               for m, p in sorted(files.items()) for n, line in sorted(_imports(p, set(files)).items())
               if n != m and _layer(n) > _layer(m)]
    assert against == []


def test_the_layer_rule_catches_an_import_against_it(tmp_path):
    # the check itself can fail: a core module importing the training loop is reported
    core = tmp_path / "engine" / "data.py"
    core.parent.mkdir()
    core.write_text("def f():\n    from engine.training.loop import Loop\n")
    found = _imports(core, {"engine.training.loop"})
    assert found == {"engine.training.loop": 2} and _layer("engine.training.loop") > _layer("engine.data")


def test_engine_is_a_small_core_and_packages_by_concern():
    top = sorted(p.stem for p in ENGINE.glob("*.py") if p.name != "__init__.py")
    assert len(top) <= MAX_TOP_MODULES, top
    packages = [p for p in ENGINE.iterdir() if (p / "__init__.py").exists()]
    assert {p.name for p in packages} >= {"config", "tasks", "training", "serving", "hub", "runs", "search"}
    for package in [*packages, ENGINE]:
        doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text(encoding="utf-8")))
        assert doc and "import" in doc, f"{package.relative_to(ROOT)}/__init__.py: say what it owns and may import"
    # no two sibling modules whose names share a first word: such a family is a package (search_config, search_jobs)
    for folder in [ENGINE, *(p for p in ENGINE.rglob("*") if p.is_dir() and (p / "__init__.py").exists())]:
        stems = [p.stem.split("_")[0] for p in folder.glob("*.py") if not p.stem.startswith("__")]
        assert sorted({s for s in stems if stems.count(s) > 1}) == [], folder.relative_to(ROOT)


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


# the symbols a page or a command may show: the fonts of a plain Debian (DejaVu Sans) have them; ✅ and ⛔ drew as
# boxes in Debian's chromium, which has no emoji font
FONT_SAFE = set("→≥⚠✓✗") | {"\ufe0f"}


def _symbol(ch: str) -> bool:
    return 0x2190 <= ord(ch) <= 0x2BFF or ord(ch) >= 0x1F000


def test_shown_symbols_are_in_common_fonts():
    assert _symbol("✅") and _symbol("⛔") and not _symbol("…")  # the check sees what it is meant to see
    shown = [*ENGINE.rglob("*.py"), *(ROOT / "ui").rglob("*.py"), ROOT / "app.py", *(ROOT / "space").rglob("*.py")]
    odd = sorted({f"{p.relative_to(ROOT)}: {ch} U+{ord(ch):04X}" for p in shown
                  for ch in p.read_text(encoding="utf-8") if _symbol(ch) and ch not in FONT_SAFE})
    assert odd == []
