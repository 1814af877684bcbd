"""Space files: the shipped spaces parse, and every kind of bad file fails with a one-line message."""

from __future__ import annotations

import copy
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from search.space import (
    MODES,
    SPACES_DIR,
    Budget,
    Space,
    SpaceError,
    list_spaces,
    load_base,
    load_space,
    parse_space,
    validate_params,
)

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")

SHIPPED = ("placements", "modes", "blocks")


def good() -> dict:
    """A small valid space on rtdetr-l; each bad case below breaks one thing in it."""
    return {
        "name": "t",
        "description": "test space",
        "base": "rtdetr-l",
        "objectives": [
            {"metric": "map50_95", "direction": "maximize"},
            {"metric": "latency_ms", "direction": "minimize"},
        ],
        "constraints": {"max_latency_ms": None, "max_gflops": 200},
        "budgets": {
            "cpu": {
                "epochs": 2,
                "imgsz": 160,
                "batch": 4,
                "width": 0.25,
                "depth": 0.34,
                "hidden_dim": 64,
                "queries": 100,
                "workers": 0,
            },
            "full": {"epochs": 72, "imgsz": 640, "batch": 16},
        },
        "sites": {
            "s1": {
                "layer": 3,
                "choices": {
                    "keep": "keep",
                    "g": {"op": "replace", "block": "GhostModuleV3", "mode": "ori"},
                },
            },
            "s2": {
                "layer": 12,
                "choices": {
                    "keep": "keep",
                    "i": {"op": "insert", "block": "GhostModuleV3", "mode": "ori_shortcut_mul_conv15"},
                },
            },
        },
    }


def _write(tmp_path: Path, data: dict, name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# ----------------------------------------------------------------------------- shipped spaces


def test_list_spaces_has_the_shipped_ones():
    assert set(SHIPPED) <= set(list_spaces())


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_space_parses(name):
    space = load_space(name)
    assert isinstance(space, Space)
    assert space.name == name
    assert space.path == str(SPACES_DIR / f"{name}.yaml")
    assert space.base == "rtdetr-l"
    assert len(space.base_yaml["backbone"] + space.base_yaml["head"]) == 29
    assert space.objectives[0].metric == "map50_95" and space.objectives[0].direction == "maximize"
    assert {"cpu", "full"} <= set(space.budgets)
    assert space.budgets["cpu"].is_proxy and not space.budgets["full"].is_proxy
    assert space.budgets["full"].imgsz == 640
    assert all(s.default == "keep" for s in space.sites)
    assert sum(1 for _ in space.points()) == space.size
    assert space.point(space.size - 1) == {s.name: s.choices[-1].name for s in space.sites}


def test_shipped_space_sizes():
    assert load_space("modes").size == 3
    placements = load_space("placements")
    assert 8 <= len(placements.sites) <= 10
    # every site replaces; the backbone stages and the neck blocks may also insert after the layer
    inserting = [s for s in placements.sites if any(c.op == "insert" for c in s.choices)]
    assert {s.layer for s in inserting} == {1, 3, 7, 16, 27}
    assert placements.size == 3 ** (len(placements.sites) - len(inserting)) * 5 ** len(inserting)
    assert {c.mode for s in inserting for c in s.choices if c.op == "insert"} == {
        "ori",
        "ori_shortcut_mul_conv15",
    }
    assert load_space("blocks").size == 3 ** len(load_space("blocks").sites)


def test_modes_space_choices():
    site = load_space("modes").site("stage3")
    assert site.layer == 5
    ori = site.choice("ori")
    assert (ori.op, ori.block, ori.mode, ori.args, ori.repeats) == (
        "replace",
        "GhostModuleV3",
        "ori",
        (512, 3, 1),
        2,
    )
    assert site.choice("gate").mode == "ori_shortcut_mul_conv15"


def test_modes_match_ghost_blocks():
    import ghost_blocks

    assert MODES == ghost_blocks.MODES


def test_load_space_by_path_and_missing_name(tmp_path):
    path = _write(tmp_path, good(), "mine.yaml")
    assert load_space(str(path)).name == "t"
    with pytest.raises(SpaceError, match="no space named 'nope'"):
        load_space("nope")
    with pytest.raises(SpaceError, match="no such space file"):
        load_space(str(tmp_path / "missing.yaml"))


def test_relative_base_path(tmp_path):
    _, rtdetr_l = load_base("rtdetr-l")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "my.yaml").write_text(yaml.safe_dump(rtdetr_l))
    data = good()
    data["base"] = "models/my.yaml"
    space = load_space(str(_write(tmp_path, data, "s.yaml")))
    assert space.base == str((tmp_path / "models" / "my.yaml").resolve())
    assert space.base_yaml == rtdetr_l


