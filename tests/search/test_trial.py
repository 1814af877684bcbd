"""One trial end to end on CPU with the built-in data and a tiny budget: real Ultralytics training and validation."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from ultralytics import RTDETR
from ultralytics.nn.tasks import RTDETRDetectionModel

from search.materialize import materialize
from search.space import load_space
from search.training import TrialFailed, TrialSpec, run_trial, with_classes
from tests.helpers import tiny

TINY = tiny(epochs=2, fraction=0.5)
KEYS = (
    "arch_hash", "map50_95", "map50", "latency_ms", "latency_p90_ms", "latency_iqr_ms", "latency_device",
    "latency_imgsz", "gflops", "n_params", "epochs_done", "train_s",
)  # fmt: skip


def trial_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "search.trial", *args], capture_output=True, text=True, timeout=900, cwd=cwd
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("trial")
    done = trial_cli(
        "--space", "modes", "--params", '{"stage3": "ori"}', "--budget", "cpu", *TINY, "--out", str(out),
        "--latency-backend", "onnxruntime",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, "stdout holds exactly one JSON object"
    return json.loads(lines[0]), out


def test_trial_prints_every_key_with_sane_values(trained):
    result, out = trained
    assert set(KEYS) <= set(result)
    assert result["status"] == "ok" and len(result["arch_hash"]) == 16
    assert 0 <= result["map50_95"] <= result["map50"] <= 1
    assert 0 < result["latency_ms"] <= result["latency_p90_ms"] and result["latency_iqr_ms"] >= 0
    assert result["latency_imgsz"] == 64 and result["latency_device"].startswith("cpu")
    assert result["gflops"] > 0 and result["n_params"] > 100_000
    assert result["epochs_done"] == 2 and result["train_s"] > 0
    assert json.loads((out / "trial.json").read_text()) == result
    for key in ("results_csv", "weights", "last", "model_yaml"):
        assert Path(result[key]).is_file(), key
    with open(result["results_csv"]) as fh:
        assert len(list(csv.DictReader(fh))) == 2  # one row per epoch, written by Ultralytics


def test_latency_says_how_it_was_timed_and_onnx_runtime_times_the_export(trained):
    result, out = trained
    assert result["latency_precision"] == "fp32"  # the CPU: fp32 (fp16 is the default on a GPU)
    assert result["latency_torch"] == torch.__version__ and result["latency_cuda"] == (
        torch.version.cuda or "none"
    )
    # --latency-backend onnxruntime: the deploy form exported to ONNX and timed by ONNX Runtime, beside torch
    assert (out / "onnx" / "model.onnx").is_file()
    assert result["latency_ort_provider"] == "CPUExecutionProvider"
    assert 0 < result["latency_ort_ms"] <= result["latency_ort_p90_ms"] and result["latency_ort_runs"] >= 10
    assert result["latency_ort_ms"] != result["latency_ms"]


def test_map_comes_from_a_real_ultralytics_validation_on_the_held_out_test_split(trained):
    """best.pt is chosen on val (the trainer's final validation); the reported mAP is its test-split score."""
    result, out = trained
    assert result["scored_split"] == "test"
    model = RTDETR(result["weights"])
    args = {
        "data": result["data"],
        "imgsz": 64,
        "batch": 16,
        "device": "cpu",
        "plots": False,
        "project": str(out),
    }
    test = model.val(split="test", name="check-test", **args)  # twice the training batch, like the trainer
    assert test.box.map == pytest.approx(result["map50_95_ultralytics"], abs=1e-6)
    assert test.box.map50 == pytest.approx(result["map50_ultralytics"], abs=1e-6)
    val = model.val(split="val", name="check-val", **args)
    assert val.box.map == pytest.approx(result["map50_95_val"], abs=1e-6)
    assert test.nt_per_class.sum() != val.nt_per_class.sum()  # two different image sets (their box counts)


def test_the_reported_map_is_the_coco_protocols_on_the_same_predictions(trained):
    """map50_95 is COCO's figure by default: pycocotools on the trial's own test-split predictions agrees."""
    from search.coco import evaluate, ground_truth, split_images

    result, out = trained
    assert result["map_evaluator"] == "coco" and result["map50_95"] == result["map50_95_coco"]
    predictions = json.loads((out / "test-predictions" / "predictions.json").read_text())
    gt, ids = ground_truth(split_images(result["data"], "test"), nc=3)
    dets = [{**p, "image_id": ids[p["image_id"]]} for p in predictions]
    reference = evaluate(gt, dets, backend="pycocotools")
    assert result["map50_95_coco"] == pytest.approx(reference["map50_95_coco"], abs=1e-9)
    assert result["map50_coco"] == pytest.approx(reference["map50_coco"], abs=1e-9)


def test_a_dataset_without_a_test_split_is_scored_on_val_and_says_so(tmp_path):
    from search.data import builtin_dataset

    data = builtin_dataset(tmp_path, n_train=8, n_val=8, n_test=0, imgsz=64)
    done = trial_cli(
        "--space", "modes", "--budget", "cpu", "--epochs", "1", "--imgsz", "64", "--batch", "8",
        "--data", str(data), "--out", str(tmp_path / "t"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["scored_split"] == "val" and result["map50_95_ultralytics"] == pytest.approx(
        result["map50_95_val"]
    )


def test_the_trial_trains_the_deploy_form_it_costs(trained):
    """The trained checkpoint's deploy form has exactly the parameters and GFLOPs the trial reported."""
    from search.cost import deploy_form, model_cost

    result, _ = trained
    model_yaml = yaml.safe_load(Path(result["model_yaml"]).read_text())
    assert model_yaml["nc"] == 3  # the model is built for the dataset's classes
    trained_model = RTDETR(result["weights"]).model.float()
    assert trained_model.yaml["backbone"][5][2] == "GhostModuleV3"
    cost = model_cost(deploy_form(trained_model))
    assert cost["n_params"] == result["proxy_n_params"]
    assert cost["gflops"] == pytest.approx(result["proxy_gflops"], rel=1e-9)


def test_a_proxy_trials_cost_objectives_are_the_deployable_architectures(trained):
    """The cpu budget trains a scaled-down proxy; the cost a user compares is the full-size deploy form's
    at 640, exactly as the dry run computes it."""
    from search.cost import deploy_form, model_cost

    result, _ = trained
    space = load_space("modes")
    full = RTDETRDetectionModel(materialize(space, {"stage3": "ori"})[0], verbose=False)
    assert model_cost(deploy_form(full)) == {"n_params": result["n_params"], "gflops": result["gflops"]}
    assert (
        result["n_params"] > 10 * result["proxy_n_params"] and result["gflops"] > 10 * result["proxy_gflops"]
    )


def test_every_metric_an_objective_may_name_is_reported(trained):
    """The list objectives are checked against is what a trial really reports, at the end and each epoch."""
    from search.records import TRIAL_METRICS

    result, out = trained
    assert set(TRIAL_METRICS) <= set(result)
    assert all(isinstance(result[k], (int, float)) for k in TRIAL_METRICS)


def test_reports_carry_every_objective_each_epoch_and_warm_start_counts(trained, tmp_path):
    result, _ = trained
    space = load_space("modes")
    model_yaml, _ = materialize(space, {"stage3": "gate"}, budget=space.budgets["cpu"])
    reports = []
    spec = TrialSpec(
        model_yaml=model_yaml,
        out=tmp_path,
        epochs=1,
        imgsz=64,
        batch=8,
        fraction=0.25,
        weights=result["last"],
        reference_yaml=materialize(space, {"stage3": "keep"}, budget=space.budgets["cpu"])[0],
    )
    got = run_trial(spec, report=lambda metrics, last: reports.append((metrics, last)))
    assert len(reports) == 1
    metrics, last = reports[0]
    from search.records import TRIAL_METRICS

    assert all(math.isfinite(metrics[k]) for k in TRIAL_METRICS)  # ASHA ranks on these each epoch
    assert 0 <= metrics["map50_95"] <= metrics["map50"] <= 1 and "metrics/mAP50-95(B)" in metrics
    assert metrics["epoch"] == 1 and last is not None and last.name == "last.pt"
    # ori and gate share every tensor but the gate's shortcut branch, which starts fresh
    assert got["warm_start_loaded"] > 0 and got["warm_start_new"] > 0 and got["warm_start_skipped"] == 0


def test_a_trial_whose_loss_turns_nan_fails_without_a_metric(tmp_path):
    space = load_space("modes")
    model_yaml = with_classes(materialize(space, {"stage3": "keep"}, budget=space.budgets["cpu"])[0], 3)
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(model_yaml))
    poisoned = RTDETR(str(tmp_path / "m.yaml"))
    with torch.no_grad():
        poisoned.model.model[0].stem1.conv.weight.fill_(float("nan"))  # a corrupted checkpoint
    poisoned.save(str(tmp_path / "nan.pt"))
    spec = TrialSpec(
        model_yaml=model_yaml, out=tmp_path / "t", epochs=2, imgsz=64, batch=8, fraction=0.25,
        weights=str(tmp_path / "nan.pt"),
    )  # fmt: skip
    with pytest.raises(TrialFailed, match="diverged"):
        run_trial(spec)
    assert not (tmp_path / "t" / "trial.json").exists()


def test_a_trial_that_raises_fails_clearly_on_the_command_line(tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    d = load_space("modes").base_yaml
    d = {
        **d,
        "backbone": [*d["backbone"][:5], [-1, 1, "GhostModuleV3", [512, 4]], *d["backbone"][6:]],
    }  # even k
    bad_yaml.write_text(yaml.safe_dump(d))
    done = trial_cli("--model-yaml", str(bad_yaml), *TINY, "--out", str(tmp_path / "o"))
    assert done.returncode == 1
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == "failed" and "`k` must be a positive odd int, got 4" in result["error"]
    assert "map50_95" not in result


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ("missing.yaml", "does not exist"),
        ("notyaml.yaml", "YAML"),
        ("noval.yaml", "'val'"),
    ],
)
def test_a_missing_or_malformed_dataset_exits_2_before_training(tmp_path, data, needle):
    (tmp_path / "notyaml.yaml").write_text("train: [unclosed\n")
    (tmp_path / "noval.yaml").write_text(
        yaml.safe_dump({"path": str(tmp_path), "train": "images", "names": ["a"]})
    )
    done = trial_cli("--space", "modes", "--data", str(tmp_path / data), *TINY, "--out", str(tmp_path / "o"))
    assert done.returncode == 2
    assert needle in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--space", "modes", "--params", "{not json"], "--params is not valid JSON"),
        (["--space", "modes", "--params", '{"stage3": "nope"}'], "unknown choice 'nope'"),
        (["--space", "modes", "--epochs", "0"], "--epochs must be >= 1"),
        (["--model-yaml", "NONE"], "no such file"),
        (["--space", "modes", "--device", "cpu", "--latency-precision", "fp16"], "fp16 needs a CUDA device"),
        (["--space", "modes", "--latency-backend", "tensorrt"], "invalid choice: 'tensorrt'"),
    ],
)
def test_bad_flags_exit_2(tmp_path, args, needle):
    done = trial_cli(*[str(tmp_path / "none.yaml") if a == "NONE" else a for a in args])
    assert done.returncode == 2 and needle in done.stderr, done.stderr[-2000:]
    assert len(done.stderr.strip().splitlines()) == 1


