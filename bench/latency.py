"""How repeatable is the latency figure a sweep records, and what does re-parameterisation buy?

Run: ``.venv/bin/python bench/latency.py [--quick] [--repeats N] [--full-repeats N] [--sizes 320 640]
[--time-limit S] [--threads N]``

A sweep records ONE latency per architecture: ``search.cost.latency`` on the deploy form (GhostModuleV3
re-parameterised, then Ultralytics' fuse), batch 1, ``eval()`` + ``inference_mode``, 3 warm-up
passes, then 10 to 50 timed forwards within ~3 s, the median; one measurement at a time per machine
(a file lock shared across processes). That figure is cached per architecture, so it is never taken
twice. This script takes it many times in one run, with exactly that function and its defaults, and
prints how much it moves.

Models (both from ``spaces/modes.yaml``, i.e. rtdetr-l with backbone layer 5 replaced by
``[-1, 2, GhostModuleV3, [512, 3, 1, mode]]``, mode ``ori`` or ``ori_shortcut_mul_conv15`` = ``gate``):

- ``proxy``: the point as a CPU sweep trains it (``materialize`` with the space's ``cpu`` budget, the
  built-in dataset's classes), timed at that budget's image size (160). ``gate`` gets ``--repeats``
  (10) measurements per form, ``ori`` fewer (3): it is there for its ratio.
- ``full``: the model as written (80 classes) at ``--sizes`` (320 and 640), two measurements per form
  and size (``--full-repeats``), both modes. Skipped with ``--quick``. A full-model case is skipped,
  and says so, when its estimated time (from the full-model calls before it, scaled by pixels) would
  end the run after ``--time-limit`` (230) s: on 2 busy cores one thread needs ~10 s per latency()
  call at 320 and ~30-45 s at 640, so the default run usually stops at 320; ``--time-limit 600``
  reaches 640.

Each measurement of a case times BOTH forms back to back, which one first alternating from one
measurement to the next (over all cases), so that load from other processes hits both alike:

- ``deploy``: the deploy form, what the sweep measures.
- ``train``:  the un-reparameterised model as built (and as trained), in ``eval()``: every
  GhostModuleV3 with its training-time branches, and Ultralytics' own Conv+BN and RepConv unfused.

How to read it:

- ``medians ms``: the latency figure of each measurement, in the order taken. ``spread`` is
  (max - min) / median of those figures, ``std/med`` their standard deviation over their median: two
  sweeps (or two trials of one sweep) measuring the same architecture on this machine can disagree
  by about ``spread``; a latency difference between architectures smaller than that is not a
  ranking. ``IQR/med`` is the median, over measurements, of the within-measurement interquartile
  range over its median: the noise inside one call, for comparison with the noise between calls.
- last, ``absolute median vs ratio``: the proxy ``gate`` timed interleaved with the base (what a
  sweep trial logs as ``latency_ratio``), each call alternately on an idle machine and beside a
  competing process. The absolute median jumps with the load; the ratio, whose two models share
  every window, should not. Its ``std/mean`` is the figure to compare.
- ``train/deploy``: latency of the training form over the deploy form, the median of the ratios of
  the paired measurements with their min-max in brackets. Above 1 is what shipping the deploy form
  gains over shipping the checkpoint as trained. It includes Ultralytics' fuse of its own layers, not
  only GhostModuleV3's re-parameterisation; ``bench/reparam.py`` isolates the latter (fused rest on
  both sides). On a loaded machine the ratio of one pair can be far from the median: read the median.

Threads: one by default, like a sweep trial on CPU (Ray starts each trial with ``OMP_NUM_THREADS=1``;
the cost cache key says ``1threads``). ``--threads N`` measures with N. The load average is printed
before and after; the figures only describe this machine under that load. Nothing is written to the
repository; the only file touched is the latency lock (in ``$RTDETR_SEARCH_LOCK_DIR`` or the temp dir).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
from _machine import load_average  # noqa: E402  (bench/ is the script's folder)
from torch import nn

import search.ultra

search.ultra.offline()  # before anything imports ultralytics

POINTS = {
    "ori": "ori",
    "gate": "ori_shortcut_mul_conv15",
}  # the modes space's choices -> mode (keep: the base)


def build(point: str, proxy: bool) -> tuple[nn.Module, nn.Module, int]:
    """(training form in eval mode, deploy form, the budget's image size) of a modes-space point."""
    from ultralytics.nn.tasks import RTDETRDetectionModel

    from search.cost import deploy_form
    from search.data import CLASS_NAMES
    from search.materialize import materialize
    from search.space import load_space
    from search.training import with_classes

    space = load_space("modes")
    budget = space.budgets["cpu"] if proxy else None
    model_yaml, _ = materialize(space, {"stage3": point}, budget=budget)
    if proxy:  # as a sweep trial builds it: the built-in dataset's classes
        model_yaml = with_classes(model_yaml, len(CLASS_NAMES))
    torch.manual_seed(0)
    train = RTDETRDetectionModel(model_yaml, verbose=False).eval()
    deploy = deploy_form(train)  # a copy: ``train`` keeps its branches
    return train, deploy, space.budgets["cpu"].imgsz


_PAIRS = [0]  # paired measurements so far, over all cases: which form goes first alternates globally


def measure_case(name: str, train: nn.Module, deploy: nn.Module, imgsz: int, repeats: int) -> dict:
    """``repeats`` paired latency() calls on both forms, alternating which goes first."""
    from search.cost import latency

    device = torch.device("cpu")
    out: dict[str, list[dict]] = {"deploy": [], "train": []}
    started = time.perf_counter()
    for r in range(repeats):
        order = ("deploy", "train") if _PAIRS[0] % 2 == 0 else ("train", "deploy")
        _PAIRS[0] += 1
        for form in order:
            out[form].append(latency(train if form == "train" else deploy, imgsz, device))
        print(
            f"  {name}: measurement {r + 1}/{repeats}: deploy {out['deploy'][-1]['latency_ms']:.1f} ms, "
            f"train {out['train'][-1]['latency_ms']:.1f} ms ({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
    return {"case": name, "runs": out, "seconds": time.perf_counter() - started}


# ----------------------------------------------------------------------------------- report
def spread_row(case: str, form: str, runs: list[dict]) -> str:
    med = [r["latency_ms"] for r in runs]
    mm = statistics.median(med)
    spread = f"{(max(med) - min(med)) / mm:.1%}" if len(med) > 1 else "-"
    std = f"{statistics.stdev(med) / mm:.1%}" if len(med) > 1 else "-"
    iqr = statistics.median(r["latency_iqr_ms"] / r["latency_ms"] for r in runs)
    n = statistics.median(r["latency_runs"] for r in runs)
    shown = " ".join(f"{m:.4g}" for m in med)
    return (
        f"{case:<20} {form:<6} {len(med):>3} {n:>5.0f}  {mm:>9.4g} {spread:>7} {std:>8} {iqr:>8.1%}  {shown}"
    )


SPREAD_HEADER = (
    f"{'case':<20} {'form':<6} {'n':>3} {'runs':>5}  {'median ms':>9} {'spread':>7} {'std/med':>8} "
    f"{'IQR/med':>8}  medians ms (in order)"
)


def ratio_row(result: dict) -> str:
    d = [r["latency_ms"] for r in result["runs"]["deploy"]]
    t = [r["latency_ms"] for r in result["runs"]["train"]]
    ratios = [a / b for a, b in zip(t, d, strict=True)]
    bracket = f"[{min(ratios):.2f}-{max(ratios):.2f}]" if len(ratios) > 1 else ""
    return (
        f"{result['case']:<20} {statistics.median(t):>12.4g} {statistics.median(d):>13.4g} "
        f"{statistics.median(ratios):>12.2f} {bracket:<13} {len(ratios):>3}"
    )


RATIO_HEADER = (
    f"{'case':<20} {'train ms':>12} {'deploy ms':>13} {'train/deploy':>12} {'[min-max]':<13} {'n':>3}"
)


def _burn(stop) -> None:  # a competing process: what other trials on the machine do to a measurement
    x = torch.rand(256, 256)
    while not stop.is_set():
        x = (x @ x).clamp_(-1, 1)


def ratio_section(repeats: int) -> None:
    """The absolute median vs the ratio to the base timed interleaved (what a sweep trial logs), each
    call alternately with and without a competing process: the same load hits both figures."""
    import multiprocessing as mp

    from search.cost import latency

    _, gate, imgsz = build("gate", proxy=True)
    _, base, _ = build("keep", proxy=True)
    device = torch.device("cpu")
    figures: dict[str, list[tuple[float, float]]] = {"idle": [], "loaded": []}
    for r in range(repeats):
        loaded = r % 2 == 1
        stop = mp.Event()
        burner = mp.Process(target=_burn, args=(stop,), daemon=True) if loaded else None
        if burner:
            burner.start()
            time.sleep(0.5)
        timed = latency(gate, imgsz, device, reference=base)
        if burner:
            stop.set()
            burner.join()
        figures["loaded" if loaded else "idle"].append((timed["latency_ms"], timed["latency_ratio"]))
        print(f"  gate vs base, {'loaded' if loaded else 'idle'}: {timed['latency_ms']:.2f} ms, "
              f"ratio {timed['latency_ratio']:.3f}", flush=True)  # fmt: skip
    every = figures["idle"] + figures["loaded"]
    print(
        "\nabsolute median vs ratio to the base (interleaved), calls alternately idle and with a competing process"
    )
    print(f"{'figure':<22} {'idle mean':>10} {'loaded mean':>12} {'std/mean (all calls)':>21}")
    for k, name in ((0, "latency ms"), (1, "ratio to the base")):
        values = [f[k] for f in every]
        idle = statistics.fmean(f[k] for f in figures["idle"])
        busy = statistics.fmean(f[k] for f in figures["loaded"])
        print(
            f"{name:<22} {idle:>10.4g} {busy:>12.4g} {statistics.stdev(values) / statistics.fmean(values):>21.1%}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="proxy only, fewer repeats (< 1 min)")
    parser.add_argument(
        "--repeats", type=int, help="measurements of the proxy gate model per form (default 10, quick 4)"
    )
    parser.add_argument(
        "--full-repeats", type=int, default=2, help="measurements per form of each full-model case (2)"
    )
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[320, 640], help="full-model image sizes (320 640)"
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=230.0,
        help="skip full-model cases that would end the run later than this many s (230)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, like a CPU trial)")
    args = parser.parse_args()
    started = time.perf_counter()

    search.ultra.setup()  # quiet Ultralytics, our blocks registered in its yaml parser
    torch.set_num_threads(args.threads)
    repeats = args.repeats or (4 if args.quick else 10)
    if repeats < 2 or args.full_repeats < 1:
        parser.error("--repeats must be >= 2 and --full-repeats >= 1")
    from search.cost import device_name

    print(
        f"torch {torch.__version__}, torch.set_num_threads({torch.get_num_threads()}), "
        f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores"
    )
    print(f"device key: {device_name(torch.device('cpu'))}")
    print(f"load before: {load_average()}")
    print("search.cost.latency defaults: 3 warm-up, 10-50 timed forwards within ~3 s, median\n", flush=True)

    results = []
    for point, n in (("gate", repeats), ("ori", 2 if args.quick else 3)):
        train, deploy, imgsz = build(point, proxy=True)
        results.append(measure_case(f"proxy {point} @{imgsz}", train, deploy, imgsz, n))
    skipped = []
    if not args.quick:
        per_pixel: list[float] = []  # seconds per (call x pixel), from the full-model calls so far
        models: dict[str, tuple[nn.Module, nn.Module]] = {}
        for imgsz in args.sizes:
            for point in POINTS:
                name = f"full {point} @{imgsz}"
                calls = 2 * args.full_repeats
                estimate = statistics.median(per_pixel) * imgsz**2 * calls if per_pixel else 0.0
                elapsed = time.perf_counter() - started
                if elapsed + estimate > args.time_limit:
                    skipped.append(
                        f"{name}: skipped, estimated {estimate:.0f} s after {elapsed:.0f} s "
                        f"would pass --time-limit {args.time_limit:g} s"
                    )
                    print(f"  {skipped[-1]}", flush=True)
                    continue
                if point not in models:
                    train, deploy, _ = build(point, proxy=False)
                    models[point] = (train, deploy)
                result = measure_case(name, *models[point], imgsz, args.full_repeats)
                per_pixel.append(result["seconds"] / calls / imgsz**2)
                results.append(result)

    print(f"\nspread of the latency figure (each row: n measurements of one form, {repeats} max)")
    print(SPREAD_HEADER)
    print("-" * len(SPREAD_HEADER))
    for result in results:
        for form in ("deploy", "train"):
            print(spread_row(result["case"], form, result["runs"][form]))
    print("\ntraining form vs deploy form (medians of the measurements above)")
    print(RATIO_HEADER)
    print("-" * len(RATIO_HEADER))
    for result in results:
        print(ratio_row(result))
    for line in skipped:
        print(line)
    ratio_section(max(4, repeats))
    print(f"\nload after: {load_average()}   wall {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
