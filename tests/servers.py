"""Starting servers for the tests: mlflow/server.sh in its own process group, waited on and always ended."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "mlflow" / "server.sh"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(url: str) -> bool:
    """Whether the MLflow server at url answers its /health endpoint with 200."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """End a server started in its own session: the leader and everything it spawned (workers, consumers)."""
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    # Children can outlive the leader (MLflow's job consumers); the group id stays theirs.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def wait_until(
    ready: Callable[[], bool], proc: subprocess.Popen, limit_s: float, what: str, log: Path
) -> None:
    """Poll ready() until it is true; fail the test with the log's tail if proc exits or limit_s passes."""
    deadline = time.monotonic() + limit_s
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}:\n{log.read_text()[-5000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not ready after {limit_s} s:\n{log.read_text()[-5000:]}")
        time.sleep(0.5)


@contextmanager
def mlflow_server(
    tmp: Path, backend_uri: str, artifacts: Path, startup_limit_s: float = 120
) -> Iterator[str]:
    """mlflow/server.sh on the given store and artifact folder; yields its URL once /health answers.

    The server's output goes to tmp/server.log; the whole process group is ended on the way out.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        # A store the caller chose, so a test never writes into the repo's mlflow/ folder.
        "MLFLOW_BACKEND_STORE_URI": backend_uri,
        "MLFLOW_ARTIFACTS_DESTINATION": str(artifacts),
        # The interpreter running the tests has mlflow (and psycopg), also in a clean clone without .venv.
        "MLFLOW_SERVER_PYTHON": sys.executable,
        "MLFLOW_WORKERS": "1",  # one worker starts faster on a small CI machine
    }
    log = tmp / "server.log"
    out = log.open("ab")
    try:
        # Through bash, so a checkout without the executable bit works; its own session, so the whole group
        # (uvicorn, its worker, the job consumers) can be ended.
        proc = subprocess.Popen(
            ["bash", str(SCRIPT), "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_until(lambda: healthy(url), proc, startup_limit_s, "mlflow server", log)
            yield url
        finally:
            stop_group(proc)
    finally:
        out.close()
