"""Seeds and noise: summaries, the pooled noise floor, differences beyond it, the noise-aware frontier."""

from __future__ import annotations

import math
import statistics

import pytest

from search.ablation import ablation_table, ablation_text, single_change
from search.frontier import Objective, close_groups, frontier_notes, frontier_table, noisy_dominates
from search.records import architecture_rows
from search.space import load_space
from search.stats import (
    difference,
    margin,
    noise_floor,
    pooled_std,
    std_interval,
    std_verdict,
    summarize,
    t975,
)

OBJECTIVES = [Objective("map50_95", "maximize"), Objective("latency_ms", "minimize")]


def test_summary_of_repeats_is_mean_std_and_t_interval():
    s = summarize([0.30, 0.34, 0.32, None, math.nan])
    assert s.n == 3 and s.mean == pytest.approx(0.32)
    assert s.std == pytest.approx(statistics.stdev([0.30, 0.34, 0.32]))
    assert s.half == pytest.approx(4.303 * s.std / math.sqrt(3))
    one = summarize([0.3])
    assert one.n == 1 and one.mean == 0.3 and math.isnan(one.std) and math.isnan(one.half)
    assert t975(1) == 12.706 and t975(30) == 2.042 and abs(t975(120) - 1.980) < 0.002 and t975(0) == math.inf


@pytest.mark.parametrize("n", [2, 3, 5, 10, 20, 31, 32, 45, 200])
def test_the_interval_of_a_std_is_the_chi_square_one(n):
    from scipy.stats import chi2  # Ultralytics' own dependency: the reference, not used by the service

    df = n - 1
    low, high = std_interval(0.05, n)
    assert low == pytest.approx(0.05 * math.sqrt(df / chi2.ppf(0.975, df)), rel=1e-3)
    assert high == pytest.approx(0.05 * math.sqrt(df / chi2.ppf(0.025, df)), rel=1e-3)


def test_a_std_from_five_seeds_is_rough():
    low, high = std_interval(0.024, 5)  # what 5 seeds of one CPU budget read before 5 more read 0.074
    assert (round(low / 0.024, 2), round(high / 0.024, 2)) == (0.6, 2.87)
    assert all(math.isnan(x) for x in std_interval(0.02, 1) + std_interval(math.nan, 5))


def test_a_seed_std_is_judged_only_from_five_seeds():
    assert std_verdict(0.019, 5, 0.02) == "PASS" and std_verdict(0.021, 10, 0.02) == "FAIL"
    # one seed has no std, and three are too rough either way: neither passes nor fails
    assert std_verdict(math.nan, 1, 0.02).startswith("TOO FEW SEEDS")
    assert std_verdict(0.09, 3, 0.02).startswith("TOO FEW SEEDS")


def test_the_noise_floor_pools_architectures_with_two_or_more_seeds():
    std, df = pooled_std([(2, 0.03), (3, 0.06), (1, math.nan)])
    assert std == pytest.approx(math.sqrt((1 * 0.03**2 + 2 * 0.06**2) / 3)) and df == 3
    assert pooled_std([(1, 0.5)]) is None
    rows = [
        {"n_seeds": 2, "map50_95_std": 0.04, "latency_ms_std": 1.0},
        {"n_seeds": 1, "map50_95_std": math.nan, "latency_ms_std": math.nan},
    ]
    floor = noise_floor(rows, ["map50_95", "latency_ms", "gflops", "map50"])
    assert floor["map50_95"] == pytest.approx((0.04, 1)) and floor["gflops"] == (0.0, 0)
    assert "map50" not in floor  # no row has its spread: unknown, not zero


def test_differences_pair_by_seed_with_three_seeds_else_use_the_pooled_floor():
    a = {0: 0.40, 1: 0.42, 2: 0.44}
    b = {0: 0.30, 1: 0.33, 2: 0.33}
    d = difference(a, b, (0.5, 100))  # paired: the huge pooled floor is not used
    diffs = [0.10, 0.09, 0.11]
    assert d.paired == 3 and d.mean == pytest.approx(0.10)
    assert d.half == pytest.approx(4.303 * statistics.stdev(diffs) / math.sqrt(3)) and d.beyond
    two = difference({0: 0.40, 1: 0.42}, {0: 0.30, 1: 0.33}, (0.05, 4))
    assert two.paired == 0 and two.half == pytest.approx(2.776 * 0.05 * math.sqrt(1 / 2 + 1 / 2))
    assert two.mean == pytest.approx(0.095) and not two.beyond
    unknown = difference({0: 0.4}, {0: 0.3}, None)
    assert math.isnan(unknown.half) and not unknown.beyond
    assert margin((0.0, 0), 1, 1) == 0 and margin(None, 1, 1) == 0
    assert margin((0.03, 3), 2, 2) == pytest.approx(3.182 * 0.03)