def _epoch_checkpoints(tmp_path: Path) -> tuple[dict, dict[int, Path]]:
    """A 2-epoch trial that keeps a copy of last.pt after each epoch, as the sweep's checkpoints do."""
    import shutil

    space = load_space("modes")
    model_yaml, _ = materialize(space, {"stage3": "keep"}, budget=space.budgets["cpu"])
    kept: dict[int, Path] = {}

    def keep(metrics, last):
        kept[int(metrics["epoch"])] = Path(shutil.copy2(last, tmp_path / f"last{int(metrics['epoch'])}.pt"))

    spec = TrialSpec(
        model_yaml=model_yaml, out=tmp_path / "t", epochs=2, imgsz=64, batch=8, fraction=0.25,
        train_args={"nbs": 8},  # an optimizer step per batch: each epoch's weights differ
    )  # fmt: skip
    return {"spec": spec, "result": run_trial(spec, report=keep)}, kept


def test_a_trial_resumed_after_its_last_epoch_is_scored_on_its_best_checkpoint(tmp_path):
    """Interrupted after the last epoch, before the final validation: the best.pt kept beside last.pt is
    scored (as an uninterrupted trial would), and the recorded weights are the file that was scored."""
    import hashlib
    import shutil

    first, kept = _epoch_checkpoints(tmp_path)
    resume = tmp_path / "resume"
    resume.mkdir()
    shutil.copy2(kept[2], resume / "last.pt")
    shutil.copy2(kept[1], resume / "best.pt")  # say epoch 1 was the best: a file that differs from last.pt
    spec = first["spec"]
    spec.out = tmp_path / "again"
    got = run_trial(spec, resume_from=resume / "last.pt")
    assert got["epochs_done"] == 2 and got["resumed_from_epoch"] == 2
    weights = Path(got["weights"])
    assert weights.is_file() and weights.name == "best.pt" and weights != resume / "last.pt"
    expected = RTDETR(str(weights)).val(
        data=got["data"], imgsz=64, batch=16, device="cpu", plots=False, project=str(tmp_path), name="check",
        split="test",
    )  # fmt: skip
    assert (
        got["map50_95_ultralytics"] == pytest.approx(expected.box.map, abs=1e-9)
        and got["scored_split"] == "test"
    )
    # the scored file holds epoch 1's weights, not the last epoch's
    digest = lambda m: hashlib.sha256(b"".join(t.float().numpy().tobytes() for t in m.state_dict().values()))  # noqa: E731
    scored = RTDETR(str(weights)).model
    assert digest(scored).hexdigest() == digest(RTDETR(str(kept[1])).model).hexdigest()
    assert digest(scored).hexdigest() != digest(RTDETR(str(kept[2])).model).hexdigest()


