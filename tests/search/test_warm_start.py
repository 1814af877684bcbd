"""Warm-started sweeps: every trial starts from a checkpoint of the base, layers renamed after insertions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import INSERT_SPACE, TINY, Tables, layer_tensors, sweep_runs


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory) -> tuple[Path, Path]:
    """The space and a checkpoint of its base, trained here for one epoch."""
    tmp = tmp_path_factory.mktemp("warm")
    space = tmp / "insert.yaml"
    space.write_text(INSERT_SPACE)
    done = subprocess.run(
        [sys.executable, "-m", "search.trial", "--space", str(space), "--budget", "cpu", *TINY, "--out", str(tmp / "base")],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return space, Path(json.loads(done.stdout)["last"])


def test_an_inserted_block_shifts_the_layers_after_it_and_they_still_get_their_weights(
    base_checkpoint, tmp_path
):
    from ultralytics import RTDETR
    from ultralytics.nn.tasks import load_checkpoint

    from search.materialize import layer_map, materialize
    from search.space import load_space
    from search.training import TrialSpec, _warm_start

    space_file, checkpoint = base_checkpoint
    space = load_space(str(space_file))
    mapping = layer_map(space, {"stage2": "after"})
    assert mapping[:4] == [0, 1, 2, 3] and mapping[4:6] == [5, 6]  # the block sits at 4, old 4 moved to 5
    model_yaml = {**materialize(space, {"stage2": "after"}, budget=space.budgets["cpu"])[0], "nc": 3}
    (tmp_path / "m.yaml").write_text(__import__("yaml").safe_dump(model_yaml))
    spec = TrialSpec.from_budget(model_yaml, space.budgets["cpu"], tmp_path)
    assert spec.weights is None  # the budget names no checkpoint
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    mapped = _warm_start(RTDETR(str(tmp_path / "m.yaml")), str(checkpoint), tmp_path / "a", layer_map=mapping)
    plain = _warm_start(RTDETR(str(tmp_path / "m.yaml")), str(checkpoint), tmp_path / "b", layer_map=None)
    assert mapped["warm_start_fresh_layers"] == [4] and mapped["warm_start_skipped"] == 0
    assert plain["warm_start_loaded"] < mapped["warm_start_loaded"]  # without the map, shifted layers miss
    theirs = load_checkpoint(str(checkpoint))[0].float().state_dict()
    started = load_checkpoint(str(tmp_path / "a" / "warm_start.pt"))[0].float().state_dict()
    for old, new in ((4, 5), (5, 6), (27, 28)):  # after the insertion: each layer holds its own tensors
        a, b = layer_tensors(theirs, old), layer_tensors(started, new)
        assert a.keys() == b.keys() and a
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_warm_started_sweep_records_what_each_trial_loaded(base_checkpoint, tmp_path):
    space_file, checkpoint = base_checkpoint
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "search.run", "--space", str(space_file), "--sampler", "grid", "--weights", str(checkpoint),
         "--storage-path", str(tmp_path / "ray"), "--tracking-uri", uri, *TINY],
        capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    parent, archs, trials, client = sweep_runs(uri)
    assert parent.data.params["budget.weights"] == str(checkpoint.resolve())
    assert len(parent.data.params["weights_fingerprint"]) == 16
    for t in trials:
        m, tags = t.data.metrics, t.data.tags
        assert tags["warm_start.from"] == str(checkpoint.resolve())
        assert m["warm_start/skipped"] == 0 and m["warm_start/loaded"] > 0
        if t.data.params["stage2"] == "keep":  # the base loads every tensor of its own checkpoint
            assert m["warm_start/new"] == 0 and tags["warm_start.fresh_layers"] == ""
        else:  # only the inserted block starts fresh
            assert m["warm_start/new"] > 0 and tags["warm_start.fresh_layers"] == "4"
    report = Path(client.download_artifacts(parent.info.run_id, "report.html", str(tmp_path))).read_text()

    rows = {cells[0][0]: [c[0] for c in cells[1:]] for cells in Tables(report).find(id="warm-start")}
    assert rows["stage2=after"][3] == "4" and rows["(base)"][2] == "0"
    bad = subprocess.run(
        [sys.executable, "-m", "search.run", "--space", str(space_file), "--weights", str(tmp_path / "nope.pt"),
         "--storage-path", str(tmp_path / "ray2"), "--tracking-uri", uri],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 2 and "--weights" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
