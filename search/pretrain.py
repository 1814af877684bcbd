"""A fair warm start for a proxy budget: the base trained once, every site's layers left fresh everywhere.

Trained from scratch for a few hundred steps, the ``cpu`` proxy mostly records when each seed's
training takes off: the base's seed std of mAP50-95 read 0.071 (bench/noise.py), larger than most
differences between placements. A budget with ``pretrain: N`` starts every trial instead from a
checkpoint of the space's base trained N epochs at that budget (seed :data:`PRETRAIN_SEED`, on the
training split only: val and test stay unseen), and leaves the layers of **every** site at the trial's
own random initial values in **every** architecture, the base included. So no architecture starts with
trained weights where another starts fresh: at each site the base's block and GhostModuleV3 both start
from their seed's draw, and everything between the sites starts from the same trained weights. What
remains shared is that those layers were trained beside the base's blocks at the sites.

The checkpoint is trained once per setup (base architecture, budget, dataset, code version) and kept in
the cache (``RTDETR_SEARCH_CACHE``, else ~/.cache/rtdetr-ghost-search), beside the built-in dataset; a
sweep copies it into its storage, which its trials read (shared on a cluster) and a resume finds again.

On the built-in data the service ships the checkpoint (``spaces/warm_starts/``, made by ``python -m
search.pretrain``): a fresh clone does not spend its first minutes pretraining, and every machine starts
from the same weights (a checkpoint trained on another CPU or thread count differs in its bits, and every
trial fine-tuned from it differs too). It is used when its recipe (base, budget's training settings, seed,
the built-in data's labels) matches; the code it was trained by is recorded beside it, not checked.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from .recipe import base_model_yaml, fresh_layers, trial_spec
from .space import Budget, Space
from .ultra import cache_dir

__all__ = [
    "PRETRAIN_SEED",
    "cache_root",
    "fresh_layers",
    "kept_checkpoint",
    "pretrain_key",
    "pretrained_base",
    "ship",
    "shipped_checkpoint",
    "shipped_key",
    "with_pretrain",
]

PRETRAIN_SEED = 1000  # apart from the trials' seeds (0, 1, ...): the checkpoint is not one of their runs
_CHECKPOINT = "last.pt"
# checkpoints the service ships, so a fresh clone on any machine starts from the same weights, untrained
SHIPPED = Path(__file__).resolve().parents[1] / "spaces" / "warm_starts"


def cache_root() -> Path:
    """Where pretrained checkpoints are cached: ``pretrain`` in the service's cache, beside the built-in data."""
    return cache_dir() / "pretrain"


def _recipe(space: Space, budget: Budget, seed: int) -> dict:
    """What a checkpoint is trained from and how, apart from the data and the code: the base architecture,
    the budget's training settings and the seed. The trial's own epochs, patience and warm-start path do not
    enter: they do not change the checkpoint."""
    from .materialize import arch_hash

    training = {
        k: v
        for k, v in dataclasses.asdict(budget).items()
        if k not in ("name", "epochs", "patience", "weights")
    }
    return {"base": arch_hash(base_model_yaml(space, budget)), "budget": training, "seed": seed}


def _digest(values: dict) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


def pretrain_key(space: Space, budget: Budget, data: str | None, *, seed: int = PRETRAIN_SEED) -> str:
    """16 hex chars naming the checkpoint a budget's warm start needs: what it was trained from and how,
    on which data, by which code."""
    from .data import builtin_dataset, dataset_fingerprint
    from .provenance import code_version

    return _digest(
        {
            **_recipe(space, budget, seed),
            "data": dataset_fingerprint(data or builtin_dataset()),
            "code": code_version(),
        }
    )


def shipped_key(space: Space, budget: Budget, data: str | None, *, seed: int = PRETRAIN_SEED) -> str | None:
    """16 hex chars naming a checkpoint the service may ship for this warm start, or None: only a start on
    the built-in data can be shipped. The key holds the recipe and what the built-in data's labels say,
    not paths or the code version, so a fresh clone on any machine finds it."""
    if data is not None:
        return None
    from .data import builtin_dataset, labels_fingerprint

    return _digest({**_recipe(space, budget, seed), "builtin_data": labels_fingerprint(builtin_dataset())})


