"""CPU latency of GhostModuleV3's training form, its deploy form, and a plain GhostNet module.

Run: ``.venv/bin/python bench/reparam.py [--quick] [--threads N]``

Everything is measured in one run, on this CPU, side by side: batch 1, ``eval()``,
``torch.inference_mode()``, a warm-up, then repeated forwards timed in an interleaved order
(train, deploy, ghostv1, deploy, ghostv1, train, ...) so that load from other processes hits every
variant alike. Each cell is the median in ms with the interquartile range in brackets.

Variants, for both modes (``ori`` and ``ori_shortcut_mul_conv15``):

- ``train``:   GhostModuleV3 as trained (three conv+BN branches, a 1x1 scale branch, BN skips).
- ``deploy``:  the same module after ``reparameterize()`` (one conv with bias per branch).
- ``ghostv1``: a plain GhostNet-v1 module of the same shapes built from convs with bias, i.e. already
  BN-fused: ``k x k`` conv c1 -> ceil(c2/2) with stride s + ReLU, depthwise ``dw_size`` conv + ReLU,
  concat, crop to c2. For ``ori_shortcut_mul_conv15`` it also carries the plain (fused) gate
  ``sigmoid(conv k -> conv 1x5 -> conv 5x1 of avg_pool2d(x))``, GhostNetV2's DFC attention, since
  that gate is part of the mode. It is loaded with the deploy form's weights (a strict
  ``load_state_dict``, which proves the shapes match), so it computes the same function.

Cases: single modules at RT-DETR's shapes, and the whole rtdetr-l model with backbone layer 5
replaced by ``[-1, 2, GhostModuleV3, [512, 3, 1, mode]]``. For the model, Ultralytics' ``fuse()``
(its Conv+BN, RepConv) is applied to all three, so only layer 5 differs: unfused-ghost + fused rest,
deployed-ghost + fused rest, plain GhostNet-v1 + fused rest.

Reading the ratios:

- ``train/deploy`` > 1 is what re-parameterisation buys at inference (how much slower the model
  would be if shipped in its training form).
- ``deploy/ghostv1`` ~= 1.00 means the deploy form is as fast as the ideal, a hand-written ghost
  module; above 1 is overhead left in GhostModuleV3's deploy forward. Differences within the IQRs
  are noise.

``max|deploy-train|`` is the largest absolute difference between the deploy and training outputs
(BatchNorm statistics randomised first, so the check cannot pass by accident); for the model it is
taken over the three feature maps fed to the decoder (its top-k query selection may reorder
near-tied queries on float-level differences, so its output is not compared element-wise; these
maps are O(0.01-0.2) on a freshly initialised model). ``max|v1-deploy|`` checks the ghostv1
stand-in the same way. Nothing is written to disk.

Threads: one by default, so that the ratios stay stable when other processes share the cores
(multi-threaded torch slows down erratically under contention); ``--threads N`` for all-core numbers.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
import yaml
from torch import nn

import search.ultra

search.ultra.offline()  # before anything imports ultralytics (ghost_blocks does)

if TYPE_CHECKING:
    from ghost_blocks import GhostModuleV3

MODES = ("ori", "ori_shortcut_mul_conv15")  # ghost_blocks.MODES, without importing it before setup
# (c1, c2, k, s, input size): RT-DETR's shapes at 640x640.
MODULE_CASES = [
    (512, 512, 3, 1, 40),  # backbone stage 3 (P4/16), the hand-placed layer 5
    (256, 256, 3, 2, 80),  # neck downsampling conv, P3 -> P4
    (256, 256, 1, 1, 40),  # neck lateral 1x1 conv
]


class GhostV1(nn.Module):
    """A plain GhostNet-v1 module with already fused (biased) convs; attribute names follow the
    deploy form of GhostModuleV3 so that its state_dict loads strictly."""

    def __init__(self, c1: int, c2: int, k: int, s: int, mode: str, dw_size: int = 3):
        super().__init__()
        init = math.ceil(c2 / 2)
        self.c2, self.mode = c2, mode
        self.primary_conv = nn.Sequential(nn.Conv2d(c1, init, k, s, k // 2), nn.ReLU(inplace=True))
        self.cheap_operation = nn.Sequential(
            nn.Conv2d(init, init, dw_size, 1, dw_size // 2, groups=init), nn.ReLU(inplace=True)
        )
        if mode == "ori_shortcut_mul_conv15":
            self.short_conv = nn.Sequential(
                nn.Conv2d(c1, c2, k, s, k // 2),
                nn.Conv2d(c2, c2, (1, 5), 1, (0, 2), groups=c2),
                nn.Conv2d(c2, c2, (5, 1), 1, (2, 0), groups=c2),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.primary_conv(x)
        out = torch.cat((x1, self.cheap_operation(x1)), dim=1)[:, : self.c2]
        if self.mode == "ori":
            return out
        gate = torch.sigmoid(self.short_conv(F.avg_pool2d(x, kernel_size=2, stride=2)))
        return out * F.interpolate(gate, size=out.shape[-2:], mode="nearest")


def ghostv1_like(deployed: GhostModuleV3) -> GhostV1:
    plain = GhostV1(deployed.c1, deployed.c2, deployed.k, deployed.s, deployed.mode, deployed.dw_size)
    plain.load_state_dict(deployed.state_dict())  # strict: any shape difference fails here
    return plain.eval()


def randomize_bn(model: nn.Module) -> None:
    """Random BatchNorm statistics and affine terms, mild enough to keep a deep model's activations sane."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)


