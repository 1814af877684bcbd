"""The replay of search strategies on a sweep's surrogate: the surrogate recovers a known additive truth, a replay
is deterministic for its seed, a sweep too small to replay is refused, the best hypervolume is the brute-force
one, and the cost-aware sampler beats random where costs decide."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from search.plan import ablation_points
from search.replay import main, replay, replay_all, summarize_replays
from search.space import load_space
from search.surrogate import SweepTooSmall, best_hypervolume, fit_surrogate
from tests.helpers import tiny_space

NOISE = 0.02  # the synthetic sweeps' seed std of mAP50-95 and of the latency ratio


def _random_point(space, rng):
    return {s.name: s.choices[int(rng.integers(len(s.choices)))].name for s in space.sites}


def _truth(space, seed: int = 0, interaction: float = 0.0):
    """A known additive truth over ``space``: per-choice effects on mAP, the latency ratio and GFLOPs."""
    rng = np.random.default_rng(seed)
    columns = [(s.name, c.name) for s in space.sites for c in s.choices if c.op != "keep"]
    effects = {c: (rng.normal(-0.01, 0.02), rng.normal(-0.03, 0.05), rng.normal(-4, 3)) for c in columns}
    first = space.sites[0].name, space.sites[1].name

    def truth(point):
        changed = [(k, v) for k, v in point.items() if v != "keep"]
        mean = [sum(effects[c][i] for c in changed) for i in range(3)]
        both = point[first[0]] != "keep" and point[first[1]] != "keep"  # a departure from additivity
        return {
            "map50_95": 0.8 + mean[0] - (interaction if both else 0.0),
            "latency_ratio": 1.0 + mean[1],
            "gflops": 105.0 + mean[2],
            "n_params": 32e6 - 1e5 * len(changed),
        }

    return truth, effects


def _sweep(space, truth, *, base_seeds=5, singles=True, randoms=24, seed=1):
    """Seed rows as a sweep of ``truth`` would record them: the base's seeds, every single change, random
    architectures; mAP and latency with seed noise, costs exact."""
    rng = np.random.default_rng(seed)
    rows = []

    def add(point, s):
        t = truth(point)
        ratio = t["latency_ratio"] + rng.normal(0, NOISE)
        rows.append({
            "params": point, "arch_hash": json.dumps(sorted(point.items())), "seed": s,
            "map50_95": t["map50_95"] + rng.normal(0, NOISE), "latency_ratio": ratio, "latency_ms": 50.0 * ratio,
            "gflops": t["gflops"], "n_params": t["n_params"],
        })  # fmt: skip

    points = ablation_points(space)
    for s in range(base_seeds):
        add(points[0], s)
    for point in points[1:] if singles else []:
        add(point, 0)
    for _ in range(randoms):
        add(_random_point(space, rng), 0)
    return rows


@pytest.fixture(scope="module")
def placements():
    return load_space("placements")


@pytest.fixture(scope="module")
def fitted(placements):
    truth, effects = _truth(placements)
    surrogate, fidelity = fit_surrogate(placements, _sweep(placements, truth))
    return surrogate, fidelity, truth, effects


def test_the_surrogate_recovers_a_known_additive_truth_within_its_noise(placements, fitted):
    surrogate, fidelity, truth, effects = fitted
    errors = [surrogate.models["map50_95"].effects[c] - e[0] for c, e in effects.items()]
    # one seed of each single change against the base's five (and 24 random architectures besides)
    assert max(abs(e) for e in errors) < 4 * NOISE * math.sqrt(1 + 1 / 5)
    assert np.mean(np.abs(errors)) < 1.5 * NOISE
    latency = [surrogate.models["latency_ratio"].effects[c] - e[1] for c, e in effects.items()]
    assert max(abs(e) for e in latency) < 4 * NOISE * math.sqrt(1 + 1 / 5)
    rng = np.random.default_rng(7)
    for _ in range(20):  # exact costs are additive in the truth: the model is exact on any architecture
        point = _random_point(placements, rng)
        assert surrogate.values(point)["gflops"] == pytest.approx(truth(point)["gflops"], rel=1e-9)
        assert surrogate.values(point)["latency_ms"] == pytest.approx(
            50.0 * surrogate.models["latency_ratio"].predict(point) * surrogate.base_latency / 50.0
        )
    # the fidelity it reports: costs exact on the 24 architectures with several changes, mAP's leave-one-out
    # error near its seed noise, the noise measured from the base's 5 seeds
    assert fidelity.cost["gflops"][1] < 1e-9 and fidelity.cost["gflops"][2] >= 20
    assert fidelity.noise["map50_95"][1] == 4 and 0.3 * NOISE < fidelity.noise["map50_95"][0] < 2.5 * NOISE
    assert NOISE * 0.5 < fidelity.loo["map50_95"] < 2.5 * NOISE
    # a truth that is not additive shows as a leave-one-out error well beyond the noise
    bent, _ = _truth(placements, interaction=0.15)
    _, bent_fidelity = fit_surrogate(placements, _sweep(placements, bent))
    assert bent_fidelity.loo["map50_95"] > 2 * fidelity.loo["map50_95"]


def test_a_replay_is_deterministic_for_its_seed(fitted):
    surrogate = fitted[0]
    for strategy in ("random", "tpe", "cost"):
        first = replay(surrogate, strategy, seed=3, trials=12)
        assert len(first) == 12 and first == replay(surrogate, strategy, seed=3, trials=12)
        assert all(b >= a for a, b in zip(first, first[1:], strict=False))  # a hypervolume never shrinks
    assert replay(surrogate, "random", seed=3, trials=12) != replay(surrogate, "random", seed=4, trials=12)


@pytest.mark.parametrize(
    "sweep, needle",
    [
        ({"base_seeds": 1}, "no noise floor for map50_95"),  # no architecture with two seeds
        ({"singles": False, "randoms": 6}, "do not identify the effect of"),  # 8 architectures, 31 unknowns
    ],
)
def test_a_sweep_too_small_to_replay_is_refused_with_what_it_needs(
    placements, sweep, needle, tmp_path, capsys
):
    truth, _ = _truth(placements)
    rows = _sweep(placements, truth, **sweep)
    with pytest.raises(SweepTooSmall, match=needle):
        fit_surrogate(placements, rows)
    # the command: one line naming the problem, exit code 2, before any replay
    from search.config import space_document

    table = tmp_path / "table.json"
    table.write_text(
        json.dumps({"format": 1, "space": space_document(placements), "seeds": rows, "setup": {}})
    )
    assert main(["--table", str(table), "--replays", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err


def test_the_best_hypervolume_is_the_brute_force_one(tmp_path):
    import itertools

    space_file = tmp_path / "three.yaml"
    text = tiny_space(
        "three",
        "".join(
            f"  {name}:\n    layer: {layer}\n    choices:\n      keep: keep\n"
            "      ori: {op: replace, block: GhostModuleV3, mode: ori}\n"
            "      gate: {op: replace, block: GhostModuleV3, mode: ori_shortcut_mul_conv15}\n"
            for name, layer in (("a", 2), ("b", 4), ("c", 8))
        ),
    ).replace("  - {metric: gflops", "  - {metric: latency_ms, direction: minimize}\n  - {metric: gflops")
    space_file.write_text(text)
    space = load_space(str(space_file))
    truth, _ = _truth(space, seed=5)
    surrogate, _ = fit_surrogate(space, _sweep(space, truth, randoms=4))
    names = [s.name for s in space.sites]
    every = [
        dict(zip(names, combo, strict=True))
        for combo in itertools.product(*[[c.name for c in s.choices] for s in space.sites])
    ]
    assert best_hypervolume(surrogate) == pytest.approx(surrogate.hypervolume(every), rel=1e-9)
    assert best_hypervolume(surrogate) > surrogate.hypervolume([space.base_point])


def test_the_cost_aware_sampler_beats_random_where_the_costs_decide(fitted):
    surrogate = fitted[0]
    curves = replay_all(surrogate, ["random", "cost"], replays=6, trials=20, seed=10)
    rows = {r["strategy"]: r for r in summarize_replays(curves, best_hypervolume(surrogate), (10, 20))}
    assert rows["cost"]["p20"] < 0.05 and rows["cost"]["hv20"][0] > rows["random"]["hv20"][0]


def test_the_command_replays_a_table_and_writes_its_plot_and_summary(placements, tmp_path, capsys):
    from search.config import space_document

    truth, _ = _truth(placements)
    table = tmp_path / "table.json"
    doc = {
        "format": 1,
        "space": space_document(placements),
        "seeds": _sweep(placements, truth),
        "setup": {"sweeps": ["s"]},
    }
    table.write_text(json.dumps(doc))
    args = [
        "--table",
        str(table),
        "--replays",
        "3",
        "--trials",
        "12",
        "--strategies",
        "random,tpe,nsga2,cost",
    ]
    assert main([*args, "--plot", str(tmp_path / "hv.png"), "--json", str(tmp_path / "hv.json")]) == 0
    out = capsys.readouterr().out
    assert "gflops: additive in per-site costs; error against exact counts median 0.00%" in out
    assert "map50_95: additive per-site effects; leave-one-out error" in out
    for strategy in ("random", "tpe", "nsga2", "cost"):
        assert any(line.split()[:1] == [strategy] for line in out.splitlines())
    assert "[replay] cost against tpe: p@10 " in out
    assert "a search of 20 one-seed architectures" in out and "none of its per-site effects one by one" in out
    assert (tmp_path / "hv.png").stat().st_size > 10_000
    summary = json.loads((tmp_path / "hv.json").read_text())
    assert {r["strategy"] for r in summary["rows"]} == {"random", "tpe", "nsga2", "cost"}
    assert all(len(c) == 12 for runs in summary["curves"].values() for c in runs)
    assert main([*args[:2], "--strategies", "annealing"]) == 2
    assert "unknown annealing" in capsys.readouterr().err


def test_early_stopping_replays_from_curves_and_moasha_keeps_the_cheap_architecture_asha_stops(placements):
    from search.replay import replay_stopping, stopping_summary

    rng = np.random.default_rng(0)
    rise = np.array([0.5, 0.62, 0.7, 0.75, 0.78])
    rows = []

    def add(point, seed, lift, gflops):
        curve = list(rise + lift + rng.normal(0, 0.005, 5))
        rows.append({"params": point, "arch_hash": json.dumps(sorted(point.items())), "seed": seed, "curve": curve,
                     "map50_95": curve[-1], "latency_ms": 50.0 * gflops / 100, "gflops": gflops, "n_params": 3e7})  # fmt: skip

    for s in range(2):
        add(placements.base_point, s, 0.0, 100.0)
    for k in range(8):  # more accurate, a little more costly
        add(_random_point(placements, rng), 0, 0.01 + 0.005 * k, 101.0 + k)
    cheap = {**placements.base_point, "down_p3": "ori"}
    add(cheap, 0, -0.04, 60.0)  # far cheaper, a little less accurate: on the frontier
    stopped_cheap = {"asha": 0, "moasha": 0}
    for seed in range(6):
        none = replay_stopping(placements, rows, None, seed=seed, architectures=9)
        assert none["epochs"] == 11 * 5 and none["stopped"] == 0 and len(none["finished"]) == 11
        for name in ("asha", "moasha"):
            run = replay_stopping(placements, rows, name, seed=seed, architectures=9)
            assert run == replay_stopping(placements, rows, name, seed=seed, architectures=9)  # deterministic
            assert run["epochs"] < none["epochs"] and run["stopped"] >= 1
            stopped_cheap[name] += all(r["params"] != cheap for r in run["finished"])
    assert stopped_cheap["moasha"] == 0 and stopped_cheap["asha"] >= 1
    rows_by = {r["scheduler"]: r for r in stopping_summary(placements, rows, replays=6, architectures=9)}
    assert rows_by["none"]["hv_ratio"] == 1.0 and rows_by["none"]["front_kept"] == 1.0
    for name in ("asha", "moasha"):
        assert rows_by[name]["epochs"] < rows_by["none"]["epochs"] and 0 < rows_by[name]["hv_ratio"] <= 1.0


def test_the_default_sampler_beats_random_on_the_shipped_reference_table():
    """What the README claims of the default sampler, on the table we ship (bench/search_efficiency.py replays it
    20 times at 40 architectures; here 6 times at 20)."""
    from pathlib import Path

    from search.records import DEFAULT_SAMPLER
    from search.replay import read_table

    space, seeds, setup = read_table(Path(__file__).resolve().parents[2] / "bench" / "reference_table.json")
    assert setup["sweeps"] == ["ref-ablation", "ref-base", "ref-random"] and len(setup["commit"]) == 40
    surrogate, fidelity = fit_surrogate(space, seeds)
    assert fidelity.noise["map50_95"][1] >= 4  # the base's five seeds
    assert fidelity.cost["gflops"][2] >= 12  # architectures with several changes check the cost model
    curves = replay_all(surrogate, ["random", DEFAULT_SAMPLER], replays=6, trials=20)
    rows = {r["strategy"]: r for r in summarize_replays(curves, best_hypervolume(surrogate), (20,))}
    assert rows[DEFAULT_SAMPLER]["p20"] < 0.05


def test_a_replay_with_the_models_misfit_as_noise_draws_it(placements, tmp_path, capsys):
    from search.config import space_document

    truth, _ = _truth(placements, interaction=0.15)
    table = tmp_path / "table.json"
    doc = {"format": 1, "space": space_document(placements), "seeds": _sweep(placements, truth), "setup": {}}
    table.write_text(json.dumps(doc))
    args = ["--table", str(table), "--replays", "2", "--trials", "4", "--strategies", "random"]
    assert main([*args, "--noise", "loo", "--json", str(tmp_path / "loo.json")]) == 0
    assert main([*args, "--json", str(tmp_path / "seed.json")]) == 0
    loo, seed = (json.loads((tmp_path / f"{n}.json").read_text())["noise"] for n in ("loo", "seed"))
    assert loo["map50_95"] > 2 * seed["map50_95"]


def test_a_written_table_replays_exactly_as_the_rows_it_holds(placements, tmp_path):
    """The sites keep their order through the file (a sampler draws them in that order)."""
    from search.config import space_document
    from search.replay import read_table, write_table

    truth, _ = _truth(placements)
    rows = _sweep(placements, truth)
    write_table(tmp_path / "t.json", space_document(placements), rows, setup={"sweeps": ["s"]})
    space, seeds, setup = read_table(tmp_path / "t.json")
    assert [s.name for s in space.sites] == [s.name for s in placements.sites] and setup == {"sweeps": ["s"]}
    direct, written = fit_surrogate(placements, rows)[0], fit_surrogate(space, seeds)[0]
    assert replay(direct, "random", seed=2, trials=8) == replay(written, "random", seed=2, trials=8)
