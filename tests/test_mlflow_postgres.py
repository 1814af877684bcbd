"""The cluster setup from mlflow/README.md: mlflow/server.sh on PostgreSQL, a real sweep logging to it over HTTP.

Starts a throwaway PostgreSQL on 127.0.0.1 (initdb into a temp dir), the MLflow server through the
project's script against it, runs a tiny sweep with `--tracking-uri http://...` and reads the parent run,
the trial runs and the parent's artifacts back through `mlflow.MlflowClient`.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import TINY
from tests.servers import free_port, mlflow_server, stop_group, wait_until

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = "rtdetr-ghost-search"
SWEEP = "pg-sweep"
SAMPLES = 2
TRIALS = 3  # the base is trained with 2 seeds
OBJECTIVES = ("map50_95", "latency_ms", "gflops")
PARENT_ARTIFACTS = {"frontier.png", "frontier.html", "pareto.csv", "report.html"}
DB_USER = "mlflow"
DB_PASSWORD = "ghost-v3"  # a password, so the user:pw@host form of the README is what gets tested
STARTUP_LIMIT_S = 120  # the first start creates MLflow's tables in PostgreSQL (alembic migrations)

pytestmark = pytest.mark.slow


def _pg_bin() -> Path | None:
    """The newest installed PostgreSQL server's bin folder (Debian layout), or None."""
    versions = [Path(p).parents[1].name for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    newest = max((v for v in versions if v.isdigit()), key=int, default=None)
    return Path(f"/usr/lib/postgresql/{newest}/bin") if newest else None


@contextmanager
def postgres(bin_dir: Path, log: Path) -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1; yields the URI of an empty database for MLflow."""
    # PostgreSQL refuses to run as root: as root, the cluster belongs to the package's `postgres` user,
    # and its folder lives outside pytest's tmp dir, which only root may enter.
    user = "postgres" if os.geteuid() == 0 else None
    base = Path(tempfile.mkdtemp(prefix="mlflow-pg-"))
    out = log.open("ab")
    proc = None
    try:
        pwfile = base / "pw"
        pwfile.write_text(DB_PASSWORD + "\n")
        if user:
            entry = pwd.getpwnam(user)
            os.chown(base, entry.pw_uid, entry.pw_gid)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        initdb = [bin_dir / "initdb", "-D", base / "data", "-U", DB_USER, f"--pwfile={pwfile}"]
        # --no-sync: a test cluster needs no fsync of its fresh files
        initdb += ["--auth=scram-sha-256", "--encoding=UTF8", "--no-sync", "--no-instructions"]
        subprocess.run(initdb, user=user, stdout=out, stderr=subprocess.STDOUT, check=True, timeout=120)
        port = free_port()
        # TCP on loopback only; the socket goes into our folder, not the system's /var/run/postgresql.
        proc = subprocess.Popen(
            [
                bin_dir / "postgres",
                "-D",
                base / "data",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-k",
                base,
                "-c",
                "fsync=off",
            ],
            user=user,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        env = {**os.environ, "PGPASSWORD": DB_PASSWORD}
        probe = [bin_dir / "pg_isready", "-q", "-h", "127.0.0.1", "-p", str(port), "-U", DB_USER]
        wait_until(
            lambda: subprocess.run(probe, env=env, timeout=10).returncode == 0, proc, 60, "postgres", log
        )
        subprocess.run(
            [bin_dir / "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", DB_USER, "mlflow"],
            env=env,
            check=True,
            timeout=60,
        )
        yield f"postgresql://{DB_USER}:{DB_PASSWORD}@127.0.0.1:{port}/mlflow"
    finally:
        if proc is not None:
            stop_group(proc, signal.SIGINT)  # SIGINT: PostgreSQL's fast shutdown
        out.close()
        shutil.rmtree(base, ignore_errors=True)


def run_sweep(tmp: Path, tracking_uri: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "search.run",
        "--space",
        "modes",
        "--sampler",
        "grid",
        "--samples",
        str(SAMPLES),
        *TINY,
        "--name",
        SWEEP,
        "--storage-path",
        str(tmp / "ray"),
        "--tracking-uri",
        tracking_uri,
    ]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)


def test_a_sweep_logs_to_the_server_on_postgresql(tmp_path: Path) -> None:
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): apt-get install postgresql"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as")
    # SQLAlchemy 2.1 (under mlflow) serves a plain postgresql:// URI with psycopg 3, not psycopg2.
    psycopg = pytest.importorskip(
        "psycopg", reason="the server's PostgreSQL driver: pip install 'psycopg[binary]'"
    )
    import mlflow

    artifacts = tmp_path / "art"
    with (
        postgres(bin_dir, tmp_path / "postgres.log") as db_uri,
        mlflow_server(tmp_path, db_uri, artifacts, startup_limit_s=STARTUP_LIMIT_S) as url,
    ):
        done = run_sweep(tmp_path, url)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]

        client = mlflow.MlflowClient(tracking_uri=url)
        exp = client.get_experiment_by_name(EXPERIMENT)
        assert exp is not None
        everything = client.search_runs([exp.experiment_id], max_results=100)
        parents = [r for r in everything if "mlflow.parentRunId" not in r.data.tags]
        assert len(parents) == 1, "one parent run per sweep"
        parent = parents[0]
        archs = [r for r in everything if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert len(archs) == SAMPLES  # the base and the hand-made reference
        children = [r for r in everything if r.data.tags.get("sweep.role") == "trial"]
        assert len(children) == TRIALS == len(everything) - 1 - SAMPLES  # the base's 2 seeds and one
        assert {c.data.tags["mlflow.parentRunId"] for c in children} == {a.info.run_id for a in archs}
        assert parent.info.status == "FINISHED"
        assert parent.data.params["sampler"] == "grid"
        for child in children:
            assert child.info.status == "FINISHED"
            assert child.data.tags["trial.status"] == "ok"
            for key in OBJECTIVES:
                assert key in child.data.metrics, key
            assert 0 <= child.data.metrics["map50_95"] <= 1
            assert child.data.metrics["latency_ms"] > 0 and child.data.metrics["gflops"] > 0

        # Artifacts went through the server (clients never see the store) into the destination given.
        assert parent.info.artifact_uri.startswith("mlflow-artifacts:")
        assert PARENT_ARTIFACTS <= {a.path for a in client.list_artifacts(parent.info.run_id)}
        csv_file = Path(client.download_artifacts(parent.info.run_id, "pareto.csv", str(tmp_path / "down")))
        assert len(csv_file.read_text().strip().splitlines()) >= 2  # a header and at least one trial
        for name in PARENT_ARTIFACTS:
            assert list(artifacts.rglob(name)), name

        # And the runs really live in PostgreSQL, not in some fallback store.
        with psycopg.connect(db_uri) as conn:
            rows = conn.execute("SELECT lifecycle_stage, status, count(*) FROM runs GROUP BY 1, 2").fetchall()
        runs = {(stage, status): n for stage, status, n in rows}
        assert runs.pop(("active", "FINISHED")) == 1 + SAMPLES + TRIALS
        # the base's two seeds start at once and each opens the architecture's run: the loser's is ended
        # and deleted (kept, deleted, until `mlflow gc`), never left RUNNING
        assert set(runs) <= {("deleted", "KILLED")}, runs
