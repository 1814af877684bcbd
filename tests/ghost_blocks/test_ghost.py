"""GhostModuleV3: exact deploy form over the whole configuration grid, published-checkpoint compatibility."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ghost_blocks import MODES, GhostModuleV3
from tests.helpers import randomize_bn

# c1=4,c2=8,r=2 and c1=3,c2=7,r=3 give a primary skip branch; odd c2 checks the crop to c2.
GRID = list(itertools.product([3, 4], [7, 8], [1, 3, 5], [1, 2], [3, 5], [2, 3], MODES))


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-9), (torch.float32, 1e-4)])
def test_deploy_form_reproduces_training_form_on_whole_grid(dtype, tol):
    failures = []
    for i, (c1, c2, k, s, dw, ratio, mode) in enumerate(GRID):
        torch.manual_seed(i)
        m = GhostModuleV3(c1, c2, k, s, mode, ratio, dw).to(dtype)
        randomize_bn(m, seed=i)
        m.eval()
        x = torch.randn(2, c1, 11, 10, dtype=dtype)
        with torch.no_grad():
            y_train = m(x)
            assert y_train.shape == (2, c2, math.ceil(11 / s), math.ceil(10 / s)), (
                c1,
                c2,
                k,
                s,
                dw,
                ratio,
                mode,
            )
            m.reparameterize()
            y_deploy = m(x)
        err = (y_train - y_deploy).abs().max().item()
        if not err <= tol:
            failures.append(((c1, c2, k, s, dw, ratio, mode), err))
    assert len(GRID) == 192
    assert failures == []


def test_training_form_has_the_published_branches():
    m = GhostModuleV3(8, 16, 3, 1, "ori_shortcut_mul_conv15")
    assert len(m.primary_rpr_conv) == 3 and len(m.cheap_rpr_conv) == 3
    assert m.primary_rpr_scale is not None and m.cheap_rpr_scale is not None
    assert m.primary_rpr_skip is not None and m.cheap_rpr_skip is not None  # 8 == ceil(16/2), 8 == 8
    assert isinstance(m.short_conv[1], nn.BatchNorm2d)
    no_skip = GhostModuleV3(8, 16, 3, 2, "ori", ratio=3)
    assert no_skip.primary_rpr_skip is None and no_skip.cheap_rpr_skip is None


def published_keys(c1: int, c2: int, k: int, s: int, mode: str, ratio: int, dw: int) -> dict[str, tuple]:
    """State-dict keys and shapes of the published GhostModuleV3 training form, written out independently."""
    init = math.ceil(c2 / ratio)
    new = init * (ratio - 1)
    keys: dict[str, tuple] = {}

    def bn(prefix: str, n: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{prefix}.{name}"] = (n,)
        keys[f"{prefix}.num_batches_tracked"] = ()

    if mode == "ori_shortcut_mul_conv15":
        keys["short_conv.0.weight"] = (c2, c1, k, k)
        bn("short_conv.1", c2)
        keys["short_conv.2.weight"] = (c2, 1, 1, 5)
        bn("short_conv.3", c2)
        keys["short_conv.4.weight"] = (c2, 1, 5, 1)
        bn("short_conv.5", c2)
    if c1 == init and s == 1:
        bn("primary_rpr_skip", c1)
    for i in range(3):
        keys[f"primary_rpr_conv.{i}.conv.weight"] = (init, c1, k, k)
        bn(f"primary_rpr_conv.{i}.bn", init)
    if k > 1:
        keys["primary_rpr_scale.conv.weight"] = (init, c1, 1, 1)
        bn("primary_rpr_scale.bn", init)
    if init == new:
        bn("cheap_rpr_skip", init)
    for i in range(3):
        keys[f"cheap_rpr_conv.{i}.conv.weight"] = (new, 1, dw, dw)
        bn(f"cheap_rpr_conv.{i}.bn", new)
    if dw > 1:
        keys["cheap_rpr_scale.conv.weight"] = (new, 1, 1, 1)
        bn("cheap_rpr_scale.bn", new)
    return keys


def published_forward(
    sd: dict[str, torch.Tensor], x: torch.Tensor, k: int, s: int, mode: str, dw: int, c2: int
):
    """The published module's training-form forward in eval(), computed straight from a state dict."""

    def bn(prefix, t):
        return F.batch_norm(
            t, sd[f"{prefix}.running_mean"], sd[f"{prefix}.running_var"], sd[f"{prefix}.weight"],
            sd[f"{prefix}.bias"], False, 0.0, 1e-5,
        )  # fmt: skip

    def rep(prefix, t, kk, stride, groups):
        out = sum(
            bn(f"{prefix}_rpr_conv.{i}.bn", F.conv2d(t, sd[f"{prefix}_rpr_conv.{i}.conv.weight"], None, stride, kk // 2, 1, groups))
            for i in range(3)
        )  # fmt: skip
        if f"{prefix}_rpr_scale.conv.weight" in sd:
            out = out + bn(
                f"{prefix}_rpr_scale.bn",
                F.conv2d(t, sd[f"{prefix}_rpr_scale.conv.weight"], None, stride, 0, 1, groups),
            )
        if f"{prefix}_rpr_skip.weight" in sd:
            out = out + bn(f"{prefix}_rpr_skip", t)
        return F.relu(out)

    x1 = rep("primary", x, k, s, 1)
    x2 = rep("cheap", x1, dw, 1, x1.shape[1])
    out = torch.cat([x1, x2], 1)[:, :c2]
    if mode == "ori":
        return out
    r = F.avg_pool2d(x, 2, 2)
    r = bn("short_conv.1", F.conv2d(r, sd["short_conv.0.weight"], None, s, k // 2))
    r = bn("short_conv.3", F.conv2d(r, sd["short_conv.2.weight"], None, 1, (0, 2), 1, c2))
    r = bn("short_conv.5", F.conv2d(r, sd["short_conv.4.weight"], None, 1, (2, 0), 1, c2))
    return out * F.interpolate(torch.sigmoid(r), size=out.shape[-2:], mode="nearest")


# Configurations in which the published code itself runs correctly (stride 1, even c2, ratio 2).
PUBLISHED_OK = [(8, 16, 1, 1, m, 2, 3) for m in MODES] + [(16, 8, 3, 1, m, 2, 5) for m in MODES]


@pytest.mark.parametrize(("c1", "c2", "k", "s", "mode", "ratio", "dw"), PUBLISHED_OK)
def test_published_checkpoint_loads_strict_and_gives_the_same_output(c1, c2, k, s, mode, ratio, dw):
    expected = published_keys(c1, c2, k, s, mode, ratio, dw)
    m = GhostModuleV3(c1, c2, k, s, mode, ratio, dw).double()
    assert {name: tuple(t.shape) for name, t in m.state_dict().items()} == expected
    g = torch.Generator().manual_seed(1)
    checkpoint = {}
    for name, shape in expected.items():
        if name.endswith("num_batches_tracked"):
            checkpoint[name] = torch.tensor(7)
        elif name.endswith("running_var"):
            checkpoint[name] = torch.rand(shape, generator=g, dtype=torch.float64) + 0.5
        else:
            checkpoint[name] = torch.randn(shape, generator=g, dtype=torch.float64)
    fresh = GhostModuleV3(c1, c2, k, s, mode, ratio, dw).double()
    fresh.load_state_dict(checkpoint, strict=True)
    fresh.eval()
    x = torch.randn(2, c1, 12, 12, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(
            fresh(x), published_forward(checkpoint, x, k, s, mode, dw, c2), rtol=0, atol=1e-10
        )


@pytest.mark.parametrize("mode", MODES)
def test_reparameterize_is_in_place_idempotent_and_keeps_parameters_trainable(mode):
    m = GhostModuleV3(6, 10, 3, 2, mode, 2, 3)
    randomize_bn(m)
    m.eval()
    x = torch.randn(1, 6, 16, 16)
    with torch.no_grad():
        before = m(x)
    assert m.reparameterize() is m
    state = {k: v.clone() for k, v in m.state_dict().items()}
    m.reparameterize()
    assert all(torch.equal(state[k], v) for k, v in m.state_dict().items())
    assert not any(isinstance(b, nn.BatchNorm2d) for b in m.modules())
    assert not hasattr(m, "primary_rpr_conv") and not hasattr(m, "cheap_rpr_skip")
    assert all(p.requires_grad for p in m.parameters())
    m(x).sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    with torch.no_grad():
        torch.testing.assert_close(m(x), before, rtol=0, atol=1e-4)


@pytest.mark.parametrize("mode", MODES)
def test_deploy_flag_builds_the_deploy_form_and_loads_a_deployed_checkpoint(mode):
    m = GhostModuleV3(5, 9, 3, 2, mode, 3, 5)
    randomize_bn(m)
    m.eval().reparameterize()
    direct = GhostModuleV3(5, 9, 3, 2, mode, 3, 5, deploy=True).eval()
    assert direct.deployed
    direct.load_state_dict(m.state_dict(), strict=True)
    x = torch.randn(1, 5, 13, 13)
    with torch.no_grad():
        torch.testing.assert_close(direct(x), m(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"mode": "fast"}, "`mode`"),
        ({"k": 2}, "`k`"),
        ({"dw_size": 4}, "`dw_size`"),
        ({"ratio": 1}, "`ratio`"),
        ({"s": 0}, "`s`"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        GhostModuleV3(4, 8, **kwargs)


def test_tiny_feature_maps_still_work_in_gate_mode():
    m = GhostModuleV3(4, 4, 3, 2, "ori_shortcut_mul_conv15").eval()
    with torch.no_grad():
        assert m(torch.randn(1, 4, 1, 1)).shape == (1, 4, 1, 1)
