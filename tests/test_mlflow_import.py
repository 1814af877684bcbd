"""`import mlflow` must find the installed library, never the repo's mlflow/ tracking folder."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SITE_PACKAGES = Path(sysconfig.get_paths()["purelib"]).resolve()


def test_mlflow_folder_holds_no_python() -> None:
    # A Python file here would turn the folder into a module that could shadow the library.
    folder = REPO / "mlflow"
    assert not (folder / "__init__.py").exists()
    assert sorted(folder.rglob("*.py")) == []


def test_import_mlflow_in_this_process_is_the_library() -> None:
    import mlflow

    assert Path(mlflow.__file__).resolve().is_relative_to(SITE_PACKAGES)
    assert hasattr(mlflow, "MlflowClient")


def test_import_mlflow_from_repo_root_with_repo_first_on_path() -> None:
    # The worst case: a script run from the repo root with the repo root first on sys.path.
    code = "import sys; sys.path.insert(0, '.'); import mlflow; print(mlflow.__file__); print(mlflow.MlflowClient)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    ).stdout.splitlines()
    path = Path(out[0]).resolve()
    assert path.is_relative_to(SITE_PACKAGES), path
    assert not path.is_relative_to(REPO / "mlflow")
    assert "MlflowClient" in out[1]
