"""A trial's recipe, built in one place: the space's point trained as a budget says, on data, with a seed.

:func:`trial_spec` is where every trial of a space gets its :class:`~search.training.TrialSpec`: a sweep's
trials, ``python -m search.trial --space``, the pretraining of the fair warm start and the benchmarks.
It builds the trained model (the budget's proxy, for the dataset's classes when they are known), the
deployable architecture whose cost is the objective, the base a latency is timed against, where a warm
start's layers moved, and which layers start fresh. :func:`resolve_budget` applies a run's overrides to a
space's budget, once, at the edge.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .space import Budget, Space

__all__ = ["base_model_yaml", "deploy_cost", "fresh_layers", "resolve_budget", "trial_spec"]


def resolve_budget(space: Space, name: str, overrides: dict[str, Any] | None = None) -> Budget:
    """The space's budget ``name`` with every override that is not None applied (``--epochs`` and the like)."""
    return dataclasses.replace(
        space.budgets[name], **{k: v for k, v in (overrides or {}).items() if v is not None}
    )


def fresh_layers(space: Space, budget: Budget) -> tuple[int, ...]:
    """The base layers a trial of ``budget`` never loads from its warm start: under ``pretrain``, every
    site's layer (replaced or inserted after, or kept); otherwise none (only what an architecture changes
    stays fresh, as the names and shapes decide)."""
    return tuple(sorted({s.layer for s in space.sites})) if budget.pretrain else ()


def base_model_yaml(space: Space, budget: Budget | None = None, nc: int | None = None) -> dict | None:
    """The base's model yaml at ``budget`` (None: full size), built for ``nc`` classes when given; None when
    the space does not hold the base (a site without a ``keep`` choice)."""
    from .materialize import materialize
    from .training import with_classes

    point = space.base_point
    if point is None:
        return None
    model_yaml = materialize(space, point, budget=budget)[0]
    return with_classes(model_yaml, nc) if nc is not None else model_yaml


def trial_spec(
    space: Space,
    point: dict[str, str],
    budget: Budget,
    *,
    out: str | Path,
    seed: int = 0,
    data: str | None = None,
    nc: int | None = None,
    deployed: bool = True,
    timed_against_base: bool = True,
    **settings: Any,
):
    """The :class:`~search.training.TrialSpec` of ``point`` (a validated params dict) trained as ``budget``
    says (resolved: overrides applied, its warm start in ``weights``).

    Args:
        out: the trial's folder (made absolute).
        nc: the dataset's class count, when the caller knows it: the model is built for it and hashed here;
            None: the trial sets the class count itself.
        deployed: the cost objectives are the full-size architecture's (the deploy form a user ships);
            False: the trained model's own (the pretraining, which has no objectives).
        timed_against_base: latency is timed interleaved with the base at this budget (a ratio); False:
            the trained model alone.
        settings: how this run trains and measures (device, threads, workers, latency settings,
            constraints, the base's latency, ...), as :class:`~search.training.TrialSpec` names them.
    """
    from .materialize import arch_hash, layer_map, materialize
    from .training import TrialSpec, with_classes

    model_yaml = materialize(space, point, budget=budget)[0]
    if nc is not None:
        model_yaml = with_classes(model_yaml, nc)
        settings.setdefault("arch_hash", arch_hash(model_yaml))
    return TrialSpec.from_budget(
        model_yaml,
        budget,
        Path(out).resolve(),
        seed=seed,
        data=data,
        map_evaluator=space.map_evaluator,
        layer_map=layer_map(space, point),  # a warm start's base layers, where insertions moved them
        fresh_layers=fresh_layers(space, budget),  # a fair warm start: no site's layer is loaded
        deploy_yaml=materialize(space, point)[0] if deployed else None,
        reference_yaml=base_model_yaml(space, budget, nc) if timed_against_base else None,
        **settings,
    )


def deploy_cost(space: Space, point: dict[str, str]) -> dict[str, float]:
    """The exact parameters and GFLOPs of ``point``'s deployable architecture (full size, deploy form): the
    cost objectives every trial of a sweep reports, whatever budget trained it."""
    from .cost import architecture_cost
    from .materialize import materialize

    return architecture_cost(materialize(space, point)[0])
