"""The yaml generator: purity, hashing, insertion index remapping, proxy scaling, and a contract test
that every point of every shipped space builds with Ultralytics and runs forward."""

from __future__ import annotations

import copy
import os

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from search.layers import layer_channels  # noqa: E402
from search.materialize import arch_hash, materialize  # noqa: E402
from search.space import Budget, Space, list_spaces, load_base, load_space, parse_space  # noqa: E402

PROXY = Budget("cpu", epochs=1, imgsz=160, batch=2, width=0.25, depth=0.34, hidden_dim=64, queries=100)
GHOST = [512, 3, 1, "ori"]


def _space(sites: dict, base: str = "rtdetr-l") -> Space:
    data = {
        "name": "t",
        "base": base,
        "objectives": [{"metric": "map50_95", "direction": "maximize"}],
        "budgets": {
            "cpu": {"epochs": 1, "imgsz": 160, "batch": 2},
            "full": {"epochs": 1, "imgsz": 640, "batch": 2},
        },
        "sites": sites,
    }
    return parse_space(data, "spaces/t.yaml")


def _insert(layer: int, mode: str = "ori", **extra) -> dict:
    return {
        "layer": layer,
        "choices": {"keep": "keep", "x": {"op": "insert", "block": "GhostModuleV3", "mode": mode, **extra}},
    }


def _build(model_yaml: dict):
    """Build with Ultralytics and run one eval forward pass on a 64x64 image; return (model, output)."""
    from ultralytics.nn.tasks import RTDETRDetectionModel

    import ghost_blocks

    ghost_blocks.register()
    # the model writes nc into the dict it is given: hand it a copy
    model = RTDETRDetectionModel(copy.deepcopy(model_yaml), nc=model_yaml["nc"], verbose=False).eval()
    with torch.no_grad():  # not inference_mode: the decoder caches anchors that training would reuse
        out = model(torch.zeros(1, 3, 64, 64))
    return model, out


