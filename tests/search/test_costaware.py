"""The cost-aware sampler's parts: the expected hypervolume gain, the lazily counted additive costs, and the sampler
inside the sweep's searcher."""

from __future__ import annotations

import numpy as np
import pytest

from search.config import SweepConfig
from search.costaware import BayesAdditive, SiteCosts, expected_gain
from search.searcher import make_searcher
from search.space import load_space


def test_the_expected_gain_is_the_box_a_candidate_adds_to_the_front():
    box = np.random.default_rng(0).random((20000, 2))  # the unit square, minimize-space
    front = np.array([[0.5, 0.5]])
    candidates = np.array([
        [[0.25, 0.25]],  # dominates the front: adds [0.25, 1]^2 less [0.5, 1]^2 = 0.5625 - 0.25
        [[0.75, 0.75]],  # dominated by the front: adds nothing
        [[0.25, 0.75]],  # beside it: adds [0.25, 0.5] x [0.75, 1]
        [[0.0, 0.0], ],
    ])  # fmt: skip
    gain = expected_gain(candidates, front, box)
    assert gain == pytest.approx([0.3125, 0.0, 0.0625, 0.75], abs=0.01)
    # draws: the mean over them
    two = expected_gain(np.array([[[0.25, 0.25], [0.75, 0.75]]]), front, box)
    assert two == pytest.approx([0.3125 / 2], abs=0.01)


def test_site_costs_count_the_base_and_each_single_change_once_and_only_when_asked():
    space = load_space("placements")
    asked = []

    def exact(point):
        asked.append(dict(point))
        changed = [k for k, v in point.items() if v != "keep"]
        return {"gflops": 100.0 - 3 * len(changed) - ("stage1" in changed), "n_params": 1e6 + len(changed)}

    costs = SiteCosts(space, exact)
    assert asked == []  # a sweep that never asks spends nothing
    point = {**space.base_point, "stage1": "ori", "pan_p5": "after_gate"}
    assert costs(point) == {"gflops": 100.0 - 6 - 1, "n_params": 1e6 + 2}
    assert len(asked) == 1 + sum(len(s.choices) - 1 for s in space.sites)
    costs(space.base_point)
    assert len(asked) == 1 + sum(len(s.choices) - 1 for s in space.sites)


def test_the_bayesian_additive_model_is_sure_where_it_has_seen_and_unsure_elsewhere():
    choices = {"a": ["keep", "x"], "b": ["keep", "y"]}
    model = BayesAdditive(choices, {"a": "keep", "b": "keep"})
    rng = np.random.default_rng(0)
    points = [{"a": "keep", "b": "keep"}] * 4 + [{"a": "x", "b": "keep"}] * 4
    values = [0.8 + rng.normal(0, 0.01) for _ in range(4)] + [0.7 + rng.normal(0, 0.01) for _ in range(4)]
    draws = model.fit(points, values).draws([{"a": "x", "b": "keep"}, {"a": "keep", "b": "y"}], 2000, rng)
    assert draws[:, 0].mean() == pytest.approx(0.7, abs=0.02) and draws[:, 0].std() < 0.02
    assert draws[:, 1].std() > 2 * draws[:, 0].std()  # b=y never seen: its prior's spread


def test_the_cost_aware_sampler_asks_its_known_costs_once_it_models():
    space = load_space("placements")
    seen = []

    def known(point):
        seen.append(point)
        return {"gflops": 100.0 - sum(v != "keep" for v in point.values()), "n_params": 1.0}

    searcher = make_searcher(
        SweepConfig(space=space, budget="cpu", samples=12, sampler="cost"), lambda t: None, known
    )
    rng = np.random.default_rng(0)
    points = []
    for i in range(14):
        config = searcher.suggest(f"t{i}")
        point = {s.name: config[s.name] for s in space.sites}
        points.append(point)
        values = {"map50_95": 0.8 + rng.normal(0, 0.02), "latency_ms": 50.0, "gflops": known(point)["gflops"]}
        searcher.on_trial_complete(f"t{i}", result={**values, "final": 1})
    assert all(v == "keep" for v in points[0].values()) and points[0] == points[1]  # the base's two seeds
    assert len(seen) > 14 + 100  # once modelling, it costs its many candidates before it picks one
    assert len({tuple(p.items()) for p in points[1:]}) == 13  # a trained architecture is never proposed again


def test_a_sweep_with_the_cost_aware_sampler_saves_and_restores_its_searcher(tmp_path):
    """Ray saves the searcher while a sweep runs and restores it on --resume: everything the cost-aware
    sampler holds, its exact-cost model included, must pickle."""
    from search.sweep import known_costs

    space = load_space("placements")
    config = SweepConfig(space=space, budget="cpu", samples=4, sampler="cost")
    limiter = make_searcher(config, str, known_costs(config))
    first = limiter.suggest("t0")
    limiter.searcher.save(str(tmp_path / "searcher.pkl"))
    again = make_searcher(config, str, known_costs(config))
    again.searcher.restore(str(tmp_path / "searcher.pkl"))
    assert again.searcher.searcher._ot_study.trials[0].params == {s.name: first[s.name] for s in space.sites}


def test_site_costs_of_real_exact_counts_are_the_exact_counts_of_independent_changes(tmp_path):
    """The cost-aware sampler's costs in a sweep: the deploy form's exact parameters and GFLOPs of the base and
    each single change, summed; exact for changes at distant sites (RT-DETR's layers add their own)."""
    from search.recipe import deploy_cost
    from tests.helpers import tiny_space

    sites = "".join(
        f"  {name}:\n    layer: {layer}\n    choices:\n      keep: keep\n"
        "      ori: {op: replace, block: GhostModuleV3, mode: ori}\n"
        for name, layer in (("down_p3", 2), ("pan_down_p4", 22))
    )
    (tmp_path / "two.yaml").write_text(tiny_space("two", sites))
    space = load_space(str(tmp_path / "two.yaml"))
    both = {"down_p3": "ori", "pan_down_p4": "ori"}
    exact = deploy_cost(space, both)
    assert SiteCosts(space, lambda p: deploy_cost(space, p))(both) == pytest.approx(exact, rel=1e-9)
    assert exact["gflops"] < deploy_cost(space, space.base_point)["gflops"]


def test_the_sweep_counts_exact_costs_only_for_a_cost_aware_search_with_exact_objectives_and_a_base(tmp_path):
    from search.sweep import known_costs
    from tests.helpers import tiny_space

    placements = load_space("placements")
    assert isinstance(known_costs(SweepConfig(space=placements, budget="cpu", sampler="cost")), SiteCosts)
    assert known_costs(SweepConfig(space=placements, budget="cpu", sampler="tpe")) is None
    no_cost = tiny_space("nocost", "  s:\n    layer: 2\n    choices:\n      keep: keep\n"
                         "      ori: {op: replace, block: GhostModuleV3, mode: ori}\n")  # fmt: skip
    (tmp_path / "nocost.yaml").write_text(no_cost.replace("  - {metric: gflops, direction: minimize}\n", ""))
    space = load_space(str(tmp_path / "nocost.yaml"))
    assert [o.metric for o in space.objectives] == ["map50_95"]
    assert known_costs(SweepConfig(space=space, budget="cpu", sampler="cost")) is None
