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


def test_no_module_imports_another_modules_private_names():
    import ast

    for path in Path(search.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("", "search"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from {node.module}"
