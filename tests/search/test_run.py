"""`python -m search.run --dry-run`: every architecture built and costed without training; bad space files exit 2."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

SPACES = Path(__file__).resolve().parents[2] / "spaces"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "search.run", *args], capture_output=True, text=True, timeout=600
    )


def test_dry_run_costs_every_point_of_a_small_space_and_matches_ultralytics_for_the_base():
    done = run("--space", "modes", "--dry-run", "--format", "json")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(done.stdout)
    assert sorted(r["params"]["stage3"] for r in rows) == ["gate", "keep", "ori"]
    assert len({r["arch_hash"] for r in rows}) == 3
    (base,) = [r for r in rows if r["params"]["stage3"] == "keep"]
    assert (
        base["n_params"] == 32_148_140 and f"{base['gflops']:.1f}" == "105.7"
    )  # Ultralytics' fused rtdetr-l
    assert all(r["n_params"] > 0 and r["gflops"] > 0 for r in rows)


def test_dry_run_text_lists_sites_and_rows_and_takes_a_path_and_a_budget(tmp_path):
    path = tmp_path / "mine.yaml"
    shutil.copy(SPACES / "modes.yaml", path)
    done = run("--space", str(path), "--dry-run", "--budget", "cpu")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "3 points" in done.stdout and "stage3" in done.stdout and "layer   5" in done.stdout
    assert "proxy: budget cpu" in done.stdout
    assert len([line for line in done.stdout.splitlines() if line.startswith(("(base)", "stage3="))]) == 3


def test_dry_run_samples_a_large_space():
    done = run("--space", "placements", "--dry-run", "--samples", "2", "--budget", "cpu", "--format", "json")
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(json.loads(done.stdout)) == 2


def test_a_bad_space_file_is_one_line_and_exit_2(tmp_path):
    data = yaml.safe_load((SPACES / "modes.yaml").read_text())
    data["sites"]["stage3"]["choices"]["ori"]["mode"] = "fast"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    for args in (["--dry-run"], []):
        done = run("--space", str(path), *args)
        assert done.returncode == 2
        assert (
            str(path) in done.stderr
            and "sites.stage3.choices.ori.mode" in done.stderr
            and "fast" in done.stderr
        )
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_fractional_gpus_per_trial_pack_trials_onto_a_gpu_and_more_than_one_is_refused():
    import pytest

    from search.run import UsageError, _parser, _positive

    for value, ok in (("0.25", True), ("0.5", True), ("1", True), ("1.5", False), ("2", False)):
        args = _parser().parse_args(["--gpus-per-trial", value])
        if ok:
            _positive(args)
        else:
            with pytest.raises(UsageError, match="--gpus-per-trial must be at most 1"):
                _positive(args)