def _arch(name, map_, lat, n=2, gflops=4.0):
    return {"label": name, "map50_95": map_, "latency_ms": lat, "gflops": gflops, "n_seeds": n, "params": {}}


def test_two_architectures_within_the_noise_floor_are_tied_on_the_frontier():
    noise = {"map50_95": (0.03, 4), "latency_ms": (0.5, 4)}
    a, b = _arch("a", 0.31, 10.2), _arch("b", 0.30, 10.0)
    # without noise each wins one objective; within noise neither beats the other: both stay, tied
    assert not noisy_dominates(a, b, OBJECTIVES, noise=noise) and not noisy_dominates(
        b, a, OBJECTIVES, noise=noise
    )
    front = frontier_table([a, b], OBJECTIVES, noise)
    assert {r["label"] for r in front} == {"a", "b"}
    assert close_groups(front, ["map50_95", "latency_ms"], noise) == [[a, b]]
    notes = frontier_notes(front, OBJECTIVES, noise)
    assert any(n.startswith("tied within noise on every objective: a = b") for n in notes)
    assert any(n.startswith("noise floor") for n in notes)


def test_an_architecture_better_by_far_more_than_the_noise_dominates():
    noise = {"map50_95": (0.03, 4), "latency_ms": (0.5, 4)}
    a, b = _arch("a", 0.60, 10.1), _arch("b", 0.30, 10.0)  # latency: within noise; mAP: far beyond it
    assert noisy_dominates(a, b, OBJECTIVES, noise=noise)
    assert frontier_table([a, b], OBJECTIVES, noise) == [a]
    assert frontier_table([a, b], OBJECTIVES) == [a, b]  # the exact frontier keeps b for its 0.1 ms
    assert close_groups([a], ["map50_95"], noise) == []


def test_a_gain_within_noise_bought_with_exact_cost_is_dominated():
    """mAP +0.01 (noise 0.03) for more GFLOPs (exact): the cheaper one dominates."""
    objectives = [*OBJECTIVES, Objective("gflops", "minimize")]
    noise = {"map50_95": (0.03, 4), "latency_ms": (0.5, 4), "gflops": (0.0, 0)}
    heavy, light = _arch("heavy", 0.31, 10.0, gflops=4.2), _arch("light", 0.30, 10.0, gflops=4.0)
    assert frontier_table([heavy, light], objectives, noise) == [light]
    notes = frontier_notes([light], objectives, {"gflops": (0.0, 0)})
    assert any("no noise estimate for map50_95, latency_ms" in n for n in notes)


def test_latency_is_compared_through_its_interleaved_ratio_to_the_base_where_rows_have_one():
    noise = {"map50_95": (0.03, 4), "latency_ms": (3.0, 4), "latency_ratio": (0.01, 4)}
    fast = {**_arch("fast", 0.30, 20.0), "latency_ratio": 0.80}
    slow = {**_arch("slow", 0.30, 21.0), "latency_ratio": 1.00}
    # the absolute medians differ by 1 ms within a seed spread of 3 ms; the ratios by 0.2 against 0.01
    assert noisy_dominates(fast, slow, OBJECTIVES, noise=noise)
    assert frontier_table([fast, slow], OBJECTIVES, noise) == [fast]
    notes = frontier_notes([fast], OBJECTIVES, noise)
    assert any(
        n.startswith("latency_ms is compared through latency_ratio") and "0.01 (df 4)" in n for n in notes
    )
    # without the ratio's noise, or without a ratio on both rows, the absolute medians decide: a tie
    absolute = {k: v for k, v in noise.items() if k != "latency_ratio"}
    assert frontier_table([fast, slow], OBJECTIVES, absolute) == [fast, slow]
    assert close_groups([fast, slow], ["latency_ms"], absolute) == [[fast, slow]]
    unrated = {**slow, "latency_ratio": math.nan}
    assert not noisy_dominates(fast, unrated, OBJECTIVES, noise=noise)
    # the ratio decides the other way too: medians 2 ms apart, ratios within their noise, a tie
    twin = {**_arch("twin", 0.30, 23.0), "latency_ratio": 0.805}
    assert close_groups([fast, twin], ["map50_95", "latency_ms"], noise) == [[fast, twin]]


