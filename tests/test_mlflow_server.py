"""mlflow/server.sh starts a tracking server that takes a run, a metric and an artifact, and gives them back."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "mlflow" / "server.sh"
STARTUP_LIMIT_S = 90


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        # A temporary store, so the test never writes into the repo's mlflow/ folder.
        "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{tmp_path / 'db'}",
        "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "art"),
        # The interpreter running the tests has mlflow, also in a clean clone without .venv.
        "MLFLOW_SERVER_PYTHON": sys.executable,
        "MLFLOW_WORKERS": "1",  # one worker starts faster on a small CI machine
    }
    log = (tmp_path / "server.log").open("wb")
    # Invoked through bash so a checkout without the executable bit still works; its own
    # session so the whole process group (uvicorn and its workers) can be ended at the end.
    proc = subprocess.Popen(
        ["bash", str(SCRIPT), "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + STARTUP_LIMIT_S
        while not _healthy(url):
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n{(tmp_path / 'server.log').read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(
                    f"server not healthy after {STARTUP_LIMIT_S} s:\n{(tmp_path / 'server.log').read_text()}"
                )
            time.sleep(0.5)
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)
        log.close()


def test_server_logs_and_returns_a_run(server: str, tmp_path: Path) -> None:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=server)
    experiment_id = client.create_experiment("server-test")
    run = client.create_run(experiment_id)
    run_id = run.info.run_id
    client.log_metric(run_id, "map50", 0.25, step=3)
    note = tmp_path / "note.txt"
    note.write_text("ghost v3\n")
    client.log_artifact(run_id, str(note))
    client.set_terminated(run_id)

    back = client.get_run(run_id)
    assert back.data.metrics == {"map50": 0.25}
    assert back.info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(run_id)] == ["note.txt"]
    # Artifacts go through the server (mlflow-artifacts:/ proxy), and land in the destination given.
    assert back.info.artifact_uri.startswith("mlflow-artifacts:")
    local = Path(client.download_artifacts(run_id, "note.txt", str(tmp_path / "down")))
    assert local.read_text() == "ghost v3\n"
    assert list((tmp_path / "art").rglob("note.txt"))
