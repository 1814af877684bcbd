"""GhostModuleV3 (GhostNetV3, arXiv 2404.11202) with a training form and an exact deploy form.

The training form keeps the published module's branches and state_dict key names, so its
checkpoints load with ``strict=True``. Unlike the published code it works in every configuration:
the 1x1 scale branch follows the layer's stride and is padded by ``k // 2``, each skip branch gets
an identity kernel of its own shape, the output is cropped to ``c2`` channels, the arguments follow
Ultralytics' ``(c1, c2, k, s)`` order, and re-parameterisation keeps parameters trainable and also
folds the shortcut branch's BatchNorms.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MODES", "GhostModuleV3", "fuse_conv_bn", "identity_kernel"]

MODES = ("ori", "ori_shortcut_mul_conv15")
NUM_CONV_BRANCHES = 3


def fuse_conv_bn(kernel: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BatchNorm that follows a bias-free convolution into kernel and bias.

    Differentiable; the one place the conv+BN algebra is written.

    Args:
        kernel: weight of the convolution feeding ``bn``, shape ``(out, in/groups, kh, kw)``.
        bn: the BatchNorm applied to that convolution's output.

    Returns:
        The fused kernel and bias.
    """
    scale = bn.weight / (bn.running_var + bn.eps).sqrt()
    return kernel * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


def identity_kernel(channels: int, groups: int, k: int, like: torch.Tensor) -> torch.Tensor:
    """Kernel of a ``k x k`` convolution with ``channels`` in and out that returns its input unchanged."""
    per_group = channels // groups
    kernel = torch.zeros(channels, per_group, k, k, dtype=like.dtype, device=like.device)
    idx = torch.arange(channels, device=like.device)
    kernel[idx, idx % per_group, k // 2, k // 2] = 1
    return kernel


def _conv_bn(c1: int, c2: int, k: int | tuple[int, int], s: int, p, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(c1, c2, k, s, p, groups=groups, bias=False),
            bn=nn.BatchNorm2d(c2),
        )
    )


def _plain_conv(c1: int, c2: int, k, s: int, p, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c1, c2, k, s, p, groups=groups, bias=True)


