"""What an architecture costs to run, measured on its deploy form.

Deploy form: every GhostModuleV3 re-parameterised, then Ultralytics' conv+BN fuse. Parameters and
GFLOPs use Ultralytics' own counters (``get_num_params``, ``get_flops``) so the numbers read like the
ones Ultralytics prints. Latency is batch 1 in ``eval()`` and ``inference_mode`` after warm-up, the
median of repeated runs: on a GPU synchronised, in fp16 by default (as RT-DETR's papers quote it), at
least 200 timed runs; on the CPU in fp32. Measurements on one machine are serialised through a file
lock so trials never time each other; on a GPU, timing also waits for the training batch in flight on
that same GPU and holds off the next one (:class:`DeviceUse`), so packed trials never time under each
other's training. A cache keyed by architecture hash, device, precision and image size makes an
architecture measured once per device. :func:`onnx_latency` times an exported ONNX model with ONNX
Runtime, logged under its own name.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import logging
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from .provenance import code_version
from .ultra import cache_dir

__all__ = [
    "CostError",
    "DeviceUse",
    "PRECISIONS",
    "count_gflops",
    "deploy_form",
    "architecture_cost",
    "base_alone",
    "device_key",
    "device_name",
    "device_timing",
    "latency",
    "measure_cost",
    "model_cost",
    "onnx_latency",
    "timing_plan",
]

LOGGER = logging.getLogger(__name__)
COST_IMGSZ = 640  # GFLOPs are always quoted at 640x640, like Ultralytics and the papers
PRECISIONS = ("fp16", "fp32")


class CostError(RuntimeError):
    """A cost could not be measured."""


def deploy_form(model: nn.Module) -> nn.Module:
    """A deployable copy of an Ultralytics model: GhostModuleV3 re-parameterised, then Ultralytics' fuse."""
    import ghost_blocks

    deployed = ghost_blocks.reparameterize_model(model)
    deployed = deployed.fuse(verbose=False) if hasattr(deployed, "fuse") else deployed
    return deployed.eval()


def count_gflops(model: nn.Module, imgsz: int = COST_IMGSZ) -> float:
    """GFLOPs of one forward pass at ``imgsz`` x ``imgsz``, counted directly at that size.

    The counter is the one Ultralytics uses (thop, FLOPs = 2 x MACs), but run on the real input size:
    Ultralytics' ``get_flops`` extrapolates from inputs one stride high, where a gated GhostModuleV3 at
    a stride-32 site sees a 1-pixel-high map, skips its pooling and is costed unpooled. On models
    without such blocks both give the same figure (rtdetr-l: 105.7).
    """
    import thop

    p = next(model.parameters())
    image = torch.empty((1, p.shape[1] if p.ndim == 4 else 3, imgsz, imgsz), device=p.device, dtype=p.dtype)
    try:
        macs = thop.profile(model, inputs=[image], verbose=False)[0]
    except Exception as exc:
        raise CostError(f"the FLOPs counter failed on this model at {imgsz}x{imgsz}: {exc}") from exc
    if not macs > 0:
        raise CostError(f"the FLOPs counter found no operations in this model at {imgsz}x{imgsz}")
    return float(macs) / 1e9 * 2


def model_cost(deployed: nn.Module, imgsz: int = COST_IMGSZ) -> dict[str, float]:
    """Parameters (Ultralytics' counter) and GFLOPs (:func:`count_gflops`) of a deploy-form model."""
    from ultralytics.utils.torch_utils import get_num_params

    return {"n_params": int(get_num_params(deployed)), "gflops": count_gflops(deployed, imgsz)}