def shipped_checkpoint(
    space: Space, budget: Budget, data: str | None, *, seed: int = PRETRAIN_SEED
) -> Path | None:
    """The shipped checkpoint for this warm start (``spaces/warm_starts/<key>.pt``), or None when there is none."""
    key = shipped_key(space, budget, data, seed=seed)
    if key is None:
        return None
    path = SHIPPED / f"{key}.pt"
    return path if path.is_file() else None


def pretrained_base(
    space: Space,
    budget: Budget,
    data: str | None,
    *,
    say: Callable[[str], None] = print,
    seed: int = PRETRAIN_SEED,
) -> Path:
    """The checkpoint ``budget``'s warm start loads: trained now unless the cache holds it already.

    The base trains as a sweep trial would, for ``budget.pretrain`` epochs with seed :data:`PRETRAIN_SEED`,
    in a scratch folder; only a finished checkpoint is moved into place, so a run killed midway leaves
    nothing that a later one would take for done.
    """
    from .training import run_trial

    key = pretrain_key(space, budget, data, seed=seed)
    root = cache_root()
    final = root / key / _CHECKPOINT
    if final.exists():
        return final
    shipped = shipped_checkpoint(space, budget, data, seed=seed)
    if shipped is not None:
        meta = json.loads(shipped.with_suffix(".json").read_text())
        _place(shipped, final)
        (final.parent / "pretrain.json").write_text(json.dumps({**meta, "shipped": str(shipped)}, indent=2))
        say(
            f"the base pretrained {budget.pretrain} epochs, seed {seed}: the shipped checkpoint {shipped.name}"
            f" (mAP50-95 {meta['map50_95']:.3f} on {meta['scored_split']}; trained at {meta.get('commit', '?')} on"
            f" {meta['machine']['cpu_count']} x {meta['machine']['cpu_model']}), not trained again"
        )
        return final
    say(
        f"pretraining the base for the warm start: {budget.pretrain} epochs, seed {seed} (once; kept as {final})"
    )
    scratch = root / f".{key}-{uuid.uuid4().hex[:8]}"
    cold = dataclasses.replace(budget, epochs=budget.pretrain, pretrain=None, weights=None)
    spec = trial_spec(
        space,
        space.base_point,
        cold,
        out=scratch,
        seed=seed,
        data=data,
        deployed=False,  # no objectives: its cost is the trained model's own
        timed_against_base=False,  # it is the base
    )
    try:
        with _quiet_ultralytics():  # one line per epoch, as a sweep shows its trials, not Ultralytics' bars
            result = run_trial(
                spec,
                report=lambda m, _: say(
                    f"pretraining the base: epoch {m['epoch']}/{budget.pretrain}, mAP50-95 on val {m['map50_95']:.3f}"
                ),
            )
        _place(Path(result["last"]), final)
        (final.parent / "pretrain.json").write_text(
            json.dumps(
                {"seed": seed, "sha256": _sha256(final), "machine": machine(), **result},
                indent=2,
                default=str,
            )
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    say(
        f"pretrained the base: mAP50-95 {result['map50_95']:.3f} on the {result['scored_split']} split after {budget.pretrain} epochs"
    )
    return final


@contextlib.contextmanager
def _quiet_ultralytics():
    """Ultralytics' log lines and progress bars off (its bars draw only while its logger shows INFO)."""
    from ultralytics.utils import LOGGER as ULTRALYTICS

    level = ULTRALYTICS.level
    ULTRALYTICS.setLevel(logging.WARNING)
    try:
        yield
    finally:
        ULTRALYTICS.setLevel(level)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def machine() -> dict:
    """What a checkpoint was trained on: float sums differ with the CPU and the thread count, and training
    amplifies that, so a checkpoint (and every trial fine-tuned from it) is a claim about this machine."""
    import platform

    import torch
    import ultralytics

    model = ""
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "")
    except OSError:
        pass
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return {
        "cpu_model": model or platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "ultralytics": ultralytics.__version__,
        "python": platform.python_version(),
    }


