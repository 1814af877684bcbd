"""Every module of search/ imports on its own, in a fresh interpreter: no import order to remember, no cycle."""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import search

MODULES = sorted(m.name for m in pkgutil.iter_modules(search.__path__))


def test_the_package_has_the_modules_the_readme_names():
    assert {
        "space",
        "materialize",
        "layers",
        "trial",
        "cost",
        "sweep",
        "records",
        "frontier",
        "plots",
    } <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_each_module_imports_alone_in_a_fresh_interpreter_and_changes_nothing(name, tmp_path):
    """No import order to remember: importing a module neither imports Ultralytics nor sets its environment
    (search.ultra.offline() does, called first by every entry point)."""
    check = (
        f"import os, sys; before = dict(os.environ); import search.{name}; "
        "changed = sorted(k for k in os.environ if k.startswith('YOLO') and before.get(k) != os.environ[k]); "
        "assert not changed, changed; assert 'ultralytics' not in sys.modules, 'ultralytics imported'"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("YOLO")}
    done = subprocess.run(
        [sys.executable, "-c", check],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(search.__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stderr[-3000:]


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module of search/ or outside name, imported names, line) of every import in ``path``, those inside
    functions (lazy) included; a relative import is named by its module in search/ ("." alone: the package)."""
    import ast

    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # from .data import x, from . import records
                if module:
                    found.append((f"search.{module}", [a.name for a in node.names], node.lineno))
                else:
                    found += [(f"search.{a.name}", [], node.lineno) for a in node.names]
            else:
                found.append((module, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
    return found


SOURCES = {f"search.{p.stem}": p for p in sorted(Path(search.__file__).parent.glob("*.py"))}


def _graph() -> dict[str, set[str]]:
    return {
        name: {m for m, _, _ in _imports(path) if m in SOURCES and m != name}
        for name, path in SOURCES.items()
    }


def test_no_module_imports_another_modules_private_names():
    """Relative imports included: ``from .data import _label_dir`` is a private import like any other."""
    private = [
        f"{path.name}:{line} imports {name} from {module}"
        for path in SOURCES.values()
        for module, names, line in _imports(path)
        for name in names
        if module.startswith("search") and name.startswith("_")
    ]
    assert not private, private


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each module that lies on one (depth-first search)."""
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_no_import_circle_lazy_imports_included():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [
        ["a", "b", "c", "a"]
    ]  # the check sees one
    assert not _cycles(_graph()), _cycles(_graph())


def test_every_module_declares_what_it_exports():
    missing = [
        name
        for name, path in SOURCES.items()
        if path.stem != "__init__" and "__all__" not in path.read_text()
    ]
    assert not missing, missing


def test_reading_a_finished_sweep_needs_neither_ray_nor_optuna():
    """search.pareto and search.export read MLflow: neither they nor anything they import, lazily or not,
    imports Ray, Optuna or the sweep's driver."""
    graph = _graph()
    for command in ("search.pareto", "search.export"):
        seen, todo = set(), [command]
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo += graph[name]
        outside = {
            m.split(".")[0] for name in seen for m, _, _ in _imports(SOURCES[name]) if m not in SOURCES
        }
        assert not {"ray", "optuna"} & outside, (command, sorted(seen))
        assert not {"search.sweep", "search.searcher", "search.progress"} & seen, (command, sorted(seen))


def test_no_test_imports_another_test_module():
    """What tests share lives in tests/helpers.py; a test module is never a library."""
    import ast

    root = Path(__file__).resolve().parents[1]
    found = []
    for path in sorted(root.rglob("*.py")):
        for module, _, line in _imports(path):
            name = module.rsplit(".", 1)[-1]
            if name.startswith("test_") and module.startswith(("tests", "search.test_")):
                found.append(f"{path.relative_to(root)}:{line} imports {module}")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level and (node.module or "").startswith("test_"):
                found.append(f"{path.relative_to(root)}:{node.lineno} imports .{node.module}")
    assert not found, found


def test_functions_with_more_than_three_parameters_take_the_rest_by_keyword():
    """A call reads as what it passes: ``with_pretrain(space, budget, data, keep_in=...)``, not a fourth value
    whose meaning is its position. Ray's callback hooks keep Ray's own signatures (Ray passes keywords), and an
    Optuna sampler's hooks Optuna's (Optuna passes them by position)."""
    import ast

    found = []
    for name, path in SOURCES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef):
                continue
            if not (node.name.startswith("on_trial_") or node.name == "sample_independent"):
                positional = [
                    a.arg for a in node.args.posonlyargs + node.args.args if a.arg not in ("self", "cls")
                ]
                if len(positional) > 3:
                    found.append(f"{name}.{node.name}({', '.join(positional)})")
    assert not found, found