def architecture_cost(model_yaml: dict) -> dict[str, float]:
    """Parameters and GFLOPs of ``model_yaml``'s deploy form at 640: what ``--dry-run`` prints.

    Given the full-size yaml (no budget's scaling) this is the architecture a user would deploy, and
    every trial's cost objectives are these figures, whatever budget trained its proxy. Exact and cached
    per architecture and code version: no training, a few seconds for an rtdetr-l-sized model.
    """
    from ultralytics.nn.tasks import RTDETRDetectionModel

    from .materialize import arch_hash

    cache = cache_dir() / "cost" / f"deploy-{arch_hash(model_yaml)}-{COST_IMGSZ}-{code_version()}.json"
    with contextlib.suppress(ValueError, OSError):
        return json.loads(cache.read_text())
    model = RTDETRDetectionModel(copy.deepcopy(model_yaml), verbose=False)
    result = model_cost(deploy_form(model))
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, cache)
    return result


def base_alone(
    deployed: nn.Module, imgsz: int, device: torch.device, *, precision: str | None = None
) -> dict:
    """The base's latency timed alone, with nothing else running: median, p90 and IQR, and the device.

    Trials time themselves while others train beside them, which moves an absolute median by 30 % or
    more on a busy CPU; timed interleaved with the base (A, B, A, B), their ratio to it holds to about
    1 %. A sweep times the base alone once, before its trials, and each trial's latency on that device
    is this figure times its ratio: one latency per architecture, everywhere it is shown.
    """
    timed = latency(deployed, imgsz, device, **timing_plan(device, precision))
    keys = ("latency_ms", "latency_p90_ms", "latency_iqr_ms", "latency_runs")
    return {**{k: timed[k] for k in keys}, "latency_device": device_name(device)}