def test_a_checkpoint_holding_foreign_objects_is_refused_before_ultralytics_opens_it(tmp_path):
    """Sweep storage may be shared: a checkpoint with anything but tensors and the model's own classes
    is never unpickled."""
    import os

    from search.training import safe_checkpoint

    space = load_space("modes")
    model_yaml = with_classes(materialize(space, {"stage3": "ori"}, budget=space.budgets["cpu"])[0], 3)
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(model_yaml))
    model = RTDETR(str(tmp_path / "m.yaml"))
    model.save(str(tmp_path / "plain.pt"))
    assert safe_checkpoint(tmp_path / "plain.pt")["model"] is not None
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    torch.save({"epoch": 1, "model": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(TrialFailed, match="refusing to load"):
        safe_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()
    resume = tmp_path / "r"
    resume.mkdir()
    (resume / "last.pt").write_bytes((tmp_path / "evil.pt").read_bytes())
    spec = TrialSpec(model_yaml=model_yaml, out=tmp_path / "t", epochs=1, imgsz=64, batch=8, fraction=0.25)
    with pytest.raises(TrialFailed, match="refusing to load"):
        run_trial(spec, resume_from=resume / "last.pt")
    assert not marker.exists()


def test_amp_is_decided_offline_and_said(tmp_path):
    """On a GPU, Ultralytics' AMP check loads a small model it would download: offline, AMP is on only when
    that model is already there, and the reason is part of the trial's result either way."""
    from search.training import AMP_CHECK_WEIGHTS, amp_decision

    assert amp_decision("cpu", tmp_path) == (False, "AMP off: cpu training")
    on, why = amp_decision("0", tmp_path)
    assert not on and str(tmp_path / AMP_CHECK_WEIGHTS) in why and "never downloaded" in why
    (tmp_path / AMP_CHECK_WEIGHTS).write_bytes(b"")
    on, why = amp_decision("0", tmp_path)
    assert on and why.startswith("AMP on")


def test_data_loader_workers_follow_the_trials_cpus():
    from search.config import default_cpus_per_trial, loader_workers

    assert loader_workers(1) == 0 and loader_workers(1.5) == 0 and loader_workers(8) == 7
    assert loader_workers(8, budget_workers=2) == 2  # a budget that says so wins
    assert default_cpus_per_trial(16, 0, 0) == 1  # no GPU: the CPU proxy loads in-process
    assert default_cpus_per_trial(16, 1, 1) == 16 and default_cpus_per_trial(16, 2, 1) == 8
    assert default_cpus_per_trial(16, 1, 0.5) == 8 and default_cpus_per_trial(4, 8, 1) == 1


def test_trials_at_once_fill_the_gpu_slots_or_the_cpus():
    from search.config import default_concurrency

    assert (
        default_concurrency(2, 0, 0, cpus_per_trial=1) == 2
    )  # 2 cores, no GPU: two one-CPU trials at once, not one
    assert (
        default_concurrency(16, 0, 0, cpus_per_trial=4) == 4
        and default_concurrency(1, 0, 0, cpus_per_trial=1) == 1
    )
    assert (
        default_concurrency(16, 2, 1, cpus_per_trial=8) == 2
        and default_concurrency(16, 1, 0.5, cpus_per_trial=8) == 2
    )  # GPU slots


@pytest.mark.parametrize("threads", [1, 2])
def test_a_trial_trains_and_validates_on_exactly_the_threads_it_was_given(threads, tmp_path):
    """Not Ultralytics' min(8, CPUs - 1): one thread on 2 cores, eight on a node where Ray gave one CPU."""
    space = load_space("modes")
    model_yaml = with_classes(materialize(space, {"stage3": "keep"}, budget=space.budgets["cpu"])[0], 3)
    seen: list[int] = []
    spec = TrialSpec(
        model_yaml=model_yaml, out=tmp_path, epochs=1, imgsz=64, batch=8, fraction=0.25, threads=threads
    )
    result = run_trial(spec, report=lambda metrics, last: seen.append(torch.get_num_threads()))
    assert seen == [threads]  # in the trainer, after Ultralytics chose the device
    assert torch.get_num_threads() == threads  # ... and after its validations chose it again
    assert result["threads"] == threads and result["latency_device"].endswith(f":{threads}threads")


def test_a_trial_from_the_command_line_trains_on_every_cpu_it_may_use(trained):
    import os

    result, _ = trained
    assert result["threads"] == len(os.sched_getaffinity(0))
