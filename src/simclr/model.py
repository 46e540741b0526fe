"""Encoder f (a ResNet with the CIFAR stem of Appendix B.9) and projection head g. By default as the
official SimCLR code (google-research/simclr, v1) builds them; the choices public CIFAR-10 recipes make
differently are knobs (model.head, model.head_hidden, model.zero_init_residual):

- zero_init_residual (official): the last norm layer of every residual block starts at zero (each
  block starts as the identity); off: torchvision's default initialisation (dkobak, solo-learn);
- head "official": Linear (no bias) - BN - ReLU - Linear (no bias) - BN (scale, no shift);
  head "mlp": Linear - ReLU - Linear, with biases and no norm (dkobak/simclr-cifar10, solo-learn).

The encoder keeps torchvision's ResNet layout and parameter names (conv1, bn1, layer1..layer4), with
a base width: 64 is the standard ResNet; the CPU-scale preset uses a narrower one.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1


LAYOUT = {"resnet18": (BasicBlock, (2, 2, 2, 2)), "resnet34": (BasicBlock, (3, 4, 6, 3)),
          "resnet50": (Bottleneck, (3, 4, 6, 3))}


def norm_layer(norm: str, one_d: bool = False):
    """channels -> norm module: BatchNorm, or GroupNorm with (up to) 32 groups; on vectors (one_d)
    a group keeps at least 4 channels (a one-channel group of a vector normalises to zero)."""
    if norm == "batch":
        return nn.BatchNorm1d if one_d else nn.BatchNorm2d

    def group_norm(channels: int) -> nn.GroupNorm:
        groups = math.gcd(32, channels)
        while one_d and groups > 1 and channels // groups < 4:
            groups //= 2
        return nn.GroupNorm(groups, channels)
    return group_norm


def feature_dim(arch: str, width: int = 64) -> int:
    """Size of the representation h: 8 x width x the block's expansion (512 for a standard ResNet-18)."""
    block, _ = LAYOUT[arch]
    return 8 * width * block.expansion


class ResNet(nn.Module):
    """ResNet trunk whose output is the representation h (before the head). stem "cifar" (B.9): the
    7x7 stride-2 stem conv becomes 3x3 stride 1 and the first max-pool is removed; stem "imagenet":
    torchvision's 7x7 stride-2 conv (padding 3) and 3x3 stride-2 max-pool (padding 1), for inputs of
    ImageNet's scale (at 224 px the CIFAR stem runs every stage at 16x the positions)."""

    def __init__(self, arch: str, norm: str = "batch", width: int = 64, zero_init_residual: bool = True,
                 stem: str = "cifar"):
        super().__init__()
        block, depths = LAYOUT[arch]
        make_norm = norm_layer(norm)
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        elif stem == "cifar":
            self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:
            raise ValueError(f"model.stem: expected cifar or imagenet, found {stem!r}")
        self.bn1 = make_norm(width)
        self.relu = nn.ReLU(inplace=True)
        channels = width
        for i, depth in enumerate(depths):
            planes, stride = width * 2 ** i, 1 if i == 0 else 2
            out = planes * block.expansion
            down = (nn.Sequential(conv1x1(channels, out, stride), make_norm(out))
                    if stride != 1 or channels != out else None)
            blocks = [block(channels, planes, stride, down, norm_layer=make_norm)]
            blocks += [block(out, planes, norm_layer=make_norm) for _ in range(1, depth)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            channels = out
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        for m in self.modules():  # torchvision's initialisation ...
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():  # ... and the official code's zero-initialised last norm of each block
            if zero_init_residual and isinstance(m, (BasicBlock, Bottleneck)):
                nn.init.zeros_((m.bn3 if isinstance(m, Bottleneck) else m.bn2).weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)  # h: N x feature_dim


def projection_head(in_dim: int, out_dim: int, norm: str = "batch", kind: str = "official",
                    hidden: int | None = None) -> nn.Module:
    """g, hidden width `hidden` (None: in_dim, the official code's choice).
    official: SimCLR v1's Linear (no bias) - BN - ReLU - Linear (no bias) - BN with a scale and no
    shift (center=False). mlp: Linear - ReLU - Linear with biases, no norm, PyTorch's default init."""
    hidden = hidden or in_dim
    if kind == "mlp":
        return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))
    make_norm = norm_layer(norm, one_d=True)
    last = make_norm(out_dim)
    nn.init.zeros_(last.bias)
    last.bias.requires_grad_(False)  # no shift: stays zero, and no optimiser touches it
    return nn.Sequential(nn.Linear(in_dim, hidden, bias=False), make_norm(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out_dim, bias=False), last)


class SimCLR(nn.Module):
    def __init__(self, arch: str = "resnet18", proj_dim: int = 128, norm: str = "batch", width: int = 64,
                 head: str = "official", head_hidden: int | None = None, zero_init_residual: bool = True,
                 stem: str = "cifar"):
        super().__init__()
        self.encoder = ResNet(arch, norm, width, zero_init_residual, stem)
        self.head = projection_head(feature_dim(arch, width), proj_dim, norm, head, head_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))  # z: N x proj_dim


def build(params: dict, seed: int) -> SimCLR:
    """The model pretrain starts from; extract's random-init baseline is the same draw. Keys a model
    file of an earlier version lacks take the official choices it was trained with."""
    torch.manual_seed(seed)
    m = params["model"]
    return SimCLR(m["arch"], m.get("proj_dim", 128), m["norm"], m.get("width", 64), m.get("head", "official"),
                  m.get("head_hidden"), m.get("zero_init_residual", True), m.get("stem", "cifar"))
