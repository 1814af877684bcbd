"""The ablation table: every architecture that differs from the base at one site, against the base.

One row per single change (a site with one of its other choices, everything else as in the base):
its mAP50-95 and mAP50 difference to the base with a 95 % interval (paired by seed when both have
two or more seeds in common, else against the sweep's pooled noise floor), whether that difference
is beyond noise, and its latency, GFLOPs and parameters relative to the base. ``--sampler ablation``
trains exactly these architectures; any sweep's report shows the ones it happened to train.
Pure functions of a sweep's architecture rows (:func:`search.records.architecture_rows`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping

from .frontier import format_table
from .space import Space
from .stats import Difference, difference

__all__ = ["ablation_table", "ablation_text", "single_change"]

MAP_METRICS = ("map50_95", "map50")


def single_change(params: Mapping[str, str], base: Mapping[str, str]) -> tuple[str, str] | None:
    """``(site, choice)`` when ``params`` differ from ``base`` at exactly one site, else None."""
    changed = [(site, choice) for site, choice in params.items() if base.get(site) != choice]
    return changed[0] if len(changed) == 1 else None


def _per_seed(row: Mapping, metric: str) -> dict[int, float]:
    values = {int(s): v.get(metric) for s, v in (row.get("seeds") or {}).items()}
    values = {s: float(v) for s, v in values.items() if v is not None and math.isfinite(float(v))}
    mean = row.get(metric)
    if not values and mean is not None and math.isfinite(float(mean)):  # a row without its seeds: its mean
        values = {0: float(mean)}
    return values


def _verdict(d: Difference, up: str = "better", down: str = "worse") -> str:
    if math.isnan(d.half):
        return "unknown (no noise estimate)"
    if not d.beyond:
        return "no: within noise"
    return f"yes: {up}" if d.mean > 0 else f"yes: {down}"


def ablation_table(rows: list[dict], space: Space, noise: Mapping[str, tuple[float, int]]) -> list[dict]:
    """The ablation rows of a sweep, in the space's site and choice order; [] without a trained base.

    Each row: ``change`` (``site=choice``), ``site``, ``choice``, ``label``, ``n_seeds`` and
    ``base_seeds``; for mAP50-95 and mAP50 the difference ``d_<metric>`` with ``d_<metric>_low`` and
    ``d_<metric>_high`` (95 %) and ``paired`` (seeds paired, 0 for the pooled floor); ``beyond_noise``
    (for mAP50-95); ``d_latency_pct`` with its interval (from the interleaved ratio to the base when the trials timed
    one) and ``latency_beyond_noise``, ``d_gflops_pct`` and ``n_params``.
    """
    base_params = {site.name: site.default for site in space.sites}
    base = next((r for r in rows if dict(r.get("params") or {}) == base_params), None)
    if base is None or not all(base_params.values()):
        return []
    order = {(s.name, c.name): k for k, (s, c) in enumerate((s, c) for s in space.sites for c in s.choices)}
    table = []
    for row in rows:
        change = single_change(row.get("params") or {}, base_params)
        if change is None:
            continue
        entry = {
            "change": f"{change[0]}={change[1]}",
            "site": change[0],
            "choice": change[1],
            "label": row.get("label") or "",
            "n_seeds": int(row.get("n_seeds") or 1),
            "base_seeds": int(base.get("n_seeds") or 1),
        }
        for metric in MAP_METRICS:
            d = difference(_per_seed(row, metric), _per_seed(base, metric), noise.get(metric))
            entry.update({f"d_{metric}": d.mean, f"d_{metric}_low": d.low, f"d_{metric}_high": d.high})
            if metric == "map50_95":
                entry["paired"] = d.paired
                entry["beyond_noise"] = _verdict(d)
        # latency: from the ratio to the base timed interleaved in each trial when there is one (load from
        # other processes cancels out of it), else from the absolute medians
        ratios = _per_seed(row, "latency_ratio"), _per_seed(base, "latency_ratio")
        if ratios[0] and ratios[1]:
            lat, scale = (
                difference(*ratios, noise.get("latency_ratio")),
                100 / statistics.fmean(ratios[1].values()),
            )
        else:
            lat = difference(
                _per_seed(row, "latency_ms"), _per_seed(base, "latency_ms"), noise.get("latency_ms")
            )
            scale = 100 / float(base.get("latency_ms") or math.nan)
        entry["d_latency_pct"] = scale * lat.mean
        entry["d_latency_pct_low"], entry["d_latency_pct_high"] = scale * lat.low, scale * lat.high
        entry["latency_beyond_noise"] = _verdict(lat, up="slower", down="faster")
        entry["d_gflops_pct"] = 100 * (float(row["gflops"]) / float(base["gflops"]) - 1)
        entry["n_params"] = int(row.get("n_params") or 0)
        table.append((order.get(change, len(order)), entry))
    return [entry for _, entry in sorted(table, key=lambda t: t[0])]


def _delta_text(mean: float, low: float, high: float, *, digits: int = 3, unit: str = "") -> str:
    """``+0.012 [-0.030, +0.054]``; the interval left out when it is unknown."""
    text = f"{mean:+.{digits}f}{unit}"
    if math.isnan(low) or math.isnan(high):
        return text + " [no noise estimate]"
    return f"{text} [{low:+.{digits}f}, {high:+.{digits}f}]"


COLUMNS = ("change", "seeds", "d_map50_95 [95%]", "beyond noise", "d_map50 [95%]", "d_latency [95%]",
           "latency beyond noise", "d_gflops", "n_params")  # fmt: skip


def ablation_cells(entry: Mapping) -> dict[str, str]:
    """One ablation row as the text of each of :data:`COLUMNS`."""
    return {
        "change": entry["change"] + (f" ({entry['label']})" if entry.get("label") else ""),
        "seeds": f"{entry['n_seeds']} vs {entry['base_seeds']}" + (" paired" if entry.get("paired") else ""),
        "d_map50_95 [95%]": _delta_text(
            entry["d_map50_95"], entry["d_map50_95_low"], entry["d_map50_95_high"]
        ),
        "beyond noise": entry["beyond_noise"],
        "d_map50 [95%]": _delta_text(entry["d_map50"], entry["d_map50_low"], entry["d_map50_high"]),
        "d_latency [95%]": _delta_text(
            entry["d_latency_pct"],
            entry["d_latency_pct_low"],
            entry["d_latency_pct_high"],
            digits=1,
            unit="%",
        ),
        "latency beyond noise": entry["latency_beyond_noise"],
        "d_gflops": f"{entry['d_gflops_pct']:+.1f}%",
        "n_params": str(entry["n_params"]),
    }


def ablation_text(table: list[dict]) -> str:
    """The ablation table as aligned text, or why there is none."""
    if not table:
        return "no ablation table: the base or every single change from it is missing among the finished architectures"
    return format_table([ablation_cells(e) for e in table], list(COLUMNS))