def _place(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` atomically: a concurrent reader sees no file or the whole one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
    shutil.copy2(source, staged)
    os.replace(staged, target)


def kept_checkpoint(
    space: Space, budget: Budget, data: str | None, *, keep_in: Path, seed: int = PRETRAIN_SEED
) -> Path:
    """Where a sweep keeps its copy of ``budget``'s pretrained base (it may not exist yet)."""
    return Path(keep_in) / f"{pretrain_key(space, budget, data, seed=seed)}.pt"


def with_pretrain(
    space: Space,
    budget: Budget,
    data: str | None,
    *,
    keep_in: Path | None = None,
    say: Callable[[str], None] = print,
    seed: int = PRETRAIN_SEED,
) -> Budget:
    """``budget`` with its warm start resolved: ``weights`` set to the pretrained base when it has ``pretrain``
    and no checkpoint of its own; any other budget unchanged.

    With ``keep_in`` (a sweep's storage) the checkpoint is copied there as ``<key>.pt`` and read from
    there, and a copy already there is used as it is: a resumed sweep starts from the very same weights.
    """
    if not budget.pretrain or budget.weights:
        return budget
    if keep_in is None:
        return dataclasses.replace(
            budget, weights=str(pretrained_base(space, budget, data, say=say, seed=seed))
        )
    kept = kept_checkpoint(space, budget, data, keep_in=keep_in, seed=seed)
    if not kept.exists():
        _place(pretrained_base(space, budget, data, say=say, seed=seed), kept)
    return dataclasses.replace(budget, weights=str(kept))


def ship(
    space: Space, budget: Budget, say: Callable[[str], None] = print, *, seed: int = PRETRAIN_SEED
) -> Path:
    """Put ``budget``'s pretrained base on the built-in data (from the cache, else trained now) among the
    shipped checkpoints, with what it came from (``<key>.json``: its pretrain.json, the commit, the recipe)."""
    import subprocess

    from .tracking import git_commit

    checkpoint = pretrained_base(space, budget, None, say=say, seed=seed)
    meta = json.loads((checkpoint.parent / "pretrain.json").read_text())
    if meta.get("shipped"):
        raise ValueError(f"{checkpoint} is itself a shipped checkpoint; empty the cache to train one")
    commit = (git_commit() or "unknown")[:7]
    changed = subprocess.run(
        ["git", "-C", str(SHIPPED.parent), "status", "--porcelain", "--", "search", "ghost_blocks"],
        capture_output=True,
        text=True,
    )
    if changed.stdout.strip():
        commit += " with uncommitted changes"
    key = shipped_key(space, budget, None, seed=seed)
    SHIPPED.mkdir(parents=True, exist_ok=True)
    target = SHIPPED / f"{key}.pt"
    _place(checkpoint, target)
    keep = ("seed", "sha256", "machine", "map50_95", "scored_split", "epochs_done", "threads", "train_s")
    target.with_suffix(".json").write_text(
        json.dumps(
            {
                **{k: meta[k] for k in keep if k in meta},
                "commit": commit,
                "recipe": _recipe(space, budget, seed),
            },
            indent=2,
            default=str,
        )
        + "\n"
    )
    say(f"shipped {target} ({target.stat().st_size / 1e6:.1f} MB): commit it with its .json")
    return target


def main(argv: list[str] | None = None) -> int:
    """``python -m search.pretrain --space NAME --budget NAME``: pretrain a budget's base on the built-in data
    (or take it from the cache) and ship it under ``spaces/warm_starts/``."""
    from .cli import Parser, start, usage_error
    from .space import SpaceError, load_space
    from .ultra import setup

    start()
    parser = Parser(prog="python -m search.pretrain", description=main.__doc__)
    parser.add_argument("--space", default="placements")
    parser.add_argument("--budget", default="cpu")
    args = parser.parse_args(argv)
    try:
        space = load_space(args.space)
    except SpaceError as exc:
        return usage_error(exc)
    budget = space.budgets.get(args.budget)
    if budget is None or not budget.pretrain:
        return usage_error(
            ValueError(f"--budget {args.budget}: not a budget of {args.space} with a pretrain")
        )
    setup()
    ship(space, budget)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