def test_parse_space_with_given_base_does_no_io():
    _, base = load_base("rtdetr-l")
    data = good()
    data["base"] = "not-a-file.yaml"  # never read: base_yaml is given
    assert parse_space(data, "x.yaml", base_yaml=base).base_yaml is base


def test_parse_space_does_not_mutate_its_input():
    data = good()
    before = copy.deepcopy(data)
    parse_space(data, "x.yaml")
    assert data == before


def test_size_one_space_is_allowed():
    data = good()
    data["sites"] = {
        "only": {"layer": 5, "choices": {"g": {"op": "replace", "block": "GhostModuleV3", "mode": "ori"}}}
    }
    space = parse_space(data, "x.yaml")
    assert space.size == 1 and list(space.points()) == [{"only": "g"}]


def test_one_site_may_replace_a_layer_in_several_choices_and_others_may_insert_there():
    data = good()
    data["sites"]["s1"]["choices"]["g2"] = {"op": "replace", "block": "HGBlockGhostV3", "mode": "ori"}
    data["sites"]["s3"] = {
        "layer": 3,
        "choices": {"keep": "keep", "i": {"op": "insert", "block": "GhostModuleV3", "mode": "ori"}},
    }
    data["sites"]["s4"] = {
        "layer": 9,
        "choices": {"keep": "keep", "i": {"op": "insert", "block": "GhostModuleV3", "mode": "ori"}},
    }  # last backbone layer
    assert parse_space(data, "x.yaml").size == 3 * 2 * 2 * 2


def test_budget_fields():
    cpu = parse_space(good(), "x.yaml").budgets["cpu"]
    assert cpu == Budget("cpu", 2, 160, 4, width=0.25, depth=0.34, hidden_dim=64, queries=100, workers=0)


# ----------------------------------------------------------------------------- points and params


def test_points_order_and_random_points():
    space = parse_space(good(), "x.yaml")
    points = list(space.points())
    assert points == [{"s1": a, "s2": b} for a in ("keep", "g") for b in ("keep", "i")]
    assert [space.point(i) for i in range(space.size)] == points
    draw = space.random_points(4, seed=3)
    assert draw == space.random_points(4, seed=3)
    assert sorted(map(str, draw)) == sorted(map(str, points))  # distinct: all 4
    assert len(space.random_points(9, seed=0)) == 9
    big = load_space("placements")
    draw = big.random_points(50, seed=1)
    assert len({tuple(p.values()) for p in draw}) == 50
    assert draw != big.random_points(50, seed=2)


def test_validate_params():
    space = parse_space(good(), "spaces/t.yaml")
    assert list(validate_params(space, {"s2": "i", "s1": "g"})) == ["s1", "s2"]
    assert validate_params(space, {"s2": "i"}) == {"s1": "keep", "s2": "i"}
    with pytest.raises(SpaceError, match=r"^spaces/t.yaml: params.zz: unknown site"):
        validate_params(space, {"zz": "keep"})
    with pytest.raises(
        SpaceError, match=r"^spaces/t.yaml: params.s1: unknown choice 'x' \(expected keep, g\)"
    ):
        validate_params(space, {"s1": "x"})
    data = good()
    del data["sites"]["s1"]["choices"]["keep"]
    space = parse_space(data, "spaces/t.yaml")
    with pytest.raises(SpaceError, match="params.s1: missing, and the site has no 'keep' choice"):
        validate_params(space, {})