def time_interleaved(
    fns: dict[str, Callable], x: torch.Tensor, warmup: int, reps: int
) -> dict[str, list[float]]:
    """Milliseconds per call for each function, timed round-robin with a rotating start."""
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    with torch.inference_mode():
        for _ in range(warmup):
            for n in names:
                fns[n](x)
        for r in range(reps):
            for n in names[r % len(names) :] + names[: r % len(names)]:
                t0 = time.perf_counter()
                fns[n](x)
                times[n].append((time.perf_counter() - t0) * 1e3)
    return times


def summary(ms: list[float]) -> tuple[float, float]:
    q1, q2, q3 = statistics.quantiles(ms, n=4, method="inclusive")
    return q2, q3 - q1


def max_diff(a, b) -> float:
    """Largest absolute difference between two tensors or (nested) sequences of tensors."""
    if isinstance(a, torch.Tensor):
        return (a - b).abs().max().item()
    return max((max_diff(u, v) for u, v in zip(a, b, strict=True)), default=0.0)


# ----------------------------------------------------------------------------------- cases
def module_case(c1: int, c2: int, k: int, s: int, size: int, mode: str, warmup: int, reps: int) -> dict:
    from ghost_blocks import GhostModuleV3

    train = GhostModuleV3(c1, c2, k, s, mode)
    randomize_bn(train)
    train.eval()
    deploy = copy.deepcopy(train).reparameterize().eval()
    v1 = ghostv1_like(deploy)
    x = torch.randn(1, c1, size, size)
    fns = {"train": train, "deploy": deploy, "ghostv1": v1}
    with torch.inference_mode():
        out = {n: f(x) for n, f in fns.items()}
    return {
        "case": f"{c1}->{c2} k{k} s{s} @{size} {mode}",
        "times": time_interleaved(fns, x, warmup, reps),
        "diff": max_diff(out["deploy"], out["train"]),
        "v1diff": max_diff(out["ghostv1"], out["deploy"]),
    }


def build_models(mode: str) -> dict[str, nn.Module]:
    from ultralytics.nn.tasks import RTDETRDetectionModel
    from ultralytics.utils import ROOT

    import ghost_blocks

    d = yaml.safe_load((ROOT / "cfg/models/rt-detr/rtdetr-l.yaml").read_text())
    d["backbone"][5] = [-1, 2, "GhostModuleV3", [512, 3, 1, mode]]
    d["scale"] = "l"  # what Ultralytics infers from the file name "rtdetr-l.yaml"
    torch.manual_seed(0)
    base = RTDETRDetectionModel(d, nc=80, verbose=False).eval()
    randomize_bn(base.model[5])
    deploy = ghost_blocks.reparameterize_model(base)  # a copy
    # Ultralytics' fuse on both: it folds its own Conv+BN and RepConv, never GhostModuleV3.
    train = copy.deepcopy(base).fuse(verbose=False).eval()
    deploy = deploy.fuse(verbose=False).eval()
    v1 = copy.deepcopy(deploy)
    old = v1.model[5]
    new = nn.Sequential(*(ghostv1_like(m) for m in old))
    new.i, new.f, new.type, new.np = old.i, old.f, "GhostV1", sum(p.numel() for p in new.parameters())
    v1.model[5] = new
    return {"train": train, "deploy": deploy, "ghostv1": v1}


