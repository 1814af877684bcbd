"""Checkpoints a user hands in are data, never code: search.checkpoint and the command lines' edge checks.

A malicious checkpoint (a pickle whose payload writes a file) passed as ``--weights`` ends with exit 2
and one line before Ray starts or MLflow is written, and its payload never runs; real checkpoints
(saved by Ultralytics, or a trainer's own last.pt and best.pt) are accepted; a sweep whose every trial
fails exits 1, says each distinct error once, and tries no trial twice.
"""

from __future__ import annotations

import builtins
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from ultralytics import RTDETR
from ultralytics.nn.tasks import RTDETRDetectionModel

from search.checkpoint import CheckpointError, check_weights, load, tensors
from search.materialize import materialize
from search.space import load_space
from tests.helpers import TINY, sweep_runs, tiny_space


class _Payload:
    """What a hostile checkpoint holds: unpickling it runs code (here: writes the file ``marker``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def evil_checkpoint(folder: Path) -> tuple[Path, Path]:
    """A checkpoint whose unpickling would write ``folder/ran``; the file and that marker's path."""
    marker = folder / "ran"
    path = folder / "evil.pt"
    torch.save({"model": _Payload(marker), "epoch": 1}, path)
    return path, marker


def base_model(space_name: str = "modes", budget: str = "cpu") -> RTDETRDetectionModel:
    space = load_space(space_name)
    return RTDETRDetectionModel(
        materialize(space, {"stage3": "keep"}, budget=space.budgets[budget])[0], verbose=False
    )


def test_a_pickled_payload_is_refused_naming_what_it_would_run_and_never_runs(tmp_path):
    path, marker = evil_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="builtins.exec") as info:
        load(path)
    assert str(path) in str(info.value) and "allow-list" in str(info.value)
    with pytest.raises(CheckpointError, match="--weights"):
        check_weights(path, base_model())
    # Ultralytics' own loaders, as its trainer calls them, are switched to the safe mode too
    from ultralytics.nn.tasks import load_checkpoint

    with pytest.raises(TypeError):
        load_checkpoint(str(path))
    assert not marker.exists()


def test_files_that_are_not_checkpoints_are_refused_in_one_line(tmp_path):
    (tmp_path / "noise.pt").write_bytes(b"\x00\x01not a zip at all" * 10)
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "weights.bin").write_bytes(b"")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    for name, why in (("noise.pt", "not a checkpoint"), ("empty.pt", "not a checkpoint"),
                      ("weights.bin", "expected a .pt"), ("list.pt", "not a checkpoint"), ("missing.pt", "no such file")):  # fmt: skip
        with pytest.raises(CheckpointError, match=why) as info:
            load(tmp_path / name)
        assert str(tmp_path / name) in str(info.value) and "\n" not in str(info.value)


def test_real_checkpoints_load_and_a_foreign_one_fits_the_base_not_at_all(tmp_path):
    space = load_space("modes")
    budget = space.budgets["cpu"]
    for point in ({"stage3": "keep"}, {"stage3": "gate"}):  # the unmodified base, and one of our blocks
        (tmp_path / "m.yaml").write_text(yaml.safe_dump(materialize(space, point, budget=budget)[0]))
        RTDETR(str(tmp_path / "m.yaml")).save(tmp_path / "saved.pt")  # Ultralytics' own save
        ckpt = load(tmp_path / "saved.pt")
        assert isinstance(ckpt["model"], torch.nn.Module) and tensors(ckpt)
        line = check_weights(tmp_path / "saved.pt", base_model())
        matched, total = (int(w) for w in line.split(": ")[1].split(" tensors")[0].split(" of the base's "))
        assert 0 < matched <= total and (matched == total) == (point["stage3"] == "keep")
    torch.save(
        {"model": {"backbone.conv.weight": torch.zeros(3, 3)}}, tmp_path / "other.pt"
    )  # a plain state dict
    with pytest.raises(CheckpointError, match="not one of its 1 tensors matches the base"):
        check_weights(tmp_path / "other.pt", base_model())


