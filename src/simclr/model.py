"""Encoder f (torchvision ResNet with the CIFAR stem of Appendix B.9) and projection head g."""
from __future__ import annotations

import torch
from torch import nn
from torchvision import models

from .progress import progress

FEATURE_DIM = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}


def _norm_layer(norm: str):
    if norm == "batch":
        return nn.BatchNorm2d
    return lambda channels: nn.GroupNorm(32, channels)


def encoder(arch: str, norm: str = "batch") -> nn.Module:
    """ResNet trunk whose output is the representation h (before the head).
    B.9: the 7x7 stride-2 stem conv becomes 3x3 stride 1 and the first max-pool is removed."""
    net = getattr(models, arch)(weights=None, norm_layer=_norm_layer(norm))
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net


def projection_head(in_dim: int, out_dim: int, norm: str = "batch") -> nn.Module:
    """g: Linear-BN-ReLU-Linear, hidden width = in_dim."""
    norm_layer = nn.BatchNorm1d(in_dim) if norm == "batch" else nn.GroupNorm(32, in_dim)
    return nn.Sequential(nn.Linear(in_dim, in_dim, bias=False), norm_layer, nn.ReLU(inplace=True),
                         nn.Linear(in_dim, out_dim))


class SimCLR(nn.Module):
    def __init__(self, arch: str = "resnet18", proj_dim: int = 128, norm: str = "batch"):
        super().__init__()
        self.encoder = encoder(arch, norm)
        self.head = projection_head(FEATURE_DIM[arch], proj_dim, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))  # z: N x proj_dim


@torch.no_grad()
def features(encoder: nn.Module, images: torch.Tensor, batch_size: int, device, autocast,
             channels_last: bool = False, desc: str | None = None, log=print) -> torch.Tensor:
    """h of uint8 images (N x 3 x S x S), in eval mode and without augmentation, on `device`.
    The encoder is left in eval mode; `autocast` is a context manager factory (precision);
    with `desc`, progress is shown (see progress.progress)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    encoder.eval()
    out = []
    starts = range(0, len(images), batch_size)
    for a in progress(starts, len(starts), desc, log, enabled=desc is not None):
        x = images[a:a + batch_size].to(device).float().div_(255).contiguous(memory_format=fmt)
        with autocast():
            out.append(encoder(x).float())  # h: n x feature_dim
    return torch.cat(out)


def build(params: dict, seed: int) -> SimCLR:
    """The model pretrain starts from; extract's random-init baseline is the same draw."""
    torch.manual_seed(seed)
    m = params["model"]
    return SimCLR(m["arch"], m.get("proj_dim", 128), m["norm"])