def _seed(arch, seed, map_, lat, params, gflops=4.0):
    return {"arch_hash": arch, "seed": seed, "map50_95": map_, "map50": map_ + 0.2, "latency_ms": lat,
            "latency_p90_ms": lat, "gflops": gflops, "n_params": 10, "params": params, "label": "",
            "trial_id": f"{arch}{seed}", "run_id": f"r{arch}{seed}", "arch_run_id": f"A{arch}"}  # fmt: skip


def test_architecture_rows_average_seeds_and_the_ablation_table_compares_single_changes():
    space = load_space("modes")
    keep, ori, gate = ({"stage3": c} for c in ("keep", "ori", "gate"))
    seeds = [
        _seed("k", 0, 0.30, 10.0, keep), _seed("k", 1, 0.32, 10.4, keep), _seed("k", 2, 0.31, 10.2, keep),
        _seed("o", 0, 0.50, 9.0, ori, 3.9), _seed("o", 1, 0.52, 9.2, ori, 3.9), _seed("o", 2, 0.51, 9.1, ori, 3.9),
        _seed("g", 0, 0.31, 11.0, gate, 4.2),
    ]  # fmt: skip
    rows = architecture_rows(seeds)
    assert [r["arch_hash"] for r in rows] == ["k", "o", "g"]
    base = rows[0]
    assert base["n_seeds"] == 3 and base["map50_95"] == pytest.approx(0.31)
    assert base["map50_95_std"] == pytest.approx(0.01) and base["map50_95_ci95"] == pytest.approx(
        4.303 * 0.01 / 3**0.5
    )
    assert set(base["seeds"]) == {0, 1, 2} and base["run_id"] == "rk0" and base["arch_run_id"] == "Ak"
    assert single_change(ori, keep) == ("stage3", "ori") and single_change(keep, keep) is None
    noise = noise_floor(rows, ["map50_95", "map50", "latency_ms"])
    table = ablation_table(rows, space, noise)
    assert [e["change"] for e in table] == ["stage3=ori", "stage3=gate"]  # the space's choice order
    ori_row, gate_row = table
    assert ori_row["paired"] == 3 and ori_row["d_map50_95"] == pytest.approx(0.20)
    assert ori_row["beyond_noise"] == "yes: better"
    assert ori_row["d_gflops_pct"] == pytest.approx(100 * (3.9 / 4.0 - 1))
    assert ori_row["d_latency_pct"] == pytest.approx(100 * (9.1 - 10.2) / 10.2)
    assert (
        gate_row["paired"] == 0 and gate_row["beyond_noise"] == "no: within noise"
    )  # one seed: the pooled floor
    assert gate_row["d_map50_95_low"] < 0 < gate_row["d_map50_95_high"]
    assert ori_row["latency_beyond_noise"] == "yes: faster"  # 9.1 vs 10.2 ms, seed spread 0.1-0.2 ms
    # with the interleaved ratio to the base, the latency change comes from it, not the absolute medians
    timed = [{**r, "seeds": {k: {**v, "latency_ratio": v["latency_ms"] / 10.0} for k, v in r["seeds"].items()}}
             for r in rows]  # fmt: skip
    ratio_row = ablation_table(timed, space, noise_floor(timed, ["map50_95", "latency_ratio"]))[0]
    assert ratio_row["d_latency_pct"] == pytest.approx(100 * (0.91 - 1.02) / 1.02)
    text = ablation_text(table)
    assert "stage3=ori" in text and "yes: better" in text and "[" in text
    assert ablation_table(rows[1:], space, noise) == []  # no base, no table
    assert "no ablation table" in ablation_text([])


