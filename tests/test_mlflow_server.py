"""mlflow/server.sh starts a tracking server that takes a run, a metric and an artifact, and gives them back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import mlflow_server

STARTUP_LIMIT_S = 90


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    # A temporary store, so the test never writes into the repo's mlflow/ folder.
    backend = f"sqlite:///{tmp_path / 'db'}"
    with mlflow_server(tmp_path, backend, tmp_path / "art", startup_limit_s=STARTUP_LIMIT_S) as url:
        yield url


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


def test_the_backend_store_uri_never_reaches_a_command_line(tmp_path: Path) -> None:
    """A PostgreSQL URI holds the database password: `ps` shows every process's command line to every user."""
    secret = "S3cretPw"
    store = tmp_path / secret
    store.mkdir()
    with mlflow_server(
        tmp_path, f"sqlite:///{store / 'db'}", tmp_path / "art", startup_limit_s=STARTUP_LIMIT_S
    ):
        lines = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                lines.append(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:  # a process that ended meanwhile
                continue
        servers = [line for line in lines if " -m mlflow server" in line]  # server.sh execs this
        assert servers, "the server's processes are visible"
        assert not [line for line in lines if secret in line]