@pytest.mark.parametrize("command", ["run", "trial"])
def test_a_malicious_weights_file_exits_2_before_anything_is_written_and_never_runs(command, tmp_path):
    path, marker = evil_checkpoint(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = {
        "run": ["--space", "modes", "--storage-path", str(tmp_path / "ray"), "--tracking-uri", uri],
        "trial": ["--space", "modes", "--params", "{}", "--out", str(tmp_path / "trial")],
    }[command]
    done = subprocess.run(
        [sys.executable, "-m", f"search.{command}", *args, "--weights", str(path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "--weights" in done.stderr and str(path) in done.stderr and "builtins.exec" in done.stderr
    assert not marker.exists()
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray").exists()
    assert not (tmp_path / "trial").exists()


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", "it's", ".hidden", ""])
def test_a_sweep_name_that_would_leave_the_storage_folder_exits_2(name, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "search.run", "--space", "modes", "--name", name, "--storage-path",
         str(tmp_path / "ray"), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2 and "--name" in done.stderr, done.stderr[-2000:]
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray").exists()


# Every trial of this space fails the same way (Ultralytics has no such optimizer): deterministic, after
# the model is built and costed, so each trial gets as far as training.
FAILING_SPACE = tiny_space(
    "failing",
    """  stage3:
    layer: 5
    choices:
      keep: keep
      ori: {op: replace, block: GhostModuleV3, mode: ori}
""",
    cpu_extra="train: {optimizer: NoSuchOptimizer}",
)


def test_a_sweep_whose_every_trial_fails_exits_1_says_each_error_once_and_retries_none(tmp_path):
    space = tmp_path / "failing.yaml"
    space.write_text(FAILING_SPACE)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "search.run", "--space", str(space), "--sampler", "grid", "--storage-path",
         str(tmp_path / "ray"), "--tracking-uri", uri, "--max-failures", "2"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-3:]
    assert "no trial finished" in last[0] and "3 failed" in last[1], done.stdout[-3000:]
    assert last[2].startswith("[sweep] error (3 trials): ") and "NoSuchOptimizer" in last[2], last
    assert sum("NoSuchOptimizer" in line and "error (" in line for line in done.stdout.splitlines()) == 1
    parent, archs, trials, _ = sweep_runs(uri)
    assert len(trials) == 3 and parent.info.status == "FAILED"
    assert all(t.data.tags["trial.status"] == "failed" for t in trials)
    assert [t.data.tags["trial.attempts"] for t in trials] == ["1"] * 3  # a trial's own error is not retried
    # ... and Ray saw no error to retry: it writes error.txt for each failed attempt it would retry
    assert not list((tmp_path / "ray").rglob("error.txt"))


def test_a_trainers_best_pt_and_ultralytics_save_of_the_base_still_warm_start(tmp_path):
    """The allow-list is wide enough for real files: a trial's own best.pt warm-starts a sweep, and the
    unmodified base saved by Ultralytics warm-starts a trial."""
    base = subprocess.run(
        [sys.executable, "-m", "search.trial", "--space", "modes", "--budget", "cpu", "--pretrain", "0", *TINY,
         "--out", str(tmp_path / "base")],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert base.returncode == 0, base.stderr[-3000:]
    best = Path(json.loads(base.stdout)["weights"])
    assert best.name == "best.pt"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "search.run", "--space", "modes", "--sampler", "grid", "--samples", "1",
         "--weights", str(best), "--storage-path", str(tmp_path / "ray"), "--tracking-uri", uri, *TINY],
        capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"--weights {best}: " in done.stdout and "tensors match" in done.stdout
    assert "within 15 min" in done.stdout  # the default time budget of a CPU sweep on the built-in data
    _, _, trials, _ = sweep_runs(uri)
    assert trials and all(t.data.tags["trial.status"] == "ok" for t in trials)
    assert all(t.data.metrics["warm_start/loaded"] > 0 for t in trials)
    assert all(t.data.tags["threads"] == "1" for t in trials)  # a trial trains on its --cpus-per-trial (1)
    space = load_space("modes")
    (tmp_path / "m.yaml").write_text(
        yaml.safe_dump(materialize(space, {"stage3": "keep"}, budget=space.budgets["cpu"])[0])
    )
    RTDETR(str(tmp_path / "m.yaml")).save(tmp_path / "saved.pt")
    trial = subprocess.run(
        [sys.executable, "-m", "search.trial", "--space", "modes", "--params", '{"stage3": "ori"}', "--budget",
         "cpu", "--weights", str(tmp_path / "saved.pt"), *TINY, "--out", str(tmp_path / "t")],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert trial.returncode == 0, trial.stderr[-3000:]
    assert json.loads(trial.stdout)["warm_start_loaded"] > 0