def test_additive_effects_recover_the_true_effects_and_refuse_what_the_trials_cannot_separate():
    import random

    from search.effects import site_effects

    space = load_space("placements")
    truth = {("stage1", "ori"): 0.05, ("pan_p5", "gate"): -0.03, ("stage2", "after_ori"): 0.02}
    rng = random.Random(0)
    base = {s.name: "keep" for s in space.sites}
    points = (
        [base]
        + [{**base, site: choice} for site, choice in truth]
        + [
            {**base, "stage1": "ori", "pan_p5": "gate"},
            {**base, "down_p3": "ori", "down_p4": "gate"},  # two changes only ever together: not separable
        ]
    )
    rows = []
    for k, params in enumerate(points):
        value = 0.30 + sum(v for (s, c), v in truth.items() if params[s] == c)
        seeds = {seed: {"map50_95": value + rng.gauss(0, 0.002)} for seed in range(3)}
        rows.append({"params": params, "seeds": seeds, "n_seeds": 3, "arch_hash": str(k)})
    effects = {(e.site, e.choice): e for e in site_effects(rows, space, "map50_95")}
    for key, value in truth.items():
        e = effects[key]
        assert e.mean == pytest.approx(value, abs=0.004)
        assert e.mean - e.half <= value <= e.mean + e.half and e.half < 0.01
        assert e.trials == (6 if key != ("stage2", "after_ori") else 3)
    for key in (("down_p3", "ori"), ("down_p4", "gate")):
        assert effects[key].mean is None and effects[key].needs == 1 and effects[key].trials == 3
    never = effects[("fpn_p4", "after_gate")]
    assert never.mean is None and never.trials == 0 and never.needs == 1
    # without the base, one more trial is not enough: the base and the single change
    assert site_effects(rows[1:2], space, "map50_95")[0].needs == 2


def test_an_interval_is_shown_as_a_reader_needs_it():
    from search.stats import interval_text

    assert interval_text(0.312, 0.041, [0.3, 0.31, 0.33]) == "0.312 ± 0.041"
    # one degree of freedom: the two seed values the (12.7-std-wide) interval comes from
    assert interval_text(0.7415, 0.2986, [0.765, 0.718]) == "0.7415 ± 0.2986 (seeds 0.765, 0.718)"
    # wider than the value itself: said, not printed
    assert interval_text(54.51, 269.7, [40.0, 69.0]) == "54.51 (interval wider than the value; seeds 40, 69)"
    assert interval_text(0.5, math.nan, [0.5]) == "0.5" and interval_text(math.nan, 0.1) == ""


def test_seeds_to_separate_a_difference_at_a_noise_floor():
    from search.stats import seeds_to_separate, t975

    n = seeds_to_separate(0.009, 0.0043)
    assert n == 4
    for k, ok in ((n, True), (n - 1, False)):  # the least n whose interval is narrower than the difference
        assert (t975(2 * (k - 1)) * 0.0043 * math.sqrt(2 / k) < 0.009) is ok
    assert seeds_to_separate(0.5, 0.0043) == 2 and seeds_to_separate(1e-6, 0.01) is None
    assert seeds_to_separate(0.01, 0.0) == 1  # no noise: one seed each separates any difference


def test_the_frontier_notes_say_how_many_seeds_would_separate_what_is_undecided():
    from search.frontier import Objective, frontier_notes

    objectives = [Objective("map50_95", "maximize"), Objective("gflops", "minimize")]
    front = [
        {"label": "base", "params": {}, "map50_95": 0.80, "gflops": 10.0, "n_seeds": 2},
        {"label": "a", "params": {}, "map50_95": 0.81, "gflops": 9.0, "n_seeds": 1},
    ]
    noise = {"map50_95": (0.01, 3), "gflops": (0.0, 0)}
    notes = frontier_notes(front, objectives, noise)
    (line,) = [n for n in notes if "seeds per architecture" in n]
    assert line == (
        "a map50_95 difference of 0.01 is within noise here: separating it takes about 9 seeds per architecture"
        " at this noise floor"
    )


def test_the_mann_whitney_p_value_is_scipys_asymptotic_one():
    import random

    from scipy.stats import mannwhitneyu

    from search.stats import mann_whitney_greater

    rng = random.Random(1)
    for shift in (0.0, 0.01, 0.03, -0.02):
        a = [round(rng.gauss(0.3 + shift, 0.02), 2) for _ in range(20)]  # rounded: ties, as hypervolumes have
        b = [round(rng.gauss(0.3, 0.02), 2) for _ in range(20)]
        expected = mannwhitneyu(a, b, alternative="greater", method="asymptotic").pvalue
        assert mann_whitney_greater(a, b) == pytest.approx(expected, rel=1e-9)
    assert mann_whitney_greater([1.0] * 5, [1.0] * 5) == 1.0
    assert mann_whitney_greater(range(10, 20), range(10)) < 0.001
