"""Real sweeps: Ray Tune + Optuna + an MLflow store in a temp dir, the built-in data, a tiny budget."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.parse
from pathlib import Path

import mlflow
import pytest
import torch

from tests.helpers import TINY, Tables, sweep_runs, uri

METRICS = ("map50_95", "map50", "latency_ms", "gflops", "n_params")

FAIL_SPACE = """
name: fail
description: one site whose 'broken' choice builds a model that cannot be measured
base: rtdetr-l
objectives:
  - {metric: map50_95, direction: maximize}
  - {metric: latency_ms, direction: minimize}
  - {metric: gflops, direction: minimize}
budgets:
  cpu: {epochs: 1, imgsz: 64, batch: 8, fraction: 0.25, width: 0.25, depth: 0.34, hidden_dim: 64, queries: 100}
  full: {epochs: 1, imgsz: 64, batch: 8}
sites:
  lateral:
    layer: 12
    choices:
      keep: keep
      ori: {op: replace, block: GhostModuleV3, mode: ori}
      broken: {op: replace, block: GhostModuleV3, mode: ori, args: [256, 3, 2]}  # stride 2 breaks the FPN
"""


def sweep(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "search.run",
        "--storage-path",
        str(tmp / "ray"),
        "--tracking-uri",
        uri(tmp),
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1500)


def runs(tmp: Path):
    """``(parent, architectures, trials, client)`` of the sweep in ``tmp``."""
    return sweep_runs(uri(tmp))


@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grid")
    done = sweep(tmp, "--space", "modes", "--sampler", "grid", "--repeats", "2", "--name", "ablation", *TINY)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return tmp, done


def test_grid_sweep_with_seeds_records_an_architecture_run_with_its_seeds_beneath(grid_sweep):
    tmp, done = grid_sweep
    parent, archs, trials, client = runs(tmp)
    assert parent.info.status == "FINISHED"
    for key in ("space", "sampler", "seed", "budget", "base", "repeats"):
        assert key in parent.data.params
    assert parent.data.params["sampler"] == "grid" and parent.data.params["repeats"] == "2"
    assert len(parent.data.tags["mlflow.source.git.commit"]) == 40  # the tests run inside the repo's checkout
    assert parent.data.params["git_commit"] == parent.data.tags["mlflow.source.git.commit"]
    # the whole grid, the base and the hand-made reference marked; every architecture with 2 seeds
    assert sorted(a.data.params["stage3"] for a in archs) == ["gate", "keep", "ori"]
    assert {a.data.params["stage3"]: a.data.tags.get("reference") for a in archs} == {
        "keep": "base", "ori": "hand", "gate": None
    }  # fmt: skip
    assert len(trials) == 6
    for arch in archs:
        assert arch.info.status == "FINISHED" and arch.data.tags["trial.status"] == "ok"
        assert set(arch.data.params) == {"stage3"}
        seeds = [t for t in trials if t.data.tags["mlflow.parentRunId"] == arch.info.run_id]
        assert sorted(t.data.params["seed"] for t in seeds) == ["0", "1"]
        assert arch.data.metrics["n_seeds"] == 2
        for key in METRICS:  # the mean over the seeds, its spread and its 95 % interval
            values = [t.data.metrics[key] for t in seeds]
            assert arch.data.metrics[key] == pytest.approx(sum(values) / 2)
            assert arch.data.metrics[f"{key}_std"] == pytest.approx(abs(values[0] - values[1]) / 2**0.5)
            assert arch.data.metrics[f"{key}_ci95"] == pytest.approx(12.706 * abs(values[0] - values[1]) / 2)
        # seeds of one architecture train differently: their latencies are measured anew (their spread)
        assert seeds[0].data.metrics["latency_ms"] != seeds[1].data.metrics["latency_ms"]
    for child in trials:
        assert child.info.status == "FINISHED"
        assert child.data.tags["trial.status"] == "ok"
        assert len(child.data.tags["arch_hash"]) == 16
        for key in METRICS:
            assert key in child.data.metrics, key
        assert 0 <= child.data.metrics["map50_95"] <= 1 and child.data.metrics["latency_ms"] > 0
        # the per-epoch curves under valid MLflow names (Ultralytics' keys hold parentheses)
        assert "metrics/mAP50-95_B" in child.data.metrics and "train/giou_loss" in child.data.metrics
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"model.yaml", "results.csv", "trial.json"} <= artifacts
        # what a user compares runs by, first: the choices and the seed as params and name
        assert set(child.data.params) == {"stage3", "seed"}
        choice, trial_id, seed = (
            child.data.params["stage3"],
            child.data.tags["trial.id"],
            child.data.params["seed"],
        )
        words = "unmodified base" if choice == "keep" else f"stage3 {choice}"
        assert child.info.run_name == f"{words} seed {seed} [{trial_id}]"
        assert "epoch" not in child.data.metrics and child.data.metrics["trial/epochs_done"] == 1
        assert (
            json.loads(
                Path(
                    client.download_artifacts(child.info.run_id, "trial.json", str(tmp / child.info.run_id))
                ).read_text()
            )["status"]
            == "ok"
        )
    # the seed reached the trainer: the two seeds of one architecture did not train the same weights
    for arch in archs:
        seeds = [t for t in trials if t.data.tags["mlflow.parentRunId"] == arch.info.run_id]
        losses = {t.data.metrics["train/giou_loss"] for t in seeds}
        assert len(losses) == 2


def test_the_sweep_trains_its_trials_in_reused_ray_workers(grid_sweep):
    """Six trials, two at a time, in two Ray worker processes: a finished trial's worker takes the next
    trial instead of a new process importing torch, Ultralytics, MLflow and Ray again (about 10 s each)."""
    tmp, _ = grid_sweep
    _, _, trials, _ = runs(tmp)
    pids = [t.data.tags["pid"] for t in trials]
    assert len(pids) == 6 and len(set(pids)) <= 2, pids


def test_the_noise_aware_frontier_is_tagged_and_attached_to_the_parent(grid_sweep):
    tmp, done = grid_sweep
    parent, archs, trials, client = runs(tmp)
    from search.frontier import Objective, frontier_table
    from search.stats import noise_floor

    objectives = [
        Objective("map50_95", "maximize"),
        Objective("latency_ms", "minimize"),
        Objective("gflops", "minimize"),
    ]
    rows = [{**a.data.metrics, "id": a.info.run_id} for a in archs]
    # latency_ratio's floor too: the sweep compares latencies through it (search.frontier.STEADIER)
    noise = noise_floor(rows, ["map50_95", "latency_ms", "gflops", "latency_ratio"])
    assert noise["latency_ratio"][1] == 3
    assert noise["gflops"] == (0.0, 0) and noise["map50_95"][1] == 3  # 3 architectures x (2 - 1) seeds
    expected = {r["id"] for r in frontier_table(rows, objectives, noise)}
    tagged = {a.info.run_id for a in archs if a.data.tags.get("pareto") == "true"}
    assert tagged == expected and tagged
    assert all(a.data.tags.get("pareto") in ("true", "false") for a in archs)
    for a in archs:  # one latency: nothing timed a second time at the end
        assert "latency_final_ms" not in a.data.metrics and "latency_ratio_final" not in a.data.metrics
    for t in trials:  # held-out scoring, both evaluators, the latency ratio to the base
        assert (
            t.data.tags["scored_split"] == "test"
            and t.data.metrics["map50_95"] == t.data.metrics["map50_95_coco"]
        )
        assert "map50_95_ultralytics" in t.data.metrics and "map50_95_val" in t.data.metrics
        assert 0.5 < t.data.metrics["latency_ratio"] < 2
        # on CPU: no AMP (and why), data loaded in-process (one CPU per trial)
        assert t.data.tags["amp"] == "false" and t.data.tags["amp_reason"] == "AMP off: cpu training"
        assert t.data.tags["workers"] == "0"
        # how its latency was timed: on CPU fp32, with these versions
        assert (
            t.data.tags["latency_precision"] == "fp32" and t.data.tags["latency_torch"] == torch.__version__
        )
    for t in trials:  # a seed carries its architecture's mark (the export picks frontier seeds by it)
        assert t.data.tags["pareto"] == ("true" if t.data.tags["mlflow.parentRunId"] in tagged else "false")
    assert parent.data.metrics["noise/map50_95_std"] == pytest.approx(noise["map50_95"][0])
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"pareto.csv", "frontier.png", "frontier.html", "report.html", "space.yaml"} <= artifacts
    # the space as its trials were built and trained: the resolved budget, and it loads as a space again
    import yaml

    from search.space import load_space, parse_space

    logged = yaml.safe_load(
        Path(client.download_artifacts(parent.info.run_id, "space.yaml", str(tmp))).read_text()
    )
    again = parse_space(logged, "space.yaml")
    assert again.sites == load_space("modes").sites and again.references == load_space("modes").references
    assert (again.budgets["cpu"].epochs, again.budgets["cpu"].imgsz) == (
        1,
        64,
    )  # the sweep's --epochs, --imgsz
    report = Path(client.download_artifacts(parent.info.run_id, "report.html", str(tmp))).read_text()
    # the modes grid trains both marked points: the report finds them among its trials and marks them
    from search.report import BASE_TEXT

    HAND_TEXT = load_space("modes").references[0].caption  # noqa: N806

    report = report.replace("&#x27;", "'")
    assert f"{BASE_TEXT}: large marker" in report and f"{HAND_TEXT}: large marker" in report
    assert "not among these trials" not in report

    labels = {cells[-2][0]: cells[1][0] for cells in Tables(report).find(id="trials")}
    assert labels == {"(base)": "base", "stage3=ori": "hand", "stage3=gate": ""}
    assert report.count('class="hl" fill="#e6b800"') == 2 and report.count('class="hl" fill="#2ca02c"') == 2
    # the ablation table: each single change against the base, with its interval and a verdict
    ablation = Tables(report).find(id="ablation")
    assert [cells[0][0] for cells in ablation] == ["stage3=ori (hand)", "stage3=gate"]
    for cells in ablation:
        assert cells[1][0] == "2 vs 2"  # seeds; two are too few to pair (see search.stats.PAIRED_MIN)
        assert re.fullmatch(r"[+-]\d\.\d{3} \[[+-]\d\.\d{3}, [+-]\d\.\d{3}\]", cells[2][0])
        assert cells[3][0] in ("no: within noise", "yes: better", "yes: worse")
    assert 'id="noise-notes"' in report and "noise floor" in report
    for child in trials:  # the objectives are the final validation's, logged once
        assert len(client.get_metric_history(child.info.run_id, "map50_95")) == 1
    csv_text = Path(client.download_artifacts(parent.info.run_id, "pareto.csv", str(tmp))).read_text()
    assert len(csv_text.strip().splitlines()) == 1 + len(expected)
    history = client.get_metric_history(parent.info.run_id, "hypervolume")
    assert [m.step for m in history] == [1, 2, 3]  # one step per architecture
    assert all(a.value <= b.value for a, b in zip(history, history[1:], strict=False))  # never decreases
    # the terminal shows progress lines and the frontier table, not Ray's status table
    assert "[sweep] frontier of ablation" in done.stdout and "pending" in done.stdout
    assert "Trial status:" not in done.stdout
    # the base first, with 2 seeds: the first two trials started are its seeds
    started = re.findall(r"\[sweep\] started \w+ (.+?) \|", done.stdout)
    # (two at once on a 2-CPU machine: either may print first)
    assert sorted(started[:2]) == ["(base) seed 0", "(base) seed 1"] and len(started) == 6
    # each running trial's progress per epoch, the frontier's size and hypervolume, a link to the frontier's runs
    assert re.search(r"\[sweep\] \w+ stage3=(ori|gate) seed [01]: epoch 1/1, map50_95 [0-9.e-]+", done.stdout)
    assert re.search(r"\| frontier [1-3] of [1-3] architectures, hypervolume [0-9.e-]+", done.stdout)
    assert "noise floor, the seed std pooled" in done.stdout
    assert re.search(
        r"the sweep's runs: http://127\.0\.0\.1:5000/#/experiments/\d+/runs\?workflowType=machine_learning",
        done.stdout,
    )
    link = re.search(r"/#/compare-runs\?runs=(\S+?)&experiments=", done.stdout)
    assert link and set(json.loads(urllib.parse.unquote_plus(link.group(1)))) == tagged
    for ray_banner in ("Configuration for experiment", "TensorBoard", "View detailed results here"):
        assert ray_banner not in done.stdout + done.stderr


def test_a_failing_trial_is_recorded_and_the_sweep_goes_on_without_training_an_architecture_twice(tmp_path):
    space = tmp_path / "fail.yaml"
    space.write_text(FAIL_SPACE)
    done = sweep(
        tmp_path, "--space", str(space), "--sampler", "random", "--samples", "6", "--seed", "3", *TINY
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    parent, archs, children, client = runs(tmp_path)
    assert len(children) == 2 + 6 and parent.info.status == "FINISHED"  # the base's 2 seeds, then 6 sampled
    assert not [c for c in [*archs, *children] if c.info.status == "RUNNING"]
    failed = [c for c in children if c.data.params["lateral"] == "broken"]
    assert failed, "the seeded sampler proposes the broken point"
    for c in failed:
        assert c.info.status == "FAILED" and c.data.tags["trial.status"] == "failed"
        assert "FLOPs" in c.data.tags["error"]
    broken = [a for a in archs if a.data.params["lateral"] == "broken"]
    assert (
        len(broken) == 1
        and broken[0].info.status == "FAILED"
        and broken[0].data.tags["trial.status"] == "failed"
    )
    good = [c for c in children if c.data.params["lateral"] != "broken"]
    trained = [c for c in good if "reused_from" not in c.data.tags]
    reused = [c for c in good if "reused_from" in c.data.tags]
    keys = [(c.data.tags["arch_hash"], c.data.params["seed"]) for c in trained]
    assert len(keys) == len(set(keys)), "no seed of an architecture is trained twice"
    assert reused, "6 samples of 3 points repeat an architecture"
    by_id = {c.info.run_id: c for c in trained}
    for c in reused:
        original = by_id[c.data.tags["reused_from"]]
        assert original.data.tags["arch_hash"] == c.data.tags["arch_hash"]
        assert original.data.params["seed"] == c.data.params["seed"]
        assert c.data.metrics["map50_95"] == original.data.metrics["map50_95"]
        assert c.info.status == "FINISHED"
        # a reused seed sits under the same architecture run and is not counted twice in its mean
        assert c.data.tags["mlflow.parentRunId"] == original.data.tags["mlflow.parentRunId"]
    assert len(archs) == len({a.data.tags["arch_hash"] for a in archs})  # one run per architecture
    for arch in archs:
        if arch.data.tags["trial.status"] == "ok":
            own = [c for c in trained if c.data.tags["mlflow.parentRunId"] == arch.info.run_id]
            assert arch.data.metrics["n_seeds"] == len(own)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--space", "nope"], "nope"),
        (["--space", "modes", "--samples", "0"], "--samples"),
        (["--space", "modes", "--sampler", "grid", "--samples", "5"], "grid"),
        (["--space", "modes", "--data", "/nonexistent/data.yaml"], "does not exist"),
        (["--space", "modes", "--tracking-uri", "http://127.0.0.1:9"], "unreachable"),
        (["--space", "modes", "--resume"], "--name"),
        (["--space", "modes", "--resume", "--name", "never"], "no sweep named"),
        (["--space", "modes", "--gpus-per-trial", "2"], "--gpus-per-trial must be at most 1"),
        (
            ["--space", "modes", "--latency-precision", "fp16"],
            "--latency-precision fp16 needs trials on a GPU",
        ),
        (["--space", "modes", "--latency-backend", "tensorrt"], "invalid choice: 'tensorrt'"),
        (["--space", "modes", "--address", "127.0.0.1:9"], "no Ray cluster answers"),
        (["--space", "modes", "--max-failures", "-1"], "--max-failures"),
        (["--space", "modes", "--repeats", "0"], "--repeats"),
        (["--space", "modes", "--sampler", "ablation", "--samples", "3"], "--sampler ablation"),
        (["--space", "BADOBJ"], "objectives may be"),
    ],
)
def test_bad_input_exits_2_before_anything_is_written(tmp_path, args, needle):
    if "BADOBJ" in args:  # a space whose objective no trial reports
        bad = tmp_path / "badobj.yaml"
        bad.write_text(FAIL_SPACE.replace("metric: latency_ms", "metric: latency_p99_ms"))
        args = [str(bad) if a == "BADOBJ" else a for a in args]
    cmd = [sys.executable, "-m", "search.run", "--storage-path", str(tmp_path / "ray"), *args]
    if "--tracking-uri" not in args:
        cmd += ["--tracking-uri", uri(tmp_path)]
    # an unreachable Ray cluster must not hang on Ray's connection retries: refused within a minute
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60 if "--address" in args else 300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert needle in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "ray").exists()
    if (tmp_path / "mlflow.db").exists():
        client = mlflow.MlflowClient(tracking_uri=uri(tmp_path))
        assert not client.search_experiments() or not client.search_runs(
            [e.experiment_id for e in client.search_experiments()]
        )


def test_an_existing_sweep_is_never_overwritten(grid_sweep):
    tmp, _ = grid_sweep
    done = sweep(tmp, "--space", "modes", "--name", "ablation", *TINY)
    assert done.returncode == 2 and "already exists" in done.stderr and "--resume" in done.stderr
    parent, _, children, _ = runs(tmp)
    assert len(children) == 6


@pytest.mark.parametrize(
    ("changed", "named"),
    [
        (["--epochs", "2"], "--epochs (was 1, now 2)"),
        (["--imgsz", "96"], "--imgsz (was 64, now 96)"),
        (["--seed", "5"], "--seed (was 0, now 5)"),
        (["--max-gflops", "50"], "--max-gflops (was None, now 50.0)"),
        (["--lr0", "0.01"], "--lr0"),
    ],
)
def test_resume_with_a_changed_training_setup_exits_2_naming_the_flags(grid_sweep, changed, named):
    """A result trained under one setup is never reused under another: the resume is refused."""
    tmp, _ = grid_sweep
    parent, _, children, client = runs(tmp)
    # the sweep's own values, then the changed one (argparse keeps the last)
    done = sweep(
        tmp, "--space", "modes", "--sampler", "grid", "--repeats", "2", "--name", "ablation", "--resume",
        *TINY, *changed,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert named in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    after, _, kids, _ = runs(tmp)
    assert after.data.params == parent.data.params and len(kids) == len(children)
    assert after.info.status == "FINISHED"


def test_a_sweep_name_whose_ray_state_is_elsewhere_never_merges_into_its_mlflow_parent(grid_sweep, tmp_path):
    """Same --name and tracking store, another --storage-path: refused, nothing written."""
    tmp, _ = grid_sweep
    parent, _, children, _ = runs(tmp)
    cmd = [sys.executable, "-m", "search.run", "--space", "modes", "--name", "ablation", *TINY,
           "--storage-path", str(tmp_path / "elsewhere"), "--tracking-uri", uri(tmp)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "is taken in MLflow" in done.stderr, done.stderr[-2000:]
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "elsewhere").exists()
    after, _, kids, _ = runs(tmp)
    assert len(kids) == len(children) and after.data.params == parent.data.params


def test_every_table_plot_and_hypervolume_reads_one_latency_per_architecture(grid_sweep):
    """latency_ms is the base timed alone before the trials times each trial's interleaved ratio; the
    architecture's is the mean over its seeds, and the CSV, search.pareto and the report's plots show it."""
    import csv
    import statistics

    tmp, _ = grid_sweep
    parent, archs, trials, client = runs(tmp)
    base = parent.data.metrics["latency_base_ms"]
    assert base > 0 and parent.data.tags["latency_base_device"] == trials[0].data.tags["latency_device"]
    for t in trials:
        m = t.data.metrics
        assert m["latency_ms"] == pytest.approx(base * m["latency_ratio"], rel=1e-9)
        assert m["latency_loaded_ms"] > 0  # the seed's own median under load: a diagnostic only
    by_arch = {a.info.run_id: a.data.metrics["latency_ms"] for a in archs}
    for a in archs:
        seeds = [
            t.data.metrics["latency_ms"] for t in trials if t.data.tags["mlflow.parentRunId"] == a.info.run_id
        ]
        assert by_arch[a.info.run_id] == pytest.approx(statistics.fmean(seeds), rel=1e-9)
    csv_path = client.download_artifacts(parent.info.run_id, "pareto.csv", str(tmp / "one-latency"))
    with open(csv_path) as fh:
        for r in csv.DictReader(fh):
            (a,) = [a for a in archs if a.data.tags["arch_hash"] == r["arch_hash"]]
            assert float(r["latency_ms"]) == pytest.approx(by_arch[a.info.run_id], rel=1e-9)
    cmd = [sys.executable, "-m", "search.pareto", "--sweep", "ablation", "--tracking-uri", uri(tmp), "--all"]
    shown = json.loads(
        subprocess.run([*cmd, "--format", "json"], capture_output=True, text=True, timeout=300).stdout
    )
    for r in shown:
        assert r["latency_ms"] == pytest.approx(by_arch[r["arch_run_id"]], rel=1e-9)
    report = Path(
        client.download_artifacts(parent.info.run_id, "report.html", str(tmp / "one-latency"))
    ).read_text()
    for a in archs:  # every scatter point's tooltip carries the architecture's one latency
        tips = re.findall(rf"arch_hash: {a.data.tags['arch_hash']}.*?latency_ms: ([\d.e+-]+)", report, re.S)
        assert tips and all(float(v) == pytest.approx(by_arch[a.info.run_id], rel=1e-3) for v in tips)


def test_the_frontier_and_the_ablation_table_of_a_past_sweep_print_from_mlflow(grid_sweep):
    tmp, _ = grid_sweep
    parent, archs, _, _ = runs(tmp)
    cmd = [sys.executable, "-m", "search.pareto", "--sweep", "ablation", "--tracking-uri", uri(tmp)]
    text = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert text.returncode == 0, text.stderr[-2000:]
    on_front = {a.info.run_id: a.data.tags["arch_hash"] for a in archs if a.data.tags.get("pareto") == "true"}
    assert all(h in text.stdout for h in on_front.values())
    assert "noise floor, the seed std pooled" in text.stdout and "map50_95 ±95%" in text.stdout
    as_json = subprocess.run([*cmd, "--format", "json"], capture_output=True, text=True, timeout=300)
    assert sorted(r["run_id"] for r in json.loads(as_json.stdout)) == sorted(on_front)
    every = subprocess.run([*cmd, "--all"], capture_output=True, text=True, timeout=300)
    header, _, *body = every.stdout.splitlines()[1 : 3 + len(archs)]
    at = header.index("frontier")  # the table's columns are aligned: read the column where its header is
    for a in archs:
        (line,) = [line for line in body if a.data.tags["arch_hash"] in line]
        assert line[at : at + len("frontier")].strip() == ("yes" if a.info.run_id in on_front else "-"), line
    every_json = json.loads(subprocess.run([*cmd, "--all", "--format", "json"], capture_output=True, text=True,
                                           timeout=300).stdout)  # fmt: skip
    assert len(every_json) == len(archs)
    assert {r["run_id"] for r in every_json if r["on_frontier"]} == set(on_front)
    table = subprocess.run([*cmd, "--table", "ablation"], capture_output=True, text=True, timeout=300)
    assert table.returncode == 0, table.stderr[-2000:]
    lines = table.stdout.splitlines()
    assert lines[1].split()[:2] == ["change", "seeds"]
    assert lines[3].startswith("stage3=ori (hand)") and lines[4].startswith("stage3=gate") and len(lines) == 5
    rows = json.loads(subprocess.run([*cmd, "--table", "ablation", "--format", "json"], capture_output=True,
                                     text=True, timeout=300).stdout)  # fmt: skip
    assert [r["change"] for r in rows] == ["stage3=ori", "stage3=gate"]
    assert all(r["d_map50_95_low"] <= r["d_map50_95"] <= r["d_map50_95_high"] for r in rows)
    missing = subprocess.run(
        [*cmd[:-4], "--sweep", "nope", "--tracking-uri", uri(tmp)], capture_output=True, text=True
    )
    assert missing.returncode == 2 and "nope" in missing.stderr


def test_from_sweep_trains_exactly_a_past_sweeps_frontier_again(grid_sweep):
    """The second stage of a screening workflow: the frontier of one sweep, trained again (here with another
    budget value), the base first as in every sweep; nothing else."""
    tmp, _ = grid_sweep
    parent, archs, _, _ = runs(tmp)
    front = sorted(a.data.params["stage3"] for a in archs if a.data.tags["pareto"] == "true")
    done = sweep(tmp, "--from-sweep", "ablation", "--name", "again", *TINY[:-2], "--fraction", "0.5")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    again, again_archs, again_trials, _ = sweep_runs(uri(tmp), "again")
    assert again.data.params["sampler"] == "list" and again.data.params["from_sweep"] == "ablation"
    assert again.data.params["budget.fraction"] == "0.5"
    trained = sorted(a.data.params["stage3"] for a in again_archs)
    assert trained == sorted({"keep", *front})  # the frontier, and the base the sweep measures its noise on
    missing = sweep(tmp, "--from-sweep", "nope", "--name", "x", *TINY)
    assert missing.returncode == 2 and "--from-sweep nope: no such sweep" in missing.stderr


def test_the_ablation_sampler_trains_the_base_and_every_single_change_of_placements(tmp_path):
    """--sampler ablation: 1 + (each site's non-keep choices) architectures, each one change from the base,
    and the ablation table has a row for each change (replacements and insertions alike)."""
    from search.space import load_space

    space = load_space("placements")
    changes = sum(len(s.choices) - 1 for s in space.sites)
    assert any(c.op == "insert" for s in space.sites for c in s.choices)  # where to insert, too
    done = sweep(
        tmp_path, "--space", "placements", "--sampler", "ablation", "--name", "abl", "--max-concurrent", "2",
        "--epochs", "1", "--imgsz", "64", "--batch", "8", "--fraction", "0.125",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    parent, archs, trials, client = runs(tmp_path)
    assert parent.data.params["sampler"] == "ablation"
    assert len(archs) == 1 + changes and len(trials) == 2 + changes  # the base with its 2 seeds
    sites = [s.name for s in space.sites]
    points = [{s: a.data.params[s] for s in sites} for a in archs]
    assert len({tuple(p.items()) for p in points}) == len(points)
    (base,) = [p for p in points if all(v == "keep" for v in p.values())]
    assert all(sum(v != "keep" for v in p.values()) == 1 for p in points if p is not base)
    assert all(a.data.tags["trial.status"] == "ok" for a in archs)
    table = subprocess.run(
        [sys.executable, "-m", "search.pareto", "--sweep", "abl", "--tracking-uri", uri(tmp_path),
         "--table", "ablation", "--format", "json"], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert table.returncode == 0, table.stderr[-2000:]
    rows = json.loads(table.stdout)
    expected = [f"{s.name}={c.name}" for s in space.sites for c in s.choices if c.op != "keep"]
    assert [r["change"] for r in rows] == expected
    assert all(r["base_seeds"] == 2 and r["n_seeds"] == 1 for r in rows)
    report = Path(client.download_artifacts(parent.info.run_id, "report.html", str(tmp_path))).read_text()

    assert [cells[0][0] for cells in Tables(report).find(id="ablation")] == expected


def test_a_finished_sweep_replays_from_mlflow_and_its_table_replays_the_same(grid_sweep, tmp_path, capsys):
    from search.replay import main, read_table, table_from_store
    from search.surrogate import fit_surrogate

    tmp, _ = grid_sweep
    table = tmp_path / "table.json"
    args = ["--replays", "2", "--trials", "3", "--strategies", "random,cost"]
    assert main(["--sweep", "ablation", "--tracking-uri", uri(tmp), "--save-table", str(table), *args]) == 0
    out = capsys.readouterr().out
    assert "surrogate of 3 architectures (6 trained seeds)" in out and "gflops: additive" in out
    space, seeds, setup = read_table(table)
    assert space.name == "modes" and len(seeds) == 6
    assert all(len(s["curve"]) == 1 and 0 <= s["curve"][0] <= 1 for s in seeds)  # one epoch's validation mAP
    assert setup["sweeps"] == ["ablation"] and len(setup["commit"]) == 40 and setup["budget.epochs"] == "1"
    stored = table_from_store(uri(tmp), "rtdetr-ghost-search", ["ablation", "ablation"])[
        1
    ]  # joined: each seed once
    assert {(s["arch_hash"], s["seed"]) for s in seeds} == {(s["arch_hash"], s["seed"]) for s in stored}
    surrogate = fit_surrogate(space, seeds)[0]
    for point in ({"stage3": "keep"}, {"stage3": "ori"}, {"stage3": "gate"}):
        mean = [s["map50_95"] for s in seeds if s["params"] == point]
        assert surrogate.values(point)["map50_95"] == pytest.approx(sum(mean) / 2)  # one site: the means
    assert main(["--table", str(table), *args]) == 0
    assert main(["--sweep", "no-such-sweep", "--tracking-uri", uri(tmp), *args]) == 2
    assert "no-such-sweep: no such sweep" in capsys.readouterr().err