def _n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _check_output(out, model_yaml: dict) -> None:
    """Eval output: (1, queries, 6) detections, plus raw decoder scores over nc classes."""
    args = model_yaml["head"][-1][3]
    queries = args[2] if len(args) > 2 else 300
    assert out[0].shape == (1, queries, 6) and torch.isfinite(out[0]).all()
    assert out[1][1].shape[-1] == model_yaml["nc"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # these models are tiny: on a shared 2-core machine, intra-op threads only spin against each other
    # (measured here: the contract test took 2 min with 2 threads under load, 20 s with 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def base() -> dict:
    return load_base("rtdetr-l")[1]


@pytest.fixture(scope="module")
def placements() -> Space:
    return load_space("placements")


# ----------------------------------------------------------------------------- purity and determinism


def test_all_keep_is_the_base(placements, base):
    model, h = materialize(placements, {})
    assert model == base
    assert model is not base and model["backbone"] is not base["backbone"]
    assert h == arch_hash(base)


def test_pure_and_deterministic(placements):
    space = _space(
        {
            "a": _insert(3),
            "b": _insert(22, "ori_shortcut_mul_conv15"),
            "c": {"layer": 5, "choices": {"g": {"op": "replace", "block": "GhostModuleV3", "mode": "ori"}}},
        }
    )
    params = {"b": "x", "a": "x", "c": "g"}
    base_before, params_before = copy.deepcopy(space.base_yaml), copy.deepcopy(params)
    for budget in (None, PROXY):
        first = materialize(space, params, budget=budget)
        assert materialize(space, params, budget=budget) == first
        first[0]["backbone"][0][3].append(99)  # the result shares nothing with the base
        first[0]["head"][-1][0].append(99)
    assert space.base_yaml == base_before and params == params_before
    base2 = copy.deepcopy(placements.base_yaml)
    materialize(placements, placements.random_points(1, seed=0)[0], base=base2, budget=PROXY)
    assert base2 == placements.base_yaml


# ----------------------------------------------------------------------------- hashing


def test_hash_ignores_param_order_and_choice_names():
    space = _space(
        {
            "a": {
                "layer": 3,
                "choices": {
                    "keep": "keep",
                    "ori": {"op": "replace", "block": "GhostModuleV3", "mode": "ori"},
                    "same": {
                        "op": "replace",
                        "block": "GhostModuleV3",
                        "mode": "ori",
                        "args": [512, 3, 1],
                        "repeats": 1,
                    },
                },
            },
            "b": _insert(17),
        }
    )
    y1, h1 = materialize(space, {"a": "ori", "b": "x"})
    y2, h2 = materialize(space, {"b": "x", "a": "ori"})
    y3, h3 = materialize(space, {"a": "same", "b": "x"})
    assert y1 == y2 == y3 and h1 == h2 == h3
    assert len(h1) == 16 and int(h1, 16) >= 0


def test_hash_differs_between_architectures():
    for name in ("placements", "blocks", "modes"):
        space = load_space(name)
        points = [{}] + [{s.name: c.name} for s in space.sites for c in s.choices if c.op != "keep"]
        hashes = {materialize(space, p)[1] for p in points}
        assert len(hashes) == len(points), name
        assert materialize(space, {})[1] != materialize(space, {}, budget=PROXY)[1]


def test_hash_ignores_from_spelling_and_split_but_not_nc(base):
    other = copy.deepcopy(base)
    other["head"][-1][0] = [-7, -4, -1]  # [21, 24, 27] relative to layer 28
    other["head"][4][0] = 7 - 14  # layer 14 reads 7
    other["backbone"].append(other["head"].pop(0))  # layer 10 moved into the backbone
    assert arch_hash(other) == arch_hash(base)
    other["nc"] = 3
    assert arch_hash(other) != arch_hash(base)


# ----------------------------------------------------------------------------- the modes space


def test_modes_space_ori_is_the_ablation_row(base):
    space = load_space("modes")
    for choice, mode in (("ori", "ori"), ("gate", "ori_shortcut_mul_conv15")):
        expected = copy.deepcopy(base)
        expected["backbone"][5] = [-1, 2, "GhostModuleV3", [512, 3, 1, mode]]
        assert materialize(space, {"stage3": choice})[0] == expected
    # the base is Ultralytics' own file (plus the scale Ultralytics guesses from its name)
    from ultralytics.utils import ROOT

    raw = yaml.safe_load((ROOT / "cfg/models/rt-detr/rtdetr-l.yaml").read_text())
    assert base == {**raw, "scale": "l"}


# ----------------------------------------------------------------------------- insertion remapping


def test_insert_in_backbone(base):
    space = _space({"a": _insert(3)})
    model, _ = materialize(space, {"a": "x"})
    expected = copy.deepcopy(base)
    expected["backbone"].insert(4, [-1, 1, "GhostModuleV3", GHOST])  # after HGBlock 3 (512 channels)
    head = expected["head"]  # head[k] is old layer 10 + k
    head[4][0] = 8  # input_proj.1 read layer 7, now 8
    head[9][0] = 4  # input_proj.0 read layer 3: it now reads the block inserted after 3
    head[13][0] = [-1, 18]  # Concat with Y4 (17 -> 18)
    head[16][0] = [-1, 13]  # Concat with Y5 (12 -> 13)
    head[18][0] = [22, 25, 28]  # decoder
    assert model == expected
    built, out = _build(model)
    assert type(built.model[4]).__name__ == "GhostModuleV3"
    _check_output(out, model)


def test_insert_in_neck_before_concat(base):
    space = _space({"a": _insert(22), "b": _insert(14, "ori_shortcut_mul_conv15")})
    model, _ = materialize(space, {"a": "x"})
    expected = copy.deepcopy(base)
    expected["head"].insert(13, [-1, 1, "GhostModuleV3", [256, 3, 1, "ori"]])  # after downsample conv 22
    expected["head"][-1][0] = [21, 25, 28]  # Concat [-1, 17] now at 24 reads the insert via -1
    assert model == expected
    _build(materialize(space, {"a": "x"}, budget=PROXY)[0])

    # inserted after 14, read by Concat [[-2, -1]]: -2 must still mean the Upsample (13)
    model, _ = materialize(space, {"b": "x"})
    head = model["head"]
    assert head[5] == [-1, 1, "GhostModuleV3", [256, 3, 1, "ori_shortcut_mul_conv15"]]
    assert head[6][0] == [-3, -1]  # layer 16 reads 13 and the insert (15)
    assert head[14][0] == [-1, 18] and head[17][0] == [-1, 12] and head[-1][0] == [22, 25, 28]
    _build(materialize(space, {"b": "x"}, budget=PROXY)[0])


def test_two_inserts_and_a_chain_after_one_layer(base):
    space = _space({"a": _insert(3), "b": _insert(17), "c": _insert(17, "ori_shortcut_mul_conv15")})
    model, _ = materialize(space, {"a": "x", "b": "x", "c": "x"})
    layers = model["backbone"] + model["head"]
    assert len(model["backbone"]) == 11 and len(layers) == 32
    assert [layer[2] for layer in layers[18:22]] == ["Conv", "GhostModuleV3", "GhostModuleV3", "nn.Upsample"]
    assert layers[19][3][-1] == "ori" and layers[20][3][-1] == "ori_shortcut_mul_conv15"  # site order
    assert layers[21][0] == -1  # the Upsample reads the last insert after 17
    assert layers[22][0] == 4  # input_proj.0 reads the insert after 3
    assert layers[23][0] == [-2, -1]  # Concat: the Upsample and input_proj.0, as before
    assert layers[26][0] == [-1, 20]  # Concat with Y4 reads the end of 17's chain
    assert layers[29][0] == [-1, 13]
    assert layers[31][0] == [24, 27, 30]
    ch = layer_channels(base)  # the inserts keep their producer's channels
    assert layer_channels(model) == ch[:4] + [512] + ch[4:18] + [256, 256] + ch[18:]
    _build(materialize(space, {"a": "x", "b": "x", "c": "x"}, budget=PROXY)[0])


def test_insert_after_last_backbone_layer(base):
    model, _ = materialize(_space({"a": _insert(9, args=[1024, 3, 1])}), {"a": "x"})
    assert model["backbone"][-1] == [-1, 1, "GhostModuleV3", [1024, 3, 1, "ori"]]
    assert model["head"][0][0] == -1 and model["head"][4][0] == 7
    _build(materialize(_space({"a": _insert(9, args=[1024, 3, 1])}), {"a": "x"}, budget=PROXY)[0])


# ----------------------------------------------------------------------------- proxy scaling


def test_proxy_is_small_and_builds(placements):
    full, _ = _build(placements.base_yaml)
    proxy_yaml, _ = materialize(placements, {}, budget=placements.budgets["cpu"])
    proxy, out = _build(proxy_yaml)
    assert 1e6 < _n_params(proxy) < 4e6 and _n_params(proxy) < _n_params(full) / 8
    _check_output(out, proxy_yaml)
    assert out[0].shape == (1, 30, 6)
    layers = proxy_yaml["backbone"] + proxy_yaml["head"]
    assert layers[0] == [-1, 1, "HGStem", [8, 16]]
    assert layers[5] == [-1, 2, "HGBlock", [48, 256, 5, True, False]]  # 6 repeats * 0.34
    assert layers[11] == [-1, 1, "AIFI", [256, 8]]
    assert layers[16] == [-1, 1, "RepC3", [64]]  # 3 repeats * 0.34
    # the decoder scaled with the rest: hidden dim, queries, layers, feed-forward width and denoising queries
    assert layers[28] == [[21, 24, 27], 1, "RTDETRDecoder", ["nc", 64, 30, 4, 8, 3, 256, 0.0, None, -1, 20]]
    decoder = proxy.model[28]
    assert decoder.num_queries == 30 and decoder.num_denoising == 20 and decoder.hidden_dim == 64
    assert len(decoder.decoder.layers) == 3
    assert {layer.linear1.out_features for layer in decoder.decoder.layers} == {256}
    assert proxy_yaml["scales"] == placements.base_yaml["scales"]


def test_a_budget_without_decoder_keys_keeps_the_decoders_args(placements):
    plain = Budget("p", epochs=1, imgsz=160, batch=2, width=0.25)
    layers = materialize(placements, {}, budget=plain)[0]["head"]
    assert layers[-1] == [[21, 24, 27], 1, "RTDETRDecoder", ["nc", 256, 300]]
    assert materialize(placements, {}, budget=placements.budgets["full"])[0]["head"][-1][3] == ["nc"]


def test_a_budget_sets_the_decoders_layer_count(placements):
    shallow = Budget("p", epochs=1, imgsz=160, batch=2, width=0.25, decoder_layers=3)
    assert shallow.is_proxy
    model_yaml = materialize(placements, {}, budget=shallow)[0]
    assert model_yaml["head"][-1] == [[21, 24, 27], 1, "RTDETRDecoder", ["nc", 256, 300, 4, 8, 3]]
    model, _ = _build(model_yaml)
    assert len(model.model[-1].decoder.layers) == 3


def test_proxy_reduces_aifi_heads_to_a_divisor(base):
    odd = copy.deepcopy(base)
    odd["head"][1] = [-1, 1, "AIFI", [1024, 12]]
    space = _space({"a": _insert(3)})
    model, _ = materialize(space, {}, base=odd, budget=PROXY)
    assert model["head"][1] == [-1, 1, "AIFI", [256, 8]]  # 64 input channels: 12 heads -> 8
    _build(model)


@pytest.mark.parametrize("name", ["rtdetr-resnet50", "rtdetr-x"])
def test_proxy_other_bases(name):
    space = _space({"a": _insert(3, args=[200, 3, 1])}, base=name)
    for params in ({}, {"a": "x"}):
        model, _ = materialize(space, params, budget=PROXY)
        proxy, _ = _build(model)
        assert _n_params(proxy) < 5e6
    if name == "rtdetr-resnet50":  # ResNetLayer's explicit c1 follows its (scaled, inserted) producer
        assert [layer[3][0] for layer in model["backbone"]] == [3, 16, 64, 128, 56, 56]


# ----------------------------------------------------------------------------- contract


def _contract_points(space: Space) -> list[dict[str, str]]:
    singles = [{s.name: c.name} for s in space.sites for c in s.choices if c.op != "keep"]
    return singles + space.random_points(3, seed=0)


@pytest.mark.parametrize("name", list_spaces())
def test_contract_every_space_point_builds(name):
    """Every site with every choice (others keep) and 3 random points, on the cpu proxy, build and run."""
    space = load_space(name)
    budget = space.budgets["cpu"]
    seen: set[str] = set()
    for params in _contract_points(space):
        model_yaml, h = materialize(space, params, budget=budget)
        if h in seen:
            continue
        seen.add(h)
        try:
            _, out = _build(model_yaml)
        except Exception as e:  # name the failing point
            raise AssertionError(f"{name} {params}: {type(e).__name__}: {e}") from e
        _check_output(out, model_yaml)
    # the base as written (no budget) builds too
    _build(materialize(space, {})[0])
    if name == "modes":  # the ablation trains at full size: its rows must build as written
        for params in space.points():
            _build(materialize(space, params)[0])


# A small base holding every layer type one of our blocks may replace.
ARITY_BASE = {
    "nc": 3,
    "backbone": [
        [-1, 1, "Conv", [16, 3, 2]],  # 0
        [-1, 1, "HGBlock", [8, 32, 3]],  # 1
        [-1, 1, "RepNCSPELAN4", [32, 32, 16, 1]],  # 2
    ],
    "head": [
        [-1, 1, "RepC3", [40]],  # 3
        [-1, 1, "Conv", [8, 1, 1]],  # 4
    ],
}
ARITIES = [  # (op, layer, block, args): every arity of args that validation accepts, and derived args
    *[("replace", 4, "GhostModuleV3", a) for a in (None, [8], [8, 3], [8, 3, 1])],
    *[("insert", 0, "GhostModuleV3", a) for a in (None, [16], [16, 3], [16, 3, 1])],
    *[("replace", 1, "HGBlockGhostV3", a) for a in (None, [8, 32], [8, 32, 3], [8, 32, 3, True], [8, 32, 3, True, False])],
    *[("replace", 3, "RepC3GhostV3", a) for a in (None, [40], [40, 0.5])],
    *[("replace", 2, "RepNCSPELAN4GhostV3", a) for a in (None, [32, 32, 16], [32, 32, 16, 1])],
]  # fmt: skip


@pytest.mark.parametrize("mode", ["ori", "ori_shortcut_mul_conv15"])
@pytest.mark.parametrize(("op", "layer", "block", "args"), ARITIES)
def test_every_accepted_arity_builds_a_model_whose_blocks_carry_the_chosen_mode(op, layer, block, args, mode):
    """Built, not read from the yaml: `args: [c2, k]` once put the mode in GhostModuleV3's stride."""
    from ultralytics.nn.tasks import parse_model

    import ghost_blocks

    ghost_blocks.register()
    choice = {"op": op, "block": block, "mode": mode, **({"args": args} if args is not None else {})}
    data = {
        "name": "arity",
        "base": "small.yaml",
        "objectives": [{"metric": "map50_95", "direction": "maximize"}],
        "budgets": {
            "cpu": {"epochs": 1, "imgsz": 64, "batch": 2},
            "full": {"epochs": 1, "imgsz": 64, "batch": 2},
        },
        "sites": {"s": {"layer": layer, "choices": {"keep": "keep", "x": choice}}},
    }
    space = parse_space(data, "spaces/arity.yaml", base_yaml=ARITY_BASE)
    model_yaml, _ = materialize(space, {"s": "x"})
    model, _ = parse_model(copy.deepcopy(model_yaml), ch=3, verbose=False)
    ghosts = [m for m in model.modules() if isinstance(m, ghost_blocks.GhostModuleV3)]
    assert ghosts and all(g.mode == mode for g in ghosts)
    if block == "GhostModuleV3" and args is not None:
        g = ghosts[0]
        assert (g.c2, g.k, g.s) == (args[0], args[1] if len(args) > 1 else 1, args[2] if len(args) > 2 else 1)
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, 32, 32))


def test_a_mode_in_ghostmodulev3_kernel_or_stride_is_refused_by_name():
    from ultralytics.nn.tasks import parse_model

    import ghost_blocks

    ghost_blocks.register()
    bad = copy.deepcopy(ARITY_BASE)
    bad["head"][1] = [-1, 1, "GhostModuleV3", [8, 3, "ori"]]
    with pytest.raises(ValueError, match="s must be an int, got 'ori'"):
        parse_model(bad, ch=3, verbose=False)