class GhostModuleV3(nn.Module):
    """Ghost module with re-parameterisable primary and cheap branches.

    Args:
        c1: input channels.
        c2: output channels (any positive number; the output is cropped to exactly ``c2``).
        k: kernel size of the primary convolution (odd).
        s: stride of the primary convolution.
        mode: ``"ori"``, or ``"ori_shortcut_mul_conv15"`` which gates the output with a
            sigmoid of a pooled ``k x k`` -> ``1x5`` -> ``5x1`` shortcut.
        ratio: ghost ratio; the primary branch makes ``ceil(c2 / ratio)`` channels.
        dw_size: kernel size of the cheap depthwise convolution (odd).
        relu: apply ReLU after each branch.
        deploy: build the deploy form directly (one convolution per branch), e.g. to load a
            re-parameterised checkpoint.
    """

    def __init__(
        self,
        c1: int,
        c2: int,
        k: int = 1,
        s: int = 1,
        mode: str = "ori",
        ratio: int = 2,
        dw_size: int = 3,
        relu: bool = True,
        *,
        deploy: bool = False,
    ):
        super().__init__()
        for name, value in (("c1", c1), ("c2", c2), ("s", s)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"GhostModuleV3: `{name}` must be a positive int, got {value!r}")
        for name, value in (("k", k), ("dw_size", dw_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1 or value % 2 == 0:
                raise ValueError(f"GhostModuleV3: `{name}` must be a positive odd int, got {value!r}")
        if not isinstance(ratio, int) or isinstance(ratio, bool) or ratio < 2:
            raise ValueError(f"GhostModuleV3: `ratio` must be an int >= 2, got {ratio!r}")
        if mode not in MODES:
            raise ValueError(f"GhostModuleV3: unknown `mode` {mode!r}; expected one of {', '.join(MODES)}")

        self.c1, self.c2, self.k, self.s = c1, c2, k, s
        self.mode, self.ratio, self.dw_size, self.relu = mode, ratio, dw_size, relu
        self.oup = c2
        init_channels = math.ceil(c2 / ratio)
        new_channels = init_channels * (ratio - 1)
        self.init_channels, self.new_channels = init_channels, new_channels
        self.primary_activation = nn.ReLU(inplace=True) if relu else None
        self.cheap_activation = nn.ReLU(inplace=True) if relu else None

        if mode == "ori_shortcut_mul_conv15":
            self.short_conv = self._short_conv(deploy)

        if deploy:
            self._build_deploy()
            return
        # Primary branch: c1 -> init_channels, k x k, stride s.
        self.primary_rpr_skip = nn.BatchNorm2d(c1) if c1 == init_channels and s == 1 else None
        self.primary_rpr_conv = nn.ModuleList(
            _conv_bn(c1, init_channels, k, s, k // 2) for _ in range(NUM_CONV_BRANCHES)
        )
        self.primary_rpr_scale = _conv_bn(c1, init_channels, 1, s, 0) if k > 1 else None
        # Cheap branch: depthwise-style, init_channels -> new_channels, dw_size x dw_size.
        g = init_channels
        self.cheap_rpr_skip = nn.BatchNorm2d(init_channels) if init_channels == new_channels else None
        self.cheap_rpr_conv = nn.ModuleList(
            _conv_bn(init_channels, new_channels, dw_size, 1, dw_size // 2, g)
            for _ in range(NUM_CONV_BRANCHES)
        )
        self.cheap_rpr_scale = _conv_bn(init_channels, new_channels, 1, 1, 0, g) if dw_size > 1 else None

    # ----------------------------------------------------------------- construction helpers
    def _short_conv(self, deploy: bool) -> nn.Sequential:
        c1, c2, k, s = self.c1, self.c2, self.k, self.s
        specs = [(c1, c2, k, s, k // 2, 1), (c2, c2, (1, 5), 1, (0, 2), c2), (c2, c2, (5, 1), 1, (2, 0), c2)]
        layers: list[nn.Module] = []
        for a, b, kk, ss, pp, gg in specs:
            if deploy:
                layers.append(_plain_conv(a, b, kk, ss, pp, gg))
            else:  # published layout: conv, bn, conv, bn, conv, bn
                layers += [nn.Conv2d(a, b, kk, ss, pp, groups=gg, bias=False), nn.BatchNorm2d(b)]
        return nn.Sequential(*layers)

    def _build_deploy(self) -> None:
        act_p = self.primary_activation if self.primary_activation is not None else nn.Sequential()
        act_c = self.cheap_activation if self.cheap_activation is not None else nn.Sequential()
        self.primary_conv = nn.Sequential(
            _plain_conv(self.c1, self.init_channels, self.k, self.s, self.k // 2), act_p
        )
        self.cheap_operation = nn.Sequential(
            _plain_conv(
                self.init_channels, self.new_channels, self.dw_size, 1, self.dw_size // 2, self.init_channels
            ),
            act_c,
        )

    @property
    def deployed(self) -> bool:
        """True when the module is in its deploy form (read from the module, not from a flag)."""
        return hasattr(self, "primary_conv")

    # ------------------------------------------------------------------------------ forward
    @staticmethod
    def _rep_sum(x: torch.Tensor, convs: nn.ModuleList, scale, skip) -> torch.Tensor:
        out = sum(branch(x) for branch in convs)
        if scale is not None:
            out = out + scale(x)
        if skip is not None:
            out = out + skip(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deployed:
            x1 = self.primary_conv(x)
            x2 = self.cheap_operation(x1)
        else:
            x1 = self._rep_sum(x, self.primary_rpr_conv, self.primary_rpr_scale, self.primary_rpr_skip)
            if self.primary_activation is not None:
                x1 = self.primary_activation(x1)
            x2 = self._rep_sum(x1, self.cheap_rpr_conv, self.cheap_rpr_scale, self.cheap_rpr_skip)
            if self.cheap_activation is not None:
                x2 = self.cheap_activation(x2)
        out = torch.cat((x1, x2), dim=1)[:, : self.c2]
        if self.mode == "ori":
            return out
        # The published gate pools by 2 first; a map smaller than 2x2 cannot be pooled, so it is used as is.
        pooled = F.avg_pool2d(x, kernel_size=2, stride=2) if min(x.shape[-2:]) >= 2 else x
        gate = torch.sigmoid(self.short_conv(pooled))
        return out * F.interpolate(gate, size=out.shape[-2:], mode="nearest")

    # ------------------------------------------------------------------- re-parameterisation
    def _merged(
        self, convs: nn.ModuleList, scale, skip, k: int, groups: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        kernel, bias = 0, 0
        for branch in convs:
            w, b = fuse_conv_bn(branch.conv.weight, branch.bn)
            kernel, bias = kernel + w, bias + b
        if scale is not None:
            w, b = fuse_conv_bn(scale.conv.weight, scale.bn)
            pad = k // 2
            kernel, bias = kernel + F.pad(w, [pad, pad, pad, pad]), bias + b
        if skip is not None:
            w, b = fuse_conv_bn(identity_kernel(skip.num_features, groups, k, skip.weight), skip)
            kernel, bias = kernel + w, bias + b
        return kernel, bias

    @torch.no_grad()
    def reparameterize(self) -> GhostModuleV3:
        """Turn this module into its deploy form, in place; a second call does nothing.

        The deploy form computes the same function as the training form in ``eval()``
        (BatchNorm running statistics folded in); its parameters stay trainable.
        """
        if self.deployed:
            return self
        primary = self._merged(
            self.primary_rpr_conv, self.primary_rpr_scale, self.primary_rpr_skip, self.k, 1
        )
        cheap = self._merged(
            self.cheap_rpr_conv, self.cheap_rpr_scale, self.cheap_rpr_skip, self.dw_size, self.init_channels
        )
        ref = self.primary_rpr_conv[0].conv.weight
        self._build_deploy()
        for seq, (w, b) in ((self.primary_conv, primary), (self.cheap_operation, cheap)):
            seq[0].to(device=ref.device, dtype=ref.dtype)
            seq[0].weight.copy_(w)
            seq[0].bias.copy_(b)
        for name in (
            "primary_rpr_skip",
            "primary_rpr_conv",
            "primary_rpr_scale",
            "cheap_rpr_skip",
            "cheap_rpr_conv",
            "cheap_rpr_scale",
        ):
            delattr(self, name)
        if self.mode == "ori_shortcut_mul_conv15" and isinstance(self.short_conv[1], nn.BatchNorm2d):
            fused = []
            for i in range(0, len(self.short_conv), 2):
                conv, bn = self.short_conv[i], self.short_conv[i + 1]
                w, b = fuse_conv_bn(conv.weight, bn)
                plain = _plain_conv(
                    conv.in_channels,
                    conv.out_channels,
                    conv.kernel_size,
                    conv.stride,
                    conv.padding,
                    conv.groups,
                ).to(device=w.device, dtype=w.dtype)
                plain.weight.copy_(w)
                plain.bias.copy_(b)
                fused.append(plain)
            self.short_conv = nn.Sequential(*fused)
        return self

    def extra_repr(self) -> str:
        return (
            f"c1={self.c1}, c2={self.c2}, k={self.k}, s={self.s}, mode={self.mode!r}, ratio={self.ratio}, "
            f"dw_size={self.dw_size}, relu={self.relu}, deployed={self.deployed}"
        )
