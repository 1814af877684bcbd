"""Multi-objective early stopping (search.moasha): what a rung promotes, beside Ray's single-metric ASHA."""

from __future__ import annotations

from types import SimpleNamespace

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from search.frontier import Objective
from search.moasha import MOASHA, fronts, promoted, rung_noise, rungs

MAP_UP_GFLOPS_DOWN = [Objective("map50_95", "maximize"), Objective("gflops", "minimize")]


def test_rungs_are_asha_s_milestones_below_the_last_epoch():
    assert rungs(max_t=12, grace_period=1, reduction_factor=3) == [1, 3, 9]
    assert rungs(max_t=5, grace_period=1, reduction_factor=3) == [1, 3]
    assert rungs(max_t=3, grace_period=1, reduction_factor=3) == [1]  # the last epoch is never a rung
    assert rungs(max_t=1, grace_period=1, reduction_factor=3) == []


def test_a_rung_promotes_whole_fronts_and_ties_within_noise_are_not_separated():
    points = {
        "accurate": {"map50_95": 0.60, "gflops": 120.0},
        "cheap": {"map50_95": 0.55, "gflops": 80.0},  # less accurate, cheaper: on the first front
        "dominated": {"map50_95": 0.50, "gflops": 130.0},
        "worse": {"map50_95": 0.40, "gflops": 140.0},
    }
    assert fronts(points, MAP_UP_GFLOPS_DOWN, noise={}) == [["accurate", "cheap"], ["dominated"], ["worse"]]
    # a quota of 1 of 4 (reduction 3) is reached by the first front, which goes on whole
    assert promoted(points, MAP_UP_GFLOPS_DOWN, reduction_factor=3, noise={}) == {"accurate", "cheap"}
    # under a noise floor of 0.05 (df 10: a margin of 0.16 between two single seeds) every mAP ties, and
    # the cheapest beats them all; with a floor of 0.01 (margin 0.03) the ranking above stands
    noise = {"map50_95": (0.05, 10)}
    assert fronts(points, MAP_UP_GFLOPS_DOWN, noise=noise) == [
        ["cheap"],
        ["accurate"],
        ["dominated"],
        ["worse"],
    ]
    assert fronts(points, MAP_UP_GFLOPS_DOWN, noise={"map50_95": (0.01, 10)})[0] == ["accurate", "cheap"]
    # mAP alone under that floor: 0.60, 0.55 and 0.50 tie; 0.40 is beyond it
    only_map = [Objective("map50_95", "maximize")]
    assert fronts(points, only_map, noise=noise) == [["accurate", "cheap", "dominated"], ["worse"]]
    # fewer points than the reduction factor: nobody is judged yet
    few = {k: points[k] for k in ("accurate", "worse")}
    assert promoted(few, MAP_UP_GFLOPS_DOWN, reduction_factor=3, noise={}) == {"accurate", "worse"}


def test_the_noise_at_a_rung_is_the_spread_of_the_base_s_seeds_there():
    noise = rung_noise(
        [{"map50_95": 0.5, "gflops": 100.0}, {"map50_95": 0.6, "gflops": 100.0}], ["map50_95", "gflops"]
    )
    assert noise["map50_95"][1] == 1 and abs(noise["map50_95"][0] - 0.0707107) < 1e-6
    assert noise["gflops"] == (0.0, 1)  # exact: no margin
    assert rung_noise([{"map50_95": 0.5}], ["map50_95"]) == {}  # one seed: no floor yet


def _report(scheduler, trial_id: str, config: dict, epoch: int, **metrics) -> str:
    trial = SimpleNamespace(trial_id=trial_id, config=config)
    return scheduler.on_trial_result(None, trial, {"epoch": epoch, "training_iteration": epoch, **metrics})


def test_a_cheap_slightly_less_accurate_architecture_survives_the_rung_single_metric_asha_stops_it_at():
    """The same reports at the first rung, in the same order: Ray's ASHA on mAP stops the cheap trial;
    MO-ASHA keeps it (nothing beats it on both mAP and GFLOPs) and stops the one that is worse on both."""
    reports = [
        ("base0", {"stage": "keep"}, {"map50_95": 0.600, "gflops": 100.0}),
        ("base1", {"stage": "keep"}, {"map50_95": 0.604, "gflops": 100.0}),
        ("heavy", {"stage": "heavy"}, {"map50_95": 0.590, "gflops": 140.0}),
        ("cheap", {"stage": "cheap"}, {"map50_95": 0.560, "gflops": 60.0}),
    ]
    asha = ASHAScheduler(
        time_attr="epoch", metric="map50_95", mode="max", max_t=9, grace_period=1, reduction_factor=3
    )
    asha_says = {}
    for trial_id, config, metrics in reports:
        trial = SimpleNamespace(trial_id=trial_id, config=config)
        asha.on_trial_add(None, trial)
        asha_says[trial_id] = _report(asha, trial_id, config, 1, **metrics)
    assert asha_says["cheap"] == TrialScheduler.STOP  # the lowest mAP at the rung

    mo = MOASHA(MAP_UP_GFLOPS_DOWN, is_base=lambda c: c.get("stage") == "keep", max_t=9, grace_period=1)
    mo_says = {trial_id: _report(mo, trial_id, config, 1, **metrics) for trial_id, config, metrics in reports}
    assert mo_says["cheap"] == TrialScheduler.CONTINUE
    assert mo_says["heavy"] == TrialScheduler.STOP  # within the base's noise on mAP, and costlier
    assert mo.stopped == {"heavy": 1}
    # a survivor is judged again at the next rung, and never at or after the last epoch
    assert _report(mo, "cheap", {"stage": "cheap"}, 2, map50_95=0.57, gflops=60.0) == TrialScheduler.CONTINUE
    assert _report(mo, "cheap", {"stage": "cheap"}, 9, map50_95=0.7, gflops=60.0) == TrialScheduler.CONTINUE