def device_name(device: torch.device) -> str:
    """A name for the hardware a latency was measured on (part of the cache key)."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"cpu:{cpu}:{torch.get_num_threads()}threads"


def _lock_file(name: str) -> Path:
    return (
        Path(os.environ.get("RTDETR_SEARCH_LOCK_DIR", tempfile.gettempdir()))
        / f"rtdetr-ghost-search-{name}.lock"
    )


@contextlib.contextmanager
def _flocked(name: str, mode: int) -> Iterator[None]:
    with open(_lock_file(name), "a") as fh:
        fcntl.flock(fh, mode)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _machine_lock():
    """One latency measurement at a time on this machine, across processes (Ray workers included)."""
    return _flocked("latency", fcntl.LOCK_EX)


def device_key(device: torch.device) -> str | None:
    """The physical GPU behind ``device``, named alike from every process whatever its
    ``CUDA_VISIBLE_DEVICES`` (Ray gives each trial its own); None for the CPU."""
    if device.type != "cuda":
        return None
    props = torch.cuda.get_device_properties(device)
    name = str(getattr(props, "uuid", "") or getattr(props, "pci_bus_id", "") or device.index or 0)
    return "gpu-" + "".join(c if c.isalnum() or c == "-" else "_" for c in name)


class DeviceUse:
    """Training's hold on one GPU, taken for each batch and released after it.

    Many trials may hold a GPU at once (packed trials, ``--gpus-per-trial 0.5``); :func:`device_timing`
    on that GPU waits for the batches in flight and holds off new ones while it times. New holds pass
    through a turnstile first, so a waiting timer is not starved by batches that follow each other.
    ``key`` None (the CPU) holds nothing.
    """

    def __init__(self, key: str | None):
        self.key = key
        self._fh = None

    def acquire(self) -> None:
        if self.key is None or self._fh is not None:
            return
        with _flocked(f"{self.key}-turnstile", fcntl.LOCK_EX):
            pass
        fh = open(_lock_file(self.key), "a")  # noqa: SIM115 - held across callbacks, closed in release
        fcntl.flock(fh, fcntl.LOCK_SH)
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            fh, self._fh = self._fh, None
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()


@contextlib.contextmanager
def device_timing(key: str | None) -> Iterator[None]:
    """Sole use of one GPU for a timing: no training batch of any process runs on it meanwhile."""
    if key is None:
        yield
        return
    with _flocked(f"{key}-turnstile", fcntl.LOCK_EX), _flocked(key, fcntl.LOCK_EX):
        yield


def timing_plan(device: torch.device, precision: str | None = None) -> dict:
    """How latency is timed on ``device``: fp16 on a GPU unless ``precision`` says fp32, at least 200
    synchronised runs; fp32 on the CPU (a bounded time budget: 2 shared cores are slow).

    Raises:
        CostError: fp16 asked for on the CPU.
    """
    if device.type == "cuda":
        return {"precision": precision or "fp16", "min_runs": 200, "max_runs": 2000, "budget_s": 4.0}
    if precision == "fp16":
        raise CostError("fp16 latency needs a CUDA device; on the CPU latency is timed in fp32")
    return {"precision": "fp32"}


def latency(
    deployed: nn.Module,
    imgsz: int,
    device: torch.device,
    *,
    reference: nn.Module | None = None,
    precision: str = "fp32",
    warmup: int = 3,
    min_runs: int = 10,
    max_runs: int = 50,
    budget_s: float = 3.0,
) -> dict[str, float]:
    """Batch-1 forward latency of a deploy-form model in milliseconds.

    Runs ``warmup`` untimed passes, then at least ``min_runs`` and at most ``max_runs`` timed ones,
    stopping early once ``budget_s`` is spent. Returns the median, p90 and interquartile range. On a
    GPU every run is synchronised, the models run in ``precision`` (``fp16``: a half copy), and no
    training batch runs on that GPU meanwhile (:func:`device_timing`).

    With a ``reference`` model (the sweep's base), the two are timed interleaved in one window (A, B,
    A, B ...; twice the budget), so load from other processes hits both alike, and the result adds
    ``latency_ratio`` (the median of the per-pair ratios A/B), ``latency_ratio_iqr`` and the
    reference's own ``reference_latency_ms``.
    """
    if precision not in PRECISIONS or (precision == "fp16" and device.type != "cuda"):
        raise CostError(f"latency precision {precision!r} on {device.type}: fp16 needs CUDA, else fp32")
    models = [deployed.to(device).eval()] + ([reference.to(device).eval()] if reference is not None else [])
    if precision == "fp16":
        models = [copy.deepcopy(m).half() for m in models]
    inputs = [torch.rand(1, 3, imgsz, imgsz, device=device, dtype=next(m.parameters()).dtype) for m in models]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times: list[list[float]] = [[] for _ in models]
    budget = budget_s * len(models)
    with _machine_lock(), device_timing(device_key(device)), torch.inference_mode():
        window_start = time.time()
        for _ in range(warmup):
            for model, x in zip(models, inputs, strict=True):
                model(x)
        sync()
        start = time.perf_counter()
        while len(times[0]) < max_runs and (len(times[0]) < min_runs or time.perf_counter() - start < budget):
            for k, (model, x) in enumerate(zip(models, inputs, strict=True)):
                t0 = time.perf_counter()
                model(x)
                sync()
                times[k].append((time.perf_counter() - t0) * 1000)
        window_end = time.time()
    out = {
        **_spread(times[0], "latency"),
        "latency_runs": len(times[0]),
        "latency_window": [window_start, window_end],
        "latency_precision": precision,
    }
    if reference is not None:
        ratios = [a / b for a, b in zip(times[0], times[1], strict=True)]
        ratio = _spread(ratios, "latency_ratio")
        out.update(
            latency_ratio=ratio["latency_ratio"],
            latency_ratio_iqr=ratio["latency_ratio_iqr"],
            reference_latency_ms=statistics.median(times[1]),
        )
    return out


def _spread(values: list[float], name: str) -> dict[str, float]:
    """``name`` (the median), ``name_p90`` and ``name_iqr`` of repeated timings (ms) or ratios."""
    q = statistics.quantiles(values, n=20, method="inclusive")  # 5% steps
    q1, q3 = statistics.quantiles(values, n=4, method="inclusive")[0::2]
    unit = "_ms" if name == "latency" else ""
    return {
        f"{name}{unit}": statistics.median(values),
        f"{name}_p90{unit}": q[17],
        f"{name}_iqr{unit}": q3 - q1,
    }


def _cache_file(arch_hash: str, device: str, imgsz: int, *, precision: str) -> Path:
    # code_version covers the blocks' code, the cost code and the torch and Ultralytics versions
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in device)
    return cache_dir() / "cost" / f"{arch_hash}-{safe}-{imgsz}-{precision}-{code_version()}.json"


def onnx_latency(onnx_path: Path, imgsz: int, device: torch.device, **plan) -> dict:
    """Batch-1 latency of an exported ONNX model with ONNX Runtime, as ``latency_ort_*`` figures.

    CUDA's execution provider on a GPU where ONNX Runtime has it, else the CPU's; the provider used is
    returned as ``latency_ort_provider``. Timed like :func:`latency` (``plan``: ``warmup``,
    ``min_runs``, ``max_runs``, ``budget_s``), under the same locks, in the model's own precision (fp32).
    """
    import numpy as np
    import onnxruntime as ort

    wanted = ["CUDAExecutionProvider"] if device.type == "cuda" else []
    providers = [p for p in wanted if p in ort.get_available_providers()] + ["CPUExecutionProvider"]
    options = ort.SessionOptions()
    if device.type == "cpu":
        options.intra_op_num_threads = torch.get_num_threads()  # the trial's share of the CPUs, like torch
    session = ort.InferenceSession(str(onnx_path), options, providers=providers)
    feed = {session.get_inputs()[0].name: np.random.rand(1, 3, imgsz, imgsz).astype(np.float32)}
    warmup, min_runs = plan.get("warmup", 3), plan.get("min_runs", 10)
    max_runs, budget = plan.get("max_runs", 50), plan.get("budget_s", 3.0)
    times: list[float] = []
    with _machine_lock(), device_timing(device_key(device)):
        for _ in range(warmup):
            session.run(None, feed)
        start = time.perf_counter()
        while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() - start < budget):
            t0 = time.perf_counter()
            session.run(None, feed)  # returns host arrays: the run is complete
            times.append((time.perf_counter() - t0) * 1000)
    spread = _spread(times, "latency")
    return {
        **{k.replace("latency", "latency_ort", 1): v for k, v in spread.items()},
        "latency_ort_provider": session.get_providers()[0],
        "latency_ort_runs": len(times),
    }


def measure_cost(
    model: nn.Module,
    arch_hash: str,
    *,
    latency_imgsz: int,
    device: torch.device | str = "cpu",
    use_cache: bool = True,
    reference: nn.Module | None = None,
    precision: str | None = None,
) -> dict:
    """Params, GFLOPs (at 640) and latency (at ``latency_imgsz``) of ``model``'s deploy form.

    With a ``reference`` model (the base, as built: its deploy form is taken here), latency is timed
    interleaved with it and the result adds ``latency_ratio`` (see :func:`latency`); otherwise
    ``latency_ratio`` is NaN. ``precision``: see :func:`timing_plan` (None: fp16 on a GPU, fp32 on the
    CPU); the result names it, the device, and the torch and CUDA versions it was timed with. Results
    are cached per (architecture hash, device, latency image size, precision, code version: the blocks'
    and the cost code, torch and Ultralytics); a cached entry is returned as is with
    ``cost_cached=True``. A measurement against a reference is never served from the cache.
    """
    device = torch.device(device)
    plan = timing_plan(device, precision)
    name = device_name(device)
    cache = _cache_file(arch_hash, name, latency_imgsz, precision=plan["precision"])
    if use_cache and reference is None and cache.exists():
        with contextlib.suppress(ValueError, OSError):
            return {**json.loads(cache.read_text()), "cost_cached": True}
    deployed = deploy_form(model.to("cpu"))
    result = {
        **model_cost(deployed),
        "latency_device": name,
        "latency_imgsz": latency_imgsz,
        "latency_torch": torch.__version__,
        "latency_cuda": torch.version.cuda or "none",
    }
    result["latency_ratio"] = result["latency_ratio_iqr"] = math.nan
    ref = deploy_form(reference.to("cpu")) if reference is not None else None
    result.update(latency(deployed, latency_imgsz, device, reference=ref, **plan))
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, cache)  # atomic: a concurrent reader sees the old file or the whole new one
    return {**result, "cost_cached": False}
