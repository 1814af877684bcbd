"""What the tests share: tiny training budgets, a throwaway MLflow store and a finished sweep's runs, the
report's tables, a small space with an inserted block, and random BatchNorm statistics."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import mlflow
import torch
from torch import nn

from search.records import EXPERIMENT, ROLE_ARCH, ROLE_PARENT, ROLE_TRIAL, Tag


def tiny(epochs: int = 1, fraction: float = 0.25) -> list[str]:
    """The flags of a tiny training budget: ``epochs`` at 64 px in batches of 8 on ``fraction`` of the data."""
    return ["--epochs", str(epochs), "--imgsz", "64", "--batch", "8", "--fraction", str(fraction)]


TINY = tiny()  # one epoch on a quarter of the built-in data at 64 px: what most trained tests use
TINY_BUDGET = {"epochs": 1, "imgsz": 64, "batch": 8, "fraction": 0.25}  # the same, as budget overrides


def uri(folder: Path) -> str:
    """An embedded MLflow store in ``folder``."""
    return f"sqlite:///{folder / 'mlflow.db'}"


def sweep_runs(tracking_uri: str, sweep: str | None = None):
    """``(parent, architectures, trials, client)`` of the experiment's one sweep (or the sweep named ``sweep``).

    Every architecture run is a child of the parent; every trial run (one seed) a child of an architecture.
    """
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    everything = client.search_runs([exp.experiment_id], max_results=5000)
    if sweep is not None:
        everything = [r for r in everything if r.data.tags.get(Tag.SWEEP) == sweep]
    parents = [r for r in everything if r.data.tags.get(Tag.ROLE) == ROLE_PARENT]
    assert len(parents) == 1, "one parent run per sweep"
    parent = parents[0]
    archs = [r for r in everything if r.data.tags.get(Tag.ROLE) == ROLE_ARCH]
    assert all(a.data.tags[Tag.PARENT] == parent.info.run_id for a in archs)
    arch_ids = {a.info.run_id for a in archs}
    trials = [r for r in everything if r.data.tags.get(Tag.ROLE) == ROLE_TRIAL]
    assert all(t.data.tags[Tag.PARENT] in arch_ids for t in trials), "every seed sits under its architecture"
    assert len(everything) == 1 + len(archs) + len(trials)
    return parent, archs, trials, client


def last_epoch(tmp: Path, run: mlflow.entities.Run) -> int:
    """The last epoch ``run`` has logged its training losses for (0: none yet)."""
    history = mlflow.MlflowClient(tracking_uri=uri(tmp)).get_metric_history(
        run.info.run_id, "train/giou_loss"
    )
    return max((m.step for m in history), default=0)


class Tables(HTMLParser):
    """Every <table>: its attributes and rows of (text, attributes) cells."""

    def __init__(self, doc: str) -> None:
        super().__init__()
        self.tables: list[tuple[dict, list[list[tuple[str, dict]]]]] = []
        self.cell: list | None = None
        self.feed(doc)

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append((dict(attrs), []))
        elif tag == "tr" and self.tables:
            self.tables[-1][1].append([])
        elif tag == "td":
            self.cell = ["", dict(attrs)]

    def handle_data(self, data):
        if self.cell is not None:
            self.cell[0] += data

    def handle_endtag(self, tag):
        if tag == "td" and self.cell is not None:
            self.tables[-1][1][-1].append(tuple(self.cell))
            self.cell = None

    def find(self, **attrs) -> list[list[tuple[str, dict]]]:
        hits = [rows for a, rows in self.tables if all(a.get(k) == v for k, v in attrs.items())]
        assert len(hits) == 1, attrs
        return [r for r in hits[0] if r]  # body rows only


def tiny_space(name: str, sites: str, *, cpu_extra: str = "ffn: 256, denoising: 20") -> str:
    """A space file on rtdetr-l: mAP up and GFLOPs down, a tiny ``cpu`` proxy budget (plus ``cpu_extra``
    keys) and a tiny ``full`` one, and ``sites`` (the yaml under ``sites:``, indented two spaces)."""
    return f"""
name: {name}
base: rtdetr-l
objectives:
  - {{metric: map50_95, direction: maximize}}
  - {{metric: gflops, direction: minimize}}
budgets:
  cpu: {{epochs: 1, imgsz: 64, batch: 8, fraction: 0.25, width: 0.25, depth: 0.34, hidden_dim: 64, queries: 100,
        {cpu_extra}}}
  full: {{epochs: 1, imgsz: 64, batch: 8}}
sites:
{sites}"""


# a space with one site whose choice inserts a block after layer 3, so the layers after it move
INSERT_SPACE = tiny_space(
    "insert",
    """  stage2:
    layer: 3
    choices:
      keep: keep
      after: {op: insert, block: GhostModuleV3, mode: ori}
""",
)


def layer_tensors(state: dict, index: int) -> dict[str, torch.Tensor]:
    """The tensors of layer ``index`` of a model's state dict, by their names inside the layer."""
    prefix = f"model.{index}."
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def randomize_bn(module: nn.Module, seed: int = 0) -> None:
    """Random BatchNorm statistics and affine parameters, so an equivalence test cannot pass by accident."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
