"""The house's layers (issue 24): the import graph of the project's own modules, read
from the source (function-local imports included), must follow the declared order of
the layers, have no cycle, and keep streamlit out of analysis/.

A module may import its own layer and the layers below it, never one above. `cli`
(the command line) and the app (`ui`, `pages`, `app.py`, `server.py`) are the top;
`ui` never imports `pages`.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Bottom to top. Each analysis package's __init__ says what it is for.
LAYERS = (
    "analysis.core",        # settings, the disk store, background jobs, progress and ETA, process caches
    "analysis.model",       # loading, architectures, hook names, anatomy, the unwrapped decoder, Removal
    "analysis.data",        # corpora, windows, the calibration / evaluation split
    "analysis.measure",     # the instrumented pass and its reducers (similarity, sublayers, sparsity, lens)
    "analysis.ablate",      # removals measured: block replay, the exact sweep, costs, bounds, progressive
    "analysis.playground",  # live toggles from cached clean residuals, generation
    "analysis.plans",       # plan schema and checks, apply (a real checkpoint), MergeKit
    "analysis.tasks",       # task accuracy by lm-eval: the offline suite, task files, in-process and by path
    "analysis.search",      # presets, greedy, pruning curves, dynamic depth
    "analysis.heal",        # LoRA healing of a pruned model
    "analysis.reporting",   # report.json, the HTML report, comparisons, figures
    "analysis.cli",         # `python -m analysis ...`
    "ui",                   # the app's shared state and widgets
    "pages",                # the Streamlit pages (and app.py, server.py)
)


def modules() -> dict[str, Path]:
    found = {}
    for top in ("analysis", "ui", "pages"):
        for path in (ROOT / top).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    for script in ("app.py", "server.py"):
        found[f"pages.{script[:-3]}_script"] = ROOT / script
    return found


def layer_of(module: str) -> int:
    if module == "analysis" or module == "analysis.__main__":
        return LAYERS.index("analysis.cli")
    for i, layer in enumerate(LAYERS):
        if module == layer or module.startswith(layer + "."):
            return i
    raise AssertionError(f"{module} belongs to no declared layer: add it to a package of LAYERS")


def imports_of(path: Path, name: str, known: dict) -> list[tuple[str, int]]:
    """(project module imported, line) for every import statement in the file, at any depth."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for target in targets:
            while target and target not in known and "." in target:
                target = target.rpartition(".")[0]
            if target in known and target != name:
                out.append((target, node.lineno))
    return out


def graph() -> dict[str, list]:
    known = modules()
    return {name: imports_of(path, name, known) for name, path in known.items()}


def test_every_module_lies_in_a_declared_layer():
    for name in modules():
        layer_of(name)


def test_no_module_imports_a_higher_layer():
    upward = [f"{name} ({LAYERS[layer_of(name)]}) imports {target} ({LAYERS[layer_of(target)]}), line {line}"
              for name, targets in graph().items() for target, line in targets
              if layer_of(target) > layer_of(name) and not target.startswith(name + ".")]
    assert not upward, "\n".join(upward)


def cycles(edges: dict) -> list[str]:
    """Every cycle a depth-first search meets, as 'a -> b -> a'."""
    state, stack, found = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in edges.get(node, []):
            if state.get(nxt) == "open":
                found.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


def test_the_project_has_no_import_cycle():
    found = cycles({name: sorted({t for t, _ in targets}) for name, targets in graph().items()})
    assert not found, "\n".join(found)


def test_analysis_never_imports_streamlit():
    found = []
    for path in (ROOT / "analysis").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.relative_to(ROOT)}:{node.lineno}" for n in names if n.split(".")[0] == "streamlit"]
    assert not found, found


def test_the_checks_catch_what_they_forbid(tmp_path):
    """The scanner sees a function-local upward import and a cycle (it cannot pass vacuously)."""
    known = {"analysis.core.a": tmp_path / "a.py", "analysis.search.b": tmp_path / "b.py"}
    known["analysis.core.a"].write_text("def f():\n    from analysis.search.b import g\n")
    known["analysis.search.b"].write_text("from analysis.core import a\n")
    got = imports_of(known["analysis.core.a"], "analysis.core.a", known)
    assert got == [("analysis.search.b", 2)] and layer_of("analysis.search.b") > layer_of("analysis.core.a")
    assert imports_of(known["analysis.search.b"], "analysis.search.b", known) == [("analysis.core.a", 1)]
    assert cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == ["a -> b -> c -> a"]
    assert cycles({"a": ["b"], "b": [], "c": ["a", "b"]}) == []


def test_streamlit_internals_are_read_in_one_module():
    """Only ui/internals.py imports Streamlit's non-public modules (tests aside)."""
    found = []
    for path in [*ROOT.glob("ui/*.py"), *ROOT.glob("pages/*.py"), ROOT / "app.py", ROOT / "server.py"]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names
                      if n.startswith("streamlit.") and not n.startswith(("streamlit.testing", "streamlit.components.v1"))]
    assert {f.split(":")[0] for f in found} <= {"ui/internals.py"}, found