def decoder_inputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The three feature maps the model feeds its RT-DETR decoder.

    The decoder's own output is a top-k query selection: float-level differences may swap two
    near-tied queries, so comparing it element by element would flag an exact re-parameterisation.
    """
    feats: list = []
    hook = model.model[-1].register_forward_pre_hook(lambda _m, args: feats.append(args[0]))
    try:
        with torch.inference_mode():
            model(x)
    finally:
        hook.remove()
    return feats[0]


def model_case(models: dict[str, nn.Module], mode: str, imgsz: int, warmup: int, reps: int) -> dict:
    x = torch.rand(1, 3, imgsz, imgsz)
    out = {n: decoder_inputs(m, x) for n, m in models.items()}
    return {
        "case": f"rtdetr-l L5 @{imgsz} {mode}",
        "times": time_interleaved(models, x, warmup, reps),
        "diff": max_diff(out["deploy"], out["train"]),
        "v1diff": max_diff(out["ghostv1"], out["deploy"]),
    }


# ----------------------------------------------------------------------------------- report
HEADER = (
    f"{'case':<42} {'train ms':>17} {'deploy ms':>17} {'ghostv1 ms':>17} "
    f"{'train/deploy':>12} {'deploy/ghostv1':>14} {'max|deploy-train|':>17} {'max|v1-deploy|':>14}"
)


def row(result: dict) -> str:
    stats = {n: summary(t) for n, t in result["times"].items()}
    cells = [f"{m:8.2f} [{iqr:6.2f}]" for m, iqr in stats.values()]
    ratio_td = stats["train"][0] / stats["deploy"][0]
    ratio_dv = stats["deploy"][0] / stats["ghostv1"][0]
    return (
        f"{result['case']:<42} {cells[0]:>17} {cells[1]:>17} {cells[2]:>17} "
        f"{ratio_td:12.2f} {ratio_dv:14.2f} {result['diff']:17.2e} {result['v1diff']:14.2e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, model at 320 only (< 1 min)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1: stable ratios on shared cores)"
    )
    args = parser.parse_args()

    search.ultra.setup()  # quiet Ultralytics, our blocks registered in its yaml parser
    import ghost_blocks

    if ghost_blocks.MODES != MODES:
        raise RuntimeError(f"ghost_blocks.MODES changed to {ghost_blocks.MODES}; update MODES here")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # The output check runs each variant once before timing, on top of the warm-up.
    mod_warmup, mod_reps = (1, 7) if args.quick else (3, 21)
    mdl_warmup, mdl_reps = (1, 3) if args.quick else (1, 7)
    sizes = [320] if args.quick else [320, 640]

    print(
        f"torch {torch.__version__}, torch.set_num_threads({torch.get_num_threads()}), "
        f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores"
    )
    print(
        f"modules: warm-up {mod_warmup}, {mod_reps} timed runs; model: warm-up {mdl_warmup}, {mdl_reps} timed runs"
    )
    print("cells: median ms [IQR]\n")
    print(HEADER)
    print("-" * len(HEADER))
    for mode in MODES:
        for c1, c2, k, s, size in MODULE_CASES:
            print(row(module_case(c1, c2, k, s, size, mode, mod_warmup, mod_reps)), flush=True)
    for mode in MODES:
        models = build_models(mode)
        for imgsz in sizes:
            print(row(model_case(models, mode, imgsz, mdl_warmup, mdl_reps)), flush=True)


if __name__ == "__main__":
    main()
