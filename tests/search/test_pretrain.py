"""The fair warm start (``pretrain`` in a budget): the base trained once, every site's layers fresh everywhere."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import INSERT_SPACE, TINY, layer_tensors, sweep_runs

# the warm-start tests' space with a fair warm start, and a second site further on
SPACE = (
    INSERT_SPACE.replace("denoising: 20}", "denoising: 20, pretrain: 2}")
    + """  pan_p5:
    layer: 27
    choices:
      keep: keep
      ori: {op: replace, block: GhostModuleV3, mode: ori}
"""
)
assert "pretrain: 2" in SPACE


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and bool(a) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def fair(tmp_path_factory) -> tuple[Path, Path, dict]:
    """The space, a cache folder, and the base trained twice from its warm start (seeds 0 and 1) by the CLI."""
    tmp = tmp_path_factory.mktemp("fair")
    space = tmp / "fair.yaml"
    space.write_text(SPACE)
    cache = tmp / "cache"
    env = {**__import__("os").environ, "RTDETR_SEARCH_CACHE": str(cache)}
    results = {}
    for seed in (0, 1):
        done = subprocess.run(
            [sys.executable, "-m", "search.trial", "--space", str(space), "--budget", "cpu", *TINY, "--seed", str(seed),
             "--out", str(tmp / f"seed{seed}")],
            capture_output=True, text=True, timeout=900, env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        results[seed] = json.loads(done.stdout)
        results[f"log{seed}"] = done.stderr
    return space, cache, results


def test_budget_pretrain_is_checked_and_names_the_site_layers(tmp_path):
    from search.pretrain import fresh_layers, pretrain_key
    from search.space import SpaceError, load_space

    good = tmp_path / "fair.yaml"
    good.write_text(SPACE)
    space = load_space(str(good))
    cpu = space.budgets["cpu"]
    assert cpu.pretrain == 2 and fresh_layers(space, cpu) == (3, 27)
    assert fresh_layers(space, space.budgets["full"]) == ()  # no pretrain: only what an architecture changes
    # the trial's own length does not change the checkpoint; how it trains does
    assert pretrain_key(space, dataclasses.replace(cpu, epochs=7), None) == pretrain_key(space, cpu, None)
    assert pretrain_key(space, dataclasses.replace(cpu, imgsz=96), None) != pretrain_key(space, cpu, None)
    assert pretrain_key(space, dataclasses.replace(cpu, pretrain=3), None) != pretrain_key(space, cpu, None)
    for bad, message in (("-1", "must be positive"), ("x", "expected an int"), ("1.5", "expected an int")):
        path = tmp_path / "bad.yaml"
        path.write_text(SPACE.replace("pretrain: 2", f"pretrain: {bad}"))
        with pytest.raises(SpaceError, match=rf"budgets.cpu.pretrain: {message}"):
            load_space(str(path))
    path.write_text(
        SPACE.replace("      keep: keep\n      ori:", "      ori:")
    )  # pan_p5 cannot keep its layer
    with pytest.raises(
        SpaceError, match=r"budgets.cpu.pretrain: pretrains the base, but sites pan_p5 have no keep"
    ):
        load_space(str(path))
    path.write_text(SPACE.replace("pretrain: 2", "pretrain: 0"))
    assert not load_space(str(path)).budgets["cpu"].pretrain  # 0: trials train from scratch


def test_the_base_is_pretrained_once_and_every_site_starts_fresh_from_its_seed(fair):
    from ultralytics.nn.tasks import load_checkpoint

    from search.pretrain import PRETRAIN_SEED

    _, cache, results = fair
    (checkpoint,) = cache.glob("pretrain/*/last.pt")
    meta = json.loads((checkpoint.parent / "pretrain.json").read_text())
    assert meta["seed"] == PRETRAIN_SEED and meta["epochs_done"] == 2  # the budget's pretrain, not its epochs
    # what it was trained on: every CPU this process may use, on a machine it names; which file it is
    assert meta["threads"] == meta["machine"]["torch_threads"] == len(__import__("os").sched_getaffinity(0))
    assert meta["machine"]["cpu_count"] and meta["machine"]["torch"] and meta["machine"]["ultralytics"]
    assert meta["sha256"] == __import__("hashlib").sha256(checkpoint.read_bytes()).hexdigest()
    assert "pretraining the base" in results["log0"] and "pretraining the base" not in results["log1"]  # once
    # one calm line per epoch while it pretrains, as a sweep shows its trials: no bars, no model summary
    pretraining = results["log0"][
        results["log0"].index("pretraining the base") : results["log0"].index("pretrained the base")
    ]
    assert "pretraining the base: epoch 2/2, mAP50-95 on val" in pretraining
    assert "GPU_mem" not in pretraining and "parameters" not in pretraining
    for seed in (0, 1):
        r = results[seed]
        assert r["status"] == "ok"
        # the base itself leaves both site layers fresh: it has no trained weights where a variant has none
        assert (
            r["warm_start_fresh_layers"] == [3, 27]
            and r["warm_start_new"] > 0
            and r["warm_start_skipped"] > 0
        )
    theirs = load_checkpoint(str(checkpoint))[0].float().state_dict()
    started = {
        seed: torch.load(Path(results[seed]["model_yaml"]).with_name("warm_start.pt"), weights_only=False)[
            "model"
        ]
        .float()
        .state_dict()
        for seed in (0, 1)
    }
    for layer in (0, 11, 28):  # between and after the sites: the pretrained weights, the same for every seed
        assert _same(layer_tensors(theirs, layer), layer_tensors(started[0], layer))
        assert _same(layer_tensors(started[0], layer), layer_tensors(started[1], layer))
    for layer in (3, 27):  # the sites: each seed's own draw, not the checkpoint's
        assert not _same(layer_tensors(theirs, layer), layer_tensors(started[0], layer))
        assert not _same(layer_tensors(started[0], layer), layer_tensors(started[1], layer))


def test_a_checkpoint_kept_in_a_sweeps_storage_is_used_as_it_is(tmp_path, monkeypatch):
    """A resumed sweep starts from the copy in its storage, even when the cache no longer holds it."""
    from search.pretrain import pretrain_key, with_pretrain
    from search.space import load_space

    path = tmp_path / "fair.yaml"
    path.write_text(SPACE)
    space = load_space(str(path))
    monkeypatch.setenv("RTDETR_SEARCH_CACHE", str(tmp_path / "empty-cache"))
    kept = tmp_path / "storage" / f"{pretrain_key(space, space.budgets['cpu'], None)}.pt"
    kept.parent.mkdir()
    kept.write_bytes(b"the checkpoint of the first run")
    assert with_pretrain(space, space.budgets["cpu"], None, keep_in=kept.parent).weights == str(kept)
    assert not (tmp_path / "empty-cache" / "pretrain").exists()  # nothing was trained
    given = dataclasses.replace(space.budgets["cpu"], weights="/elsewhere/base.pt")
    assert with_pretrain(space, given, None, keep_in=kept.parent) is given  # the user's checkpoint wins


def test_a_seeds_fresh_layers_are_reproducible(fair):
    """Seed 0's fresh layers are torch's draw for seed 0, whatever else ran before in the process."""
    from ultralytics import RTDETR

    _, _, results = fair
    yaml_path = Path(results[0]["model_yaml"])
    started = (
        torch.load(yaml_path.with_name("warm_start.pt"), weights_only=False)["model"].float().state_dict()
    )
    torch.rand(7)  # whatever came before
    torch.manual_seed(0)
    again = RTDETR(str(yaml_path)).model.float().state_dict()
    assert _same(layer_tensors(started, 3), layer_tensors(again, 3))


def test_a_sweep_copies_the_cached_pretrained_base_into_its_storage_and_trains_from_it(fair, tmp_path):
    space_file, cache, _ = fair
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**__import__("os").environ, "RTDETR_SEARCH_CACHE": str(cache)}
    done = subprocess.run(
        [sys.executable, "-m", "search.run", "--space", str(space_file), "--sampler", "ablation",
         "--storage-path", str(tmp_path / "ray"), "--tracking-uri", uri, *TINY],
        capture_output=True, text=True, timeout=1500, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert "warm-started from the base pretrained 2 epochs" in done.stdout
    (kept,) = (tmp_path / "ray" / "pretrain").glob("*.pt")
    (cached,) = cache.glob("pretrain/*/last.pt")
    assert kept.read_bytes() == cached.read_bytes()  # the cache's checkpoint, not a second pretraining
    parent, archs, trials, _ = sweep_runs(uri)
    assert parent.data.params["budget.weights"] == str(kept) and parent.data.params["budget.pretrain"] == "2"
    assert len(archs) == 3
    for t in trials:
        assert t.data.tags["warm_start.from"] == str(kept)
        fresh = t.data.tags["warm_start.fresh_layers"].split(",")
        if t.data.params["stage2"] == "after":  # the inserted block sits at 4 and moves layer 27 to 28
            assert fresh == ["3", "4", "28"]
        else:
            assert fresh == ["3", "27"]
    # from scratch, as before: no warm start at all
    cold = subprocess.run(
        [sys.executable, "-m", "search.run", "--space", str(space_file), "--samples", "1", "--pretrain", "0",
         "--storage-path", str(tmp_path / "ray"), "--tracking-uri", uri, "--name", "cold", *TINY],
        capture_output=True, text=True, timeout=1500, env=env,
    )  # fmt: skip
    assert cold.returncode == 0, cold.stdout[-3000:] + cold.stderr[-5000:]
    _, _, cold_trials, _ = sweep_runs(uri, "cold")
    assert cold_trials and all("warm_start.from" not in t.data.tags for t in cold_trials)
    bad = subprocess.run(
        [sys.executable, "-m", "search.run", "--space", str(space_file), "--pretrain", "-1",
         "--storage-path", str(tmp_path / "ray"), "--tracking-uri", uri],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert bad.returncode == 2 and "--pretrain must be >= 0" in bad.stderr


def test_a_shipped_checkpoint_is_the_warm_start_of_a_fresh_cache_and_only_for_its_recipe(
    fair, tmp_path, monkeypatch
):
    """A fresh clone on another machine (an empty cache) starts from the shipped weights, untrained."""
    import hashlib

    from search import pretrain
    from search.space import load_space

    space_file, cache, _ = fair
    space = load_space(str(space_file))
    cpu = space.budgets["cpu"]
    monkeypatch.setattr(pretrain, "SHIPPED", tmp_path / "shipped")
    monkeypatch.setenv("RTDETR_SEARCH_CACHE", str(cache))
    said: list[str] = []
    shipped = pretrain.ship(space, cpu, said.append)  # the cached checkpoint: nothing trained
    assert not any("pretraining the base" in line for line in said), said
    meta = json.loads(shipped.with_suffix(".json").read_text())
    assert meta["sha256"] == hashlib.sha256(shipped.read_bytes()).hexdigest()
    assert meta["machine"]["cpu_count"] and meta["recipe"]["seed"] == pretrain.PRETRAIN_SEED
    assert meta["recipe"]["budget"]["pretrain"] == 2 and "commit" in meta

    monkeypatch.setenv("RTDETR_SEARCH_CACHE", str(tmp_path / "fresh"))  # the data lands elsewhere too
    said.clear()
    got = pretrain.pretrained_base(space, cpu, None, say=said.append)
    assert got.read_bytes() == shipped.read_bytes()
    assert said and "the shipped checkpoint" in said[0] and "not trained again" in said[0], said
    assert not any("pretraining the base" in line for line in said)
    assert json.loads((got.parent / "pretrain.json").read_text())["shipped"] == str(shipped)
    with pytest.raises(ValueError, match="itself a shipped checkpoint"):
        pretrain.ship(space, cpu, said.append)  # a copy is not shipped again as if trained here

    # another recipe is never served it: another seed, other data, another training setting
    assert pretrain.shipped_checkpoint(space, cpu, None, seed=pretrain.PRETRAIN_SEED + 1) is None
    assert pretrain.shipped_key(space, cpu, str(space_file)) is None
    assert pretrain.shipped_checkpoint(space, dataclasses.replace(cpu, batch=cpu.batch * 2), None) is None
    # the trial's own length does not change the checkpoint it starts from
    assert pretrain.shipped_checkpoint(space, dataclasses.replace(cpu, epochs=9), None) == shipped


def test_every_shipped_space_finds_its_warm_start_shipped(monkeypatch):
    """The shipped spaces' budgets with a pretrain start from a checkpoint in spaces/warm_starts/ on the
    built-in data at its default size: one that loads safely, fills the base and is the file its json names.
    Changing such a budget, the base or the built-in data without shipping a new checkpoint fails here."""
    import hashlib

    from ultralytics.nn.tasks import RTDETRDetectionModel

    from search import pretrain
    from search.checkpoint import check_weights
    from search.data import CLASS_NAMES
    from search.recipe import base_model_yaml
    from search.space import list_spaces, load_space

    monkeypatch.delenv("RTDETR_SEARCH_SHAPES")  # the default built-in data a user's sweep trains on
    found = set()
    for name in list_spaces():
        space = load_space(name)
        for budget in space.budgets.values():
            if not budget.pretrain:
                continue
            path = pretrain.shipped_checkpoint(space, budget, None)
            assert path is not None, f"{name}: budget {budget.name} has no shipped warm start"
            meta = json.loads(path.with_suffix(".json").read_text())
            assert meta["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
            assert meta["recipe"]["seed"] == pretrain.PRETRAIN_SEED
            if path not in found:
                found.add(path)
                yaml = base_model_yaml(space, budget)
                base = RTDETRDetectionModel(yaml, nc=len(CLASS_NAMES), verbose=False)  # the built-in data's
                line = check_weights(path, base)
                total = len(base.state_dict())
                assert f": {total} of the base's {total} tensors match" in line, line
    assert found
    assert {p.name for p in pretrain.SHIPPED.glob("*.pt")} == {p.name for p in found}  # none left over