# ----------------------------------------------------------------------------- bad files


def _set(path: str, value) -> Callable[[dict], None]:
    """A mutation that sets a dotted path (creating nothing but the last key)."""

    def apply(d: dict) -> None:
        *parents, last = path.split(".")
        for p in parents:
            d = d[int(p)] if isinstance(d, list) else d[p]
        d[last] = value

    return apply


def _del(path: str) -> Callable[[dict], None]:
    def apply(d: dict) -> None:
        *parents, last = path.split(".")
        for p in parents:
            d = d[p]
        del d[last]

    return apply


def _both(*fns: Callable[[dict], None]) -> Callable[[dict], None]:
    def apply(d: dict) -> None:
        for fn in fns:
            fn(d)

    return apply


G = "sites.s1.choices.g"
BAD = {
    "unknown top key": (_set("colour", 1), "colour", "unknown key"),
    "missing top key": (_del("objectives"), "objectives", "missing required key"),
    "unknown site key": (_set("sites.s1.weight", 2), "sites.s1.weight", "unknown key"),
    "missing site key": (_del("sites.s1.layer"), "sites.s1.layer", "missing required key"),
    "unknown choice key": (_set(f"{G}.colour", 1), f"{G}.colour", "unknown key"),
    "missing choice mode": (_del(f"{G}.mode"), f"{G}.mode", "missing required key"),
    "missing choice op": (_del(f"{G}.op"), f"{G}.op", "missing required key"),
    "layer too big": (_set("sites.s1.layer", 29), "sites.s1.layer", "layer 29 is outside the base model"),
    "layer negative": (_set("sites.s1.layer", -1), "sites.s1.layer", "outside the base model"),
    "unknown block": (_set(f"{G}.block", "Foo"), f"{G}.block", "unknown block 'Foo'"),
    "unknown mode": (
        _set(f"{G}.mode", "foo"),
        f"{G}.mode",
        "unknown mode 'foo' (expected ori, ori_shortcut_mul_conv15)",
    ),
    "unknown op": (_set(f"{G}.op", "swap"), f"{G}.op", "unknown op 'swap'"),
    "replace HGStem": (_set("sites.s1.layer", 0), G, "cannot replace layer 0 (HGStem)"),
    "replace AIFI": (_set("sites.s1.layer", 11), G, "cannot replace layer 11 (AIFI)"),
    "replace Upsample": (_set("sites.s1.layer", 13), G, "cannot replace layer 13 (nn.Upsample)"),
    "replace Concat": (_set("sites.s1.layer", 15), G, "cannot replace layer 15 (Concat)"),
    "replace decoder": (_set("sites.s1.layer", 28), G, "cannot replace layer 28 (RTDETRDecoder)"),
    "fused on DWConv": (
        _both(_set("sites.s1.layer", 2), _set(f"{G}.block", "HGBlockGhostV3")),
        G,
        "HGBlockGhostV3 can only replace HGBlock, layer 2 is DWConv: choice makes channels not fit",
    ),
    "RepC3GhostV3 on HGBlock": (
        _set(f"{G}.block", "RepC3GhostV3"),
        G,
        "RepC3GhostV3 can only replace RepC3, layer 3 is HGBlock: choice makes channels not fit",
    ),
    "ghost c2 zero": (
        _set(f"{G}.args", [0, 3, 1]),
        f"{G}.args",
        "GhostModuleV3 c2 must be a positive int, got 0",
    ),
    "ghost c2 float": (_set(f"{G}.args", [1.5]), f"{G}.args", "c2 must be a positive int, got 1.5"),
    "ghost c2 bool": (_set(f"{G}.args", [True]), f"{G}.args", "c2 must be a positive int, got True"),
    "mode in args": (_set(f"{G}.args", [64, 3, 1, "ori"]), f"{G}.args", "without the mode"),
    "too many args": (_set(f"{G}.args", [64, 3, 1, 1]), f"{G}.args", "takes [c2, k, s]"),
    "even kernel": (_set(f"{G}.args", [64, 2, 1]), f"{G}.args", "k must be odd"),
    "zero repeats": (_set(f"{G}.repeats", 0), f"{G}.repeats", "expected a positive int"),
    "insert after decoder": (
        _set("sites.s2.layer", 28),
        "sites.s2.choices.i",
        "cannot insert after layer 28 (RTDETRDecoder)",
    ),
    "insert fused without args": (
        _set("sites.s2.choices.i.block", "RepC3GhostV3"),
        "sites.s2.choices.i",
        "inserting RepC3GhostV3 needs explicit args",
    ),
    "two sites replace one layer": (
        _set(
            "sites.s2",
            {
                "layer": 3,
                "choices": {"keep": "keep", "o": {"op": "replace", "block": "GhostModuleV3", "mode": "ori"}},
            },
        ),
        "sites.s2.choices.o.op",
        "layer 3 is already replaced by site 's1'",
    ),
    "no sites": (_set("sites", {}), "sites", "a space needs at least one site"),
    "only keep": (
        _set(
            "sites",
            {"a": {"layer": 3, "choices": {"keep": "keep"}}, "b": {"layer": 5, "choices": {"keep": "keep"}}},
        ),
        "sites",
        "every choice is 'keep'",
    ),
    "empty choices": (_set("sites.s1.choices", {}), "sites.s1.choices", "non-empty mapping"),
    "bad site name": (
        _set("sites", {"a.b": {"layer": 3, "choices": {"keep": "keep"}}}),
        "sites.a.b",
        "invalid site name",
    ),
    "budget unknown key": (_set("budgets.cpu.speed", 2), "budgets.cpu.speed", "unknown key"),
    "budget zero epochs": (_set("budgets.cpu.epochs", 0), "budgets.cpu.epochs", "must be positive, got 0"),
    "budget negative width": (_set("budgets.cpu.width", -0.5), "budgets.cpu.width", "must be positive"),
    "budget float batch": (_set("budgets.full.batch", 1.5), "budgets.full.batch", "expected an int"),
    "budget fraction": (_set("budgets.cpu.fraction", 1.5), "budgets.cpu.fraction", "must be in (0, 1]"),
    "budget hidden_dim": (_set("budgets.cpu.hidden_dim", 60), "budgets.cpu.hidden_dim", "multiple of 8"),
    "budget imgsz": (_set("budgets.cpu.imgsz", 150), "budgets.cpu.imgsz", "multiple of 32"),
    "budget missing epochs": (_del("budgets.full.epochs"), "budgets.full.epochs", "missing required key"),
    "missing cpu budget": (_del("budgets.cpu"), "budgets.cpu", "missing required budget"),
    "missing full budget": (_del("budgets.full"), "budgets.full", "missing required budget"),
    "unknown direction": (
        _set("objectives.1.direction", "up"),
        "objectives.1.direction",
        "unknown direction 'up'",
    ),
    "duplicate metric": (
        _set("objectives.1.metric", "map50_95"),
        "objectives.1.metric",
        "duplicate metric 'map50_95'",
    ),
    "no objectives": (_set("objectives", []), "objectives", "non-empty list"),
    "objective no trial reports": (
        _set("objectives.1.metric", "latency_p99_ms"),
        "objectives.1.metric",
        "no trial reports 'latency_p99_ms' (objectives may be map50_95, map50, map50_95_coco, map50_95_ultralytics, "
        "latency_ms, latency_p90_ms, latency_ratio",
    ),
    "objective typo": (
        _set("objectives.0.metric", "map5095"),
        "objectives.0.metric",
        "no trial reports 'map5095'",
    ),
    "unknown objective key": (_set("objectives.0.weight", 1), "objectives.0.weight", "unknown key"),
    "unknown map evaluator": (
        _set("map_evaluator", "voc"),
        "map_evaluator",
        "expected one of coco, ultralytics",
    ),
    "unknown constraint": (_set("constraints.max_params", 3), "constraints.max_params", "unknown key"),
    "negative constraint": (_set("constraints.max_gflops", -1), "constraints.max_gflops", "positive number"),
    "unknown base": (_set("base", "rtdetr-q"), "base", "unknown base 'rtdetr-q' (expected rtdetr-l"),
    "missing base file": (_set("base", "nope.yaml"), "base", "no such base yaml"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_space_file(tmp_path, case):
    mutate, key, problem = BAD[case]
    data = good()
    mutate(data)
    path = _write(tmp_path, data)
    with pytest.raises(SpaceError) as info:
        load_space(str(path))
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: {key}: "), msg
    assert problem in msg, msg


def test_duplicate_yaml_key(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text(yaml.safe_dump(good(), sort_keys=False) + "name: again\n")
    with pytest.raises(SpaceError, match=rf"^{path}: invalid YAML: .*duplicate key 'name'"):
        load_space(str(path))


def test_invalid_yaml(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\nbase: rtdetr-l\n")
    with pytest.raises(SpaceError) as info:
        load_space(str(path))
    assert str(info.value).startswith(f"{path}: invalid YAML:") and "\n" not in str(info.value)


def test_not_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(SpaceError, match="expected a mapping"):
        load_space(str(path))


def test_shipped_files_are_untouched_copies(tmp_path):
    # a shipped space copied elsewhere loads the same (no hidden dependency on its folder)
    for name in SHIPPED:
        shutil.copy(SPACES_DIR / f"{name}.yaml", tmp_path / f"{name}.yaml")
        assert load_space(str(tmp_path / f"{name}.yaml")).sites == load_space(name).sites


@pytest.mark.parametrize(
    ("train", "needle"),
    [
        ({"epochs": 3}, "budgets.cpu.train.epochs: is set by the service"),
        ({"nosuch": 1}, "budgets.cpu.train.nosuch: is not an Ultralytics train() argument"),
        ([1], "budgets.cpu.train: expected a mapping"),
        ({"mosaic": [0.5]}, "budgets.cpu.train.mosaic: expected a plain value"),
    ],
)
def test_budget_train_arguments_are_checked(train, needle):
    data = good()
    data["budgets"]["cpu"]["train"] = train
    with pytest.raises(SpaceError, match=re.escape(needle)):
        parse_space(data, "spaces/x.yaml")


def test_budget_train_arguments_reach_the_budget():
    data = good()
    data["budgets"]["cpu"]["train"] = {"optimizer": "AdamW", "mosaic": 0.0}
    assert parse_space(data, "spaces/x.yaml").budgets["cpu"].train == {"optimizer": "AdamW", "mosaic": 0.0}


def test_references_name_points_of_the_space_and_are_checked(tmp_path):
    from search.config import space_document

    space = load_space("modes")
    assert [(r.name, dict(r.params)) for r in space.references] == [("hand", {"stage3": "ori"})]
    for bad, needle in (
        (
            {"hand": {"params": {"stage3": "nope"}, "caption": "x"}},
            "references.hand.params: unknown choice 'nope'",
        ),
        ({"base": {"params": {}, "caption": "x"}}, "'base' is the unmodified model"),
        ({"hand": {"params": {"stage3": "ori"}}}, "references.hand.caption: missing required key"),
    ):
        data = space_document(space)
        data["references"] = bad
        with pytest.raises(SpaceError, match=re.escape(needle)):
            parse_space(data, str(tmp_path / "s.yaml"))
