"""The plan of a sweep: the fixed points of the grid, ablation and list samplers, the base point, the
references, and how many seeds each point trains."""

from __future__ import annotations

import dataclasses

from .config import FIXED_SAMPLERS, SweepConfig
from .space import Budget, Space, validate_params

__all__ = [
    "ablation_points",
    "reference_hashes",
    "seeds_of",
    "fill_last_round",
    "sweep_plan",
    "sweep_points",
]


def ablation_points(space: Space) -> list[dict[str, str]]:
    """The base, then every single change from it: each site with each of its other choices, alone.

    Raises:
        ValueError: the space has a site without a ``keep`` choice (no base to ablate from).
    """
    base = space.base_point
    if base is None:
        missing = [site.name for site in space.sites if site.default is None]
        raise ValueError(f"space {space.name}: no ablation without the base; sites without keep: {missing}")
    return [base] + [
        {**base, site.name: choice.name}
        for site in space.sites
        for choice in site.choices
        if choice.name != base[site.name]
    ]


def sweep_points(
    space: Space, sampler: str, samples: int | None = None, *, listed: list[dict] | None = None
) -> list[dict[str, str]]:
    """The points a sweep trains first, in order: the base and (but for a list) the space's references, then, for the
    fixed samplers, the rest of their list (``grid``: every point, up to ``samples``; ``ablation``:
    every single change from the base; ``list``: ``listed``). Each point once."""
    import itertools

    base = space.base_point
    points = [base] if base is not None else []
    if sampler != "list":  # a list (--from-sweep) is trained exactly, with the base for the noise floor
        points += [validate_params(space, dict(r.params)) for r in space.references]
    if sampler == "grid":
        names = [s.name for s in space.sites]
        grid = itertools.product(*[[c.name for c in s.choices] for s in space.sites])
        points += [dict(zip(names, combo, strict=True)) for combo in grid]
    elif sampler == "ablation":
        points += ablation_points(space)
    elif sampler == "list":
        points += [validate_params(space, dict(p)) for p in listed or []]
    unique = list({tuple(p.items()): p for p in points}.values())  # first occurrence wins, order kept
    return unique[:samples] if sampler == "grid" and samples else unique


def seeds_of(point: dict[str, str] | None, space: Space, repeats: int) -> int:
    """Seeds an architecture is trained with: ``repeats``, and at least 2 for the base (every sweep
    measures its own noise floor)."""
    return max(repeats, 2) if point is not None and point == space.base_point else repeats


def sweep_plan(config: SweepConfig) -> tuple[list[dict[str, str]], list[int], int]:
    """The leading points (references first), their seed counts, and the sweep's number of Ray trials.

    With a sampler that searches (tpe, nsga2, random), ``samples`` architectures are sampled after the
    references, which do not count toward it unless ``count_references``.
    """
    points = sweep_points(config.space, config.sampler, config.samples, listed=config.points)
    seeds = [seeds_of(p, config.space, config.repeats) for p in points]
    sampled = 0
    if config.sampler not in FIXED_SAMPLERS:
        sampled = max(0, config.samples - (len(points) if config.count_references else 0))
    return points, seeds, sum(seeds) + sampled * config.repeats


def fill_last_round(config: SweepConfig) -> SweepConfig:
    """``config`` with its sampled architectures raised (by fewer than ``max_concurrent``, never past the
    space's size) until its trials fill whole rounds of ``max_concurrent``: a slot left empty while the last
    trial trains alone is time no trial uses. A fixed sampler's list is kept as it is."""
    if config.sampler in FIXED_SAMPLERS or config.max_concurrent < 2:
        return config
    for extra in range(config.max_concurrent):
        filled = dataclasses.replace(config, samples=config.samples + extra)
        if filled.samples > config.space.size:
            break
        if sweep_plan(filled)[2] % config.max_concurrent == 0:
            return filled
    return config


def reference_hashes(space: Space, budget: Budget, nc: int) -> dict[str, str]:
    """The architecture hash of the base and of each reference the space names, under this budget and
    class count: ``{hash: "base" or the reference's name}``."""
    from .materialize import arch_hash, materialize
    from .training import with_classes

    def hash_of(params: dict) -> str:
        return arch_hash(with_classes(materialize(space, params, budget=budget)[0], nc))

    base = space.base_point
    marks = {hash_of(base): "base"} if base is not None else {}
    return {**marks, **{hash_of(validate_params(space, dict(r.params))): r.name for r in space.references}}
